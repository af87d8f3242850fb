"""``sleap-rtc worker``: offer this machine's GPUs to a room."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from sleap_rtc.cli.exitcodes import EXIT_REFUSED
from sleap_rtc.cli.local import _mount_option, worker_options
from sleap_rtc.cli.render import plain
from sleap_rtc.client.config import ConfigError, resolve_room, resolve_server
from sleap_rtc.engine import BACKENDS, DEFAULT_BACKEND
from sleap_rtc.worker import WorkerConfig, WorkerConfigError, load_worker_config

KEY_ENV = "SLEAP_RTC_WORKER_KEY"


def _read_key(key: str | None, key_file: Path | None) -> str:
    if key:
        return key.strip()
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env
    if key_file is not None:
        try:
            text = key_file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.ClickException(f"can't read key_file {key_file}: {exc.strerror}") from None
        if text:
            return text
        raise click.ClickException(f"key_file {key_file} is empty")
    raise click.UsageError(
        f"no worker key: set {KEY_ENV}, or pass --key-file (or --key). "
        "Create one with `sleap-rtc keys create --room ROOM`."
    )


@click.command()
@click.option("--room", "-r", metavar="ROOM", help="Room to join (must match the key's room).")
@click.option("--name", "-n", help="Name shown in `rooms workers` [default: host name].")
@worker_options
@click.option(
    "--max-concurrent-jobs", type=click.IntRange(1, 64), help="Jobs run at once [default: 1]."
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    help="Where jobs run: "
    + "; ".join(f"{name}: {plugin.summary}" for name, plugin in BACKENDS.items())
    + f" [default: {DEFAULT_BACKEND}].",
)
@click.option(
    "--sandbox",
    type=click.Choice(["landlock", "off"]),
    help="Confine jobs to the mounts and their own folder (landlock), or not (off: only "
    "where Landlock is missing) [default: landlock].",
)
@click.option(
    "--warm-engine/--no-warm-engine",
    default=None,
    help="Start job steps from a process that has already imported sleap-nn, so they "
    "begin at once (--no-warm-engine: every step starts cold) [default: on].",
)
@click.option(
    "--direct-listen",
    metavar="HOST:PORT|off",
    help="Where clients connect for direct TLS file transfers (port 0: any free one; "
    "off: listen for none, so files go through the server's relay lane, else over the "
    "peer channel) [default: 0.0.0.0:0].",
)
@click.option("--server", metavar="URL", help="Server URL [default: SLEAP_RTC_SERVER, config].")
@click.option(
    "--key",
    metavar="SECRET",
    help=f"Worker key. Prefer {KEY_ENV} or --key-file: a flag shows in `ps`.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the worker key.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def worker(
    room: str | None,
    name: str | None,
    worker_config: Path | None,
    mounts: tuple[str, ...],
    models_dir: Path | None,
    device: str | None,
    max_concurrent_jobs: int | None,
    backend: str | None,
    sandbox: str | None,
    warm_engine: bool | None,
    direct_listen: str | None,
    server: str | None,
    key: str | None,
    key_file: Path | None,
    log_level: str,
) -> None:
    """Offer this machine to a room: register, stay online, run the room's jobs.

    The worker touches only files inside its mounts (plus its models folder). It
    keeps an id in its state folder, so it is the same worker after a restart,
    and it reconnects by itself when the server restarts or the network drops.

    \b
    Examples:
      export SLEAP_RTC_WORKER_KEY=srk_...            # from `sleap-rtc keys create`
      sleap-rtc worker --room my-room --name lab-gpu-1 --mount /vast/project:project
      sleap-rtc worker --worker-config /etc/sleap-rtc/worker.toml
      sleap-rtc worker --backend slurm --worker-config ~/worker.toml   # on a login node

    With --backend slurm each job is one sbatch job. Put its resources and setup
    lines in a [slurm] table of worker.toml (partition, account, qos, time, mem,
    cpus, gpus, gres, constraint, extra, setup, spool_dir). The spool folder
    (default: the worker's state folder) and the mounts must be on a filesystem
    the compute nodes share.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # ICE and SCTP chatter is not what an operator wants to read.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = load_worker_config(
            worker_config,
            name=name,
            mounts=_mount_option(mounts),
            models_dir=models_dir,
            device=device,
            max_concurrent_jobs=max_concurrent_jobs,
            backend=backend,
            sandbox=sandbox,
            warm_engine=warm_engine,
            **_direct_option(direct_listen),
            server=server,
            room=room,
            key_file=key_file,
        )
        from sleap_rtc.client.credentials import CredentialStore

        url = resolve_server(config.server, fallback=CredentialStore().default_server())
        config_room = resolve_room(config.room)
    except (WorkerConfigError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    if url is None:
        raise click.UsageError(
            "no server: pass --server URL, set SLEAP_RTC_SERVER, or put server = ... in worker.toml"
        )
    from sleap_rtc.engine import protect_worker

    protect_worker()
    secret = _read_key(key, config.key_file)
    try:
        code = asyncio.run(_serve(config, url, secret, config_room))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _direct_option(value: str | None) -> dict[str, object]:
    if value is None:
        return {}
    if value.strip().lower() == "off":
        return {"direct_transfers": False}
    return {"direct_transfers": True, "direct_listen": value.strip()}


async def _serve(config: WorkerConfig, url: str, secret: str, room: str | None) -> int:
    from sleap_rtc.engine import BackendError
    from sleap_rtc.jobs.devices import device_problem
    from sleap_rtc.worker import (
        JobRunner,
        StoreLocked,
        WorkerRefused,
        advertised,
        load_worker_id,
    )

    try:
        caps, refresh = await asyncio.to_thread(advertised, config)
        # The GPUs announced are the ones jobs get, except on a scheduler's login node.
        count = (
            len(caps.gpus) if config.gpus is not None or config.backend_plugin.local_gpus else None
        )
        wrong = device_problem(config.device, count)
        if wrong is not None:
            raise WorkerConfigError(wrong)
        runner = JobRunner(config, config.build_backend(), gpu_count=lambda: count)
    except (WorkerConfigError, StoreLocked, BackendError) as exc:
        raise click.ClickException(str(exc)) from None
    worker_id = load_worker_id(config.resolved_state_dir())

    from sleap_rtc.transport.webrtc import host_addresses_from_env, pin_host_addresses
    from sleap_rtc.worker import WorkerAgent

    pin_host_addresses(config.ice_host_addresses or host_addresses_from_env())
    agent = WorkerAgent(
        runner, url, secret, worker_id, caps, expected_room=room, refresh_gpus=refresh
    )
    gpus = ", ".join(f"{g.name} ({g.memory_total_mb:,} MB)" for g in caps.gpus) or "CPU only"
    describe = config.backend_plugin.describe
    if describe is not None:
        gpus = f"{describe(config.backend_settings())} ({gpus})"
    click.echo(
        f"worker {caps.name} ({worker_id}) starting: {gpus}; mounts: {', '.join(caps.mounts)}; "
        f"server {url}",
        err=True,
    )
    click.echo(runner.sandbox_note, err=True)
    if getattr(runner.backend, "warm", None) is not None:
        click.echo("warm engine on: steps start from a preloaded sleap-nn", err=True)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    announce = asyncio.create_task(_announce(agent.link, caps.name, worker_id))
    try:
        await runner.start()
        lanes = await agent.start_lanes()
        if lanes is not None:
            click.echo(f"direct transfers on: {', '.join(lanes.addresses)}", err=True)
        await agent.run()
    except WorkerRefused as exc:
        click.echo(f"error: {plain(exc)}", err=True)  # the server's reason
        return EXIT_REFUSED
    except asyncio.CancelledError:
        click.echo("worker stopping", err=True)
        return 0
    finally:
        announce.cancel()
        loop.remove_signal_handler(signal.SIGTERM)
        await agent.close()
        await runner.close()
    return 0


async def _announce(link: Any, name: str, worker_id: str) -> None:
    """Print a line each time the worker (re)registers; tests and operators wait on it."""
    seen = 0
    while True:
        await link.registered.wait()
        if link.registrations != seen:
            seen = link.registrations
            click.echo(f"worker {plain(name)} ({worker_id}) online in room {plain(link.room)}")
            sys.stdout.flush()
        await asyncio.sleep(0.2)
