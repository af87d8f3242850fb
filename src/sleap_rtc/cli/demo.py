"""``sleap-rtc demo`` and ``sleap-rtc make-demo-data``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from sleap_rtc import locations


def _need_worker_extra(server: bool = False) -> None:
    try:
        import sleap_io  # noqa: F401
        import zmq  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"this command needs the worker extra ({exc.name} is missing); "
            "install it with: pip install 'sleap-rtc[worker]'"
        ) from None
    if server:
        try:
            import fastapi  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError as exc:
            raise click.ClickException(
                f"the demo runs a server too and needs the server extra ({exc.name} is "
                "missing): pip install 'sleap-rtc[worker,server]'"
            ) from None


@click.command("make-demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Random seed of the synthetic animal.")
def make_demo_data(out_dir: Path, seed: int) -> None:
    """Write a small labeled dataset and three training configs to OUT_DIR.

    \b
    Writes OUT_DIR/demo.pkg.slp (a moving 3-node animal, with held-out
    suggested frames), OUT_DIR/ground_truth.json and
    OUT_DIR/configs/{single_instance,centroid,centered_instance}.yaml.

    \b
    Example:
      sleap-rtc make-demo-data /vast/project/demo
    """
    _need_worker_extra()
    from sleap_rtc.demo.data import make_demo_data as make

    data = make(out_dir, seed=seed)
    click.echo(f"labels:       {data.labels_path}")
    click.echo(f"ground truth: {data.ground_truth_path}")
    for name, path in data.configs.items():
        click.echo(f"config:       {path}  ({name})")


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's data, models and predictions "
    "[default: a new folder under the sleap-rtc cache].",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Device for sleap-nn: auto, cpu, cuda, cuda:N or mps.",
)
@click.option("--logs", is_flag=True, help="Also print sleap-nn's log lines.")
@click.option(
    "--transport",
    type=click.Choice(["auto", "webrtc", "relay"]),
    default="auto",
    show_default=True,
    help="How the demo client reaches the demo worker.",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the server and worker running afterwards, to look around the dashboard; "
    "Ctrl-C stops them.",
)
def demo(workdir: Path | None, device: str, logs: bool, transport: str, keep: bool) -> None:
    """Generate data, train a model, track with it and score it, on this machine.

    Starts a server, a worker and a client on loopback (nothing to set up) and
    sends the jobs the way a remote user does: login, room, worker key, a peer
    channel, validation on the worker, live progress. The server's web dashboard
    shows the jobs while they run: its address and login are printed first. The
    last line reads `demo ok: train=<s>s track=<s>s mean_error_px=<x>`.

    \b
    Example:
      sleap-rtc demo --workdir /tmp/sleap-rtc-demo
      sleap-rtc demo --keep        # then open the dashboard; Ctrl-C to stop
    """
    _need_worker_extra(server=True)
    from sleap_rtc.cli.render import JobProgressView, make_console, plain, safe
    from sleap_rtc.demo.run import Dashboard, DemoFailed, DemoResult, run_demo

    console = make_console()
    if workdir is None:
        workdir = locations.cache_dir() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    console.print(f"demo folder: {safe(workdir)}", soft_wrap=True, highlight=False)
    views: dict[str, JobProgressView] = {}

    from sleap_rtc.protocol import jobs as p

    def on_event(stage: str, message: object) -> None:
        if stage not in views:
            for view in views.values():
                view.__exit__(None, None, None)
            views[stage] = JobProgressView(console, show_logs=logs).__enter__()
        view = views[stage]
        if isinstance(message, p.JobProgress):
            for line in message.lines:
                view.log_line(line)
            if message.progress is not None:
                view.show_progress(message.progress)
        elif isinstance(message, p.JobComplete):
            view.complete(message.stopped_early)

    def ready(dashboard: Dashboard) -> None:
        console.print(
            f"dashboard: {dashboard.url}  (log in as {dashboard.user}, "
            f"password {dashboard.password})",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )

    def close_views() -> None:
        for view in views.values():
            view.__exit__(None, None, None)
        views.clear()

    def report(result: DemoResult) -> bool:
        close_views()
        console.print(
            f"jobs ran on worker {safe(result.worker_id)} over {result.transport}",
            highlight=False,
        )
        console.print(f"model:       {safe(result.model_dir)}", soft_wrap=True, highlight=False)
        console.print(f"predictions: {safe(result.predictions)}", soft_wrap=True, highlight=False)
        console.print(
            f"mean error on {result.n_frames_scored} held-out frames: {result.mean_error_px:.2f} px"
        )
        ok = result.mean_error_px < 5.0
        click.echo(
            f"demo {'ok' if ok else 'FAILED'}: train={result.train_s:.1f}s "
            f"track={result.track_s:.1f}s mean_error_px={result.mean_error_px:.2f}"
        )
        return ok

    async def stay(result: DemoResult) -> None:
        report(result)
        click.echo("the server and worker keep running for the dashboard; Ctrl-C stops them")
        await asyncio.Event().wait()

    try:
        result = asyncio.run(
            run_demo(
                workdir,
                on_event=on_event,
                device=device,
                transport=transport,
                on_ready=ready,
                keep=stay if keep else None,
            )
        )
    except DemoFailed as exc:
        close_views()
        console.print(f"[red]demo failed:[/red] {safe(exc)}")
        for line in exc.log_tail:
            console.print(f"  {plain(line)}", highlight=False, markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        close_views()
        click.echo("stopped")
        return
    finally:
        close_views()
    if not report(result):
        sys.exit(1)
