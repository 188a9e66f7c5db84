#!/usr/bin/env python
"""Generate images with a trained StyleGAN2-ADA generator (upstream-compatible command line).

Examples:

    python generate.py --network run/network-snapshot-000200.safetensors --seeds 0-3,10 --outdir out --class 1
    python generate.py --network stylegan2-ada-snapshot.pkl --seeds 0-99 --trunc 0.7 --outdir out

Reads our native checkpoints and stylegan2-ada-pytorch ``.pkl`` snapshots (safely: nothing stored in
the file is executed). Writes ``seed%04d.png`` per seed (8-bit ``L`` for 1-channel networks, ``RGB``
for 3-channel ones) and ``manifest.json``. See :mod:`stylegan2_ada.generation` for the details,
including how ``--noise-mode random`` is seeded.

Errors: a bad option value is a usage error (exit 2, click's usage text); a file-system failure (network
file unreadable, output folder not creatable or read-only) prints one ``Error: ...`` line and exits 1.
Never a traceback for either.
"""

from __future__ import annotations

import click

from stylegan2_ada.generation import (
    NOISE_MODES,
    GenerationError,
    check_truncation_psi,
    generate_images,
    parse_seeds,
)


def _seeds_option(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return parse_seeds(value)
    except GenerationError as exc:
        raise click.BadParameter(str(exc)) from None


def _trunc_option(ctx: click.Context, param: click.Parameter, value: float) -> float:
    try:
        return check_truncation_psi(value)
    except GenerationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--network",
    "network",
    required=True,
    metavar="PATH",
    help="Network file: our .safetensors checkpoint or an upstream stylegan2-ada-pytorch .pkl.",
)
@click.option(
    "--seeds",
    required=True,
    callback=_seeds_option,
    metavar="LIST",
    help="Seeds, e.g. '0-3,10' (ranges inclusive).",
)
@click.option("--outdir", required=True, metavar="DIR", help="Output folder (created if needed).")
@click.option(
    "--class",
    "class_idx",
    type=int,
    default=None,
    metavar="K",
    help="Class index, required for conditional networks.",
)
@click.option(
    "--trunc",
    "truncation_psi",
    type=float,
    default=1.0,
    show_default=True,
    callback=_trunc_option,
    metavar="PSI",
    help="Truncation psi (a finite number).",
)
@click.option(
    "--noise-mode",
    type=click.Choice(NOISE_MODES),
    default="const",
    show_default=True,
    help="Noise: fixed per layer, random (reproducible per seed), or none.",
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    metavar="N",
    help="Images per forward pass.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Device [default: cuda if available, else cpu].",
)
@click.option(
    "--compile",
    "compile_networks",
    is_flag=True,
    help="Compile the synthesis network with torch.compile (eager, with a message, where unavailable).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(
    network: str,
    seeds: list[int],
    outdir: str,
    class_idx: int | None,
    truncation_psi: float,
    noise_mode: str,
    batch_size: int,
    device: str | None,
    compile_networks: bool,
    quiet: bool,
) -> None:
    """Generate one PNG per seed, plus manifest.json, in OUTDIR."""
    try:
        result = generate_images(
            network,
            seeds,
            outdir,
            class_idx=class_idx,
            truncation_psi=truncation_psi,
            noise_mode=noise_mode,
            batch_size=batch_size,
            device=device,
            progress=not quiet,
            compile_networks=compile_networks,
        )
    except GenerationError as exc:
        if exc.param:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # any file-system failure generation.py did not already name
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None
    click.echo(
        f"Wrote {len(result.files)} images and {result.manifest_path.name} to {result.manifest_path.parent}"
    )


if __name__ == "__main__":
    main()
