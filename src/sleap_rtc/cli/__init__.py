"""The ``sleap-rtc`` command line. Presentation only: every rule lives below."""

from __future__ import annotations

import click

from sleap_rtc import __version__
from sleap_rtc.cli.demo import demo, make_demo_data
from sleap_rtc.cli.doctor import doctor
from sleap_rtc.cli.files import browse, fs
from sleap_rtc.cli.jobs import jobs
from sleap_rtc.cli.keys import keys
from sleap_rtc.cli.local import local
from sleap_rtc.cli.notify import notify
from sleap_rtc.cli.pipeline import pipeline
from sleap_rtc.cli.rooms import login, logout, rooms, whoami
from sleap_rtc.cli.server import server
from sleap_rtc.cli.submit import track, train
from sleap_rtc.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sleap-rtc")
def cli() -> None:
    """Train and run SLEAP pose models on GPUs you don't sit next to.

    \b
    Try it on this machine, no server needed:
      sleap-rtc demo
    """


cli.add_command(demo)
cli.add_command(make_demo_data)
cli.add_command(local)
cli.add_command(server)
for command in (
    login,
    logout,
    whoami,
    rooms,
    keys,
    worker,
    train,
    track,
    jobs,
    notify,
    fs,
    browse,
    pipeline,
    doctor,
):
    cli.add_command(command)


def main() -> None:
    cli()
