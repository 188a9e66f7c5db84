#!/usr/bin/env python
"""Latent interpolation videos of a trained generator (StyleGAN3's ``gen_video.py`` command line).

Examples:

    # a looping walk through 4 keyframes of a 2x2 grid of class-1 images
    python gen_video.py --network run/network-snapshot-000200.safetensors --seeds 0-15 --grid 2x2 \\
        --class 1 --output walk.mp4

    # reuse 3 seeds for 6 keyframes, 60 frames per keyframe, truncation 0.7
    python gen_video.py --network net.safetensors --seeds 0-2 --num-keyframes 6 --w-frames 60 \\
        --trunc 0.7 --class 0 --output walk.mp4

    # normal -> abnormal -> normal for the same latents (a seamless loop)
    python gen_video.py --network net.safetensors --seeds 0-3 --grid 4x1 --morph 0,1,0 --output morph.mp4

Reads our native checkpoints and stylegan2-ada-pytorch ``.pkl`` snapshots (safely). 1-channel
networks are shown in grey (repeated to RGB). Writes H.264 in MP4 (``.mp4``) or VP9 in WebM (``.webm``)
with imageio-ffmpeg's bundled ffmpeg, atomically. See :mod:`stylegan2_ada.video` for how keyframes, the spline and the morph work.
"""

from __future__ import annotations

import click

from stylegan2_ada.generation import GenerationError, parse_seeds
from stylegan2_ada.video import VIDEO_NOISE_MODES, make_video, parse_classes, parse_grid


def _parsed(parse):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            return parse(value)
        except GenerationError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--network", required=True, metavar="PATH", help="Network file: our .safetensors or an upstream .pkl."
)
@click.option(
    "--seeds", required=True, callback=_parsed(parse_seeds), metavar="LIST", help="Seeds, e.g. '0-15'."
)
@click.option(
    "--grid",
    default="1x1",
    show_default=True,
    callback=_parsed(parse_grid),
    metavar="WxH",
    help="Grid of cells, width x height.",
)
@click.option(
    "--num-keyframes",
    type=int,
    default=None,
    metavar="K",
    help="Keyframes; seeds are reused in order to fill them [default: len(seeds) / cells].",
)
@click.option(
    "--w-frames",
    type=click.IntRange(min=1),
    default=120,
    show_default=True,
    metavar="N",
    help="Frames per keyframe.",
)
@click.option(
    "--trunc",
    "truncation_psi",
    type=float,
    default=1.0,
    show_default=True,
    metavar="PSI",
    help="Truncation psi.",
)
@click.option(
    "--class", "class_idx", type=int, default=None, metavar="K", help="Class, for conditional networks."
)
@click.option(
    "--morph",
    default=None,
    callback=_parsed(parse_classes),
    metavar="LIST",
    help="Morph between classes for fixed latents (one seed per cell), e.g. '0,1' or '0,1,0' (a loop).",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=60,
    show_default=True,
    metavar="FPS",
    help="Frame rate.",
)
@click.option(
    "--noise-mode",
    type=click.Choice(VIDEO_NOISE_MODES),
    default="const",
    show_default=True,
    help="Noise inputs.",
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(min=1),
    default=16,
    metavar="N",
    show_default=True,
    help="Images per forward pass.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Device [default: cuda if available, else cpu].",
)
@click.option(
    "--output",
    required=True,
    metavar="FILE",
    help="Output video: .mp4 (H.264) or .webm (VP9, plays in any browser).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(
    network: str,
    seeds: list[int],
    grid: tuple[int, int],
    num_keyframes: int | None,
    w_frames: int,
    truncation_psi: float,
    class_idx: int | None,
    morph: list[int] | None,
    fps: float,
    noise_mode: str,
    batch_size: int,
    device: str | None,
    output: str,
    quiet: bool,
) -> None:
    """Write a looping latent walk (or a class morph) of a generator to an MP4 or WebM video."""
    try:
        result = make_video(
            network,
            output,
            seeds,
            grid=grid,
            num_keyframes=num_keyframes,
            w_frames=w_frames,
            truncation_psi=truncation_psi,
            class_idx=class_idx,
            morph=morph,
            fps=fps,
            noise_mode=noise_mode,
            batch_size=batch_size,
            device=device,
            progress=not quiet,
        )
    except GenerationError as exc:
        if exc.param:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        raise click.ClickException(str(exc)) from None
    width, height = result.size
    click.echo(f"Wrote {result.frames} frames ({width}x{height}, {result.fps:g} fps) to {result.path}")


if __name__ == "__main__":
    main()
