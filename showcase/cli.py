"""``python demo.py --outdir runs/demo [--preset ci|full|gpu] [--device cpu|cuda] [--quiet]``.

Runs (or resumes) every stage of :mod:`showcase.stages` and prints where the time went. Expected
failures (a stage's command failing, unusable data, a folder of another demo) end with one
``Error: ...`` line and exit status 1; an interrupted run (Ctrl-C) says how to resume and exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from showcase.presets import PRESETS

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--outdir", default="runs/demo", metavar="DIR", help="The demo folder (a rerun resumes it).")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="full",
    help="ci: tiny, a few minutes; full: about 15 minutes on 2 CPU cores; gpu: larger, on CUDA.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    help="Device [the preset's; else cuda if available, else cpu].",
)
@click.option("--quiet", is_flag=True, help="No progress bars (stage lines and commands are still shown).")
def main(outdir: str, preset: str, device: str | None, quiet: bool) -> None:
    """The whole pipeline on phantom data the project makes itself, DICOM to report.html:
    phantom cohort, conversion, split by patient, classifier, standard and SpineGAN conditional GANs,
    metrics over training, samples and a class-morph clip, the synthetic-learning experiment."""
    from showcase.stages import Demo, DemoError, run_demo
    from stylegan2_ada import devices

    chosen = PRESETS[preset]
    try:
        resolved = str(devices.resolve_device(device or chosen.device))
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (preset {preset})", param_hint="'--device'") from None
    demo = Demo(Path(outdir), chosen, resolved, progress=not quiet, say=click.echo)
    click.echo(f"SpineGAN demo, preset {preset}, device {resolved}, folder {Path(outdir).resolve()}")
    try:
        markers = run_demo(demo)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. Finished stages are kept: run the same command to resume ({outdir}).", err=True
        )
        sys.exit(130)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(m["seconds"] for m in markers)
    cpu = sum(m["cpu_seconds"] for m in markers)
    click.echo(f"\n{'stage':44s} {'seconds':>8s} {'share':>6s} {'CPU s':>8s}")
    for m in markers:
        note = "  (earlier run)" if m["skipped"] else ""
        share = m["seconds"] / total if total else 0.0
        click.echo(f"{m['title'][:44]:44s} {m['seconds']:8.1f} {share:6.0%} {m['cpu_seconds']:8.1f}{note}")
    click.echo(f"{'total':44s} {total:8.1f} {'':6s} {cpu:8.1f}")
    click.echo(f"\nReport: {demo.outdir / 'report.html'}")
