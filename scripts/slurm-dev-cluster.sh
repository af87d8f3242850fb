#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, with accounting (sacct), for the pipeline
# tests and for trying pipelines on a laptop. Debian/Ubuntu, as root, no systemd needed.
#
#   scripts/slurm-dev-cluster.sh start     # installs the packages if missing, then starts
#   scripts/slurm-dev-cluster.sh status
#   scripts/slurm-dev-cluster.sh stop
#
# Everything it runs and writes lives under $SLEAP_RTC_SLURM_DIR (default
# /tmp/sleap-rtc-slurm): state, spool, logs, the MariaDB data of slurmdbd, pid files.
# The configuration goes to /etc/slurm (where sbatch and friends look for it); a
# slurm.conf this script did not write is left alone, and start refuses to run.
# SLEAP_RTC_SLURM_CPUS declares more CPUs than the machine has (default: what
# `slurmd -C` reports), so more trivial jobs run at once.
set -euo pipefail

DIR=${SLEAP_RTC_SLURM_DIR:-/tmp/sleap-rtc-slurm}
CONF_DIR=/etc/slurm
MARK="# written by sleap-rtc scripts/slurm-dev-cluster.sh"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)  # stop order

say() { echo "slurm-dev-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts daemons)"
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    (( ${#missing[@]} )) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
}

pid_alive() { [[ -f $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || die "timed out after ${seconds} s waiting for $what (logs: $DIR/log)"
        sleep 0.2
    done
}

write_config() {
    if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -qF "$MARK" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
    fi
    mkdir -p "$CONF_DIR" "$DIR"/{run,log,spool/slurmd,state,mysql}
    local hardware cpus
    hardware=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
    cpus=${SLEAP_RTC_SLURM_CPUS:-}
    if [[ -n $cpus ]]; then
        # More CPUs than the machine has: declare them flat, and let slurmd accept it.
        hardware=$(echo "$hardware" | sed -e "s/CPUs=[0-9]*/CPUs=$cpus/" \
            -e 's/Boards=[0-9]* //' -e 's/SocketsPerBoard=[0-9]*/SocketsPerBoard=1/' \
            -e "s/CoresPerSocket=[0-9]*/CoresPerSocket=$cpus/" -e 's/ThreadsPerCore=[0-9]*/ThreadsPerCore=1/')
    fi
    cat > "$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=dev
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
MinJobAge=3600
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
StoragePort=3306
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
    [[ -f $CONF_DIR/cgroup.conf ]] || echo "$MARK" > "$CONF_DIR/cgroup.conf"
}

start_munge() {
    pid_alive munged && return 0
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown root:root /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    munged --force --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --socket=/run/munge/munge.socket.2
    wait_for 10 munge munge -n
}

start_mariadb() {
    pid_alive mariadbd && return 0
    mkdir -p /run/mysqld
    if [[ ! -d $DIR/mysql/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=normal \
            > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $DIR/log/mariadb-install.log"
    fi
    # Its own session, like the daemons that fork: MariaDB must not die with the
    # process group of whatever shell started the cluster.
    setsid mariadbd --user=root --datadir="$DIR/mysql" --socket=/run/mysqld/mysqld.sock \
        --bind-address=127.0.0.1 --port=3306 --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=1G \
        --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --socket=/run/mysqld/mysqld.sock -u root -e 'select 1'
}

start_slurm() {
    if ! pid_alive slurmdbd; then
        slurmdbd
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -i -Q add cluster dev >/dev/null 2>&1 || true
    if ! pid_alive slurmctld; then
        slurmctld
        wait_for 30 slurmctld scontrol ping
    fi
    if ! pid_alive slurmd; then
        slurmd -N localhost
    fi
    wait_for 30 "the node to be idle" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
}

start() {
    need_root
    install_packages
    write_config
    start_munge
    start_mariadb
    start_slurm
    say "running: $(sinfo -h -o '%P %D node(s) %T, CPUs %c' | head -1); sacct on; logs in $DIR/log"
}

stop() {
    local daemon pid
    for daemon in "${DAEMONS[@]}"; do
        [[ -f $DIR/run/$daemon.pid ]] || continue
        pid=$(cat "$DIR/run/$daemon.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$DIR/run/$daemon.pid"
    done
    # Jobs' processes are children of slurmstepd, which outlives slurmd.
    pkill -f '^slurmstepd' 2>/dev/null || true
    say "stopped"
}

status() {
    local daemon state
    for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid_alive "$daemon"; then state="running (pid $(cat "$DIR/run/$daemon.pid"))"; else state="stopped"; fi
        printf '%-10s %s\n' "$daemon" "$state"
    done
    pid_alive slurmctld && sinfo
    return 0
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
