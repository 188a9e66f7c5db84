"""Command line: ``python -m data_processing convert ...`` and ``python -m data_processing decoders``."""

from __future__ import annotations

import sys

import click

from data_processing.convert import ConversionError, ConvertConfig, convert_folder, os_reason
from data_processing.decoders import format_decoder_report, format_decoder_summary
from data_processing.phantoms import phantoms_command
from data_processing.render import RenderOptions
from stylegan2_ada import devices

__all__ = ["main", "render_options"]


def render_options(
    resolution: int,
    crop: str,
    bits: int,
    window: str,
    allow_colour: bool = False,
    allow_multiframe: bool = False,
    allow_for_processing: bool = False,
) -> RenderOptions:
    """Build :class:`RenderOptions` from command-line values, turning a bad value into a usage error."""
    try:
        return RenderOptions(
            resolution=resolution,
            crop=crop,
            bits=bits,
            window=window,
            allow_colour=allow_colour,  # type: ignore[arg-type]
            allow_multiframe=allow_multiframe,
            allow_for_processing=allow_for_processing,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


class CannotConvert(click.ClickException):
    """The conversion cannot start or cannot write its output: one ``Error: ...`` line, exit status 2."""

    exit_code = 2


@click.group()
def main() -> None:
    """DICOM radiographs -> SpineGAN training data (see docs/dicom.md)."""


@main.command()
@click.option(
    "--dicom",
    "dicom_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of DICOM files (searched recursively; only read).",
)
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(exists=True, dir_okay=False),
    help="Labels CSV: VinDr-SpineXR annotations (image_id, lesion_type) or image_id,label.",
)
@click.option(
    "--outdir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output dataset folder (PNGs, dataset.json, conversion_report.csv).",
)
@click.option("--resolution", type=int, default=256, show_default=True, help="Output size (a power of two).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes [default: CPUs available]; 0 = no pool.",
)
@click.option(
    "--bits",
    type=click.Choice(["8", "16"]),
    default="8",
    show_default=True,
    help="PNG bit depth (train.py reads 8-bit best).",
)
@click.option(
    "--crop",
    type=click.Choice(["pad", "center"]),
    default="pad",
    show_default=True,
    help="Pad to a square (keeps the whole film) or centre-crop.",
)
@click.option(
    "--window",
    type=click.Choice(["auto", "percentile"]),
    default="auto",
    show_default=True,
    help="auto: the file's VOI LUT/window, percentile fallback; percentile: always the 0.5-99.5 % window.",
)
@click.option(
    "--multiclass", is_flag=True, help="VinDr labels: one class per lesion type (instead of normal/abnormal)."
)
@click.option(
    "--overwrite", is_flag=True, help="Re-render every image, even those converted by an earlier run."
)
@click.option("--allow-colour", is_flag=True, help="Convert colour images to grey instead of failing them.")
@click.option(
    "--allow-multiframe",
    is_flag=True,
    help="Use the first frame of multi-frame images instead of failing them.",
)
@click.option(
    "--allow-for-processing",
    is_flag=True,
    help="Render FOR PROCESSING (raw detector) images instead of failing them.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with status 1 on label problems too (unlabelled images, labels without images, duplicates).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert(
    dicom_dir: str,
    labels_csv: str | None,
    outdir: str,
    resolution: int,
    workers: int | None,
    bits: str,
    crop: str,
    window: str,
    multiclass: bool,
    overwrite: bool,
    allow_colour: bool,
    allow_multiframe: bool,
    allow_for_processing: bool,
    strict: bool,
    no_progress: bool,
) -> None:
    """Convert DICOM files into PNGs + dataset.json + conversion_report.csv.

    Exit status: 0 when every input was converted (or deliberately skipped), 1 when any file failed
    (see conversion_report.csv), 2 for usage errors and when the conversion cannot start or cannot
    write its output (one ``Error: ...`` line).
    """
    options = render_options(
        resolution, crop, int(bits), window, allow_colour, allow_multiframe, allow_for_processing
    )
    click.echo(format_decoder_summary(), err=True)
    config = ConvertConfig(
        dicom_dir=dicom_dir,
        outdir=outdir,
        labels_csv=labels_csv,
        render=options,
        multiclass=multiclass,
        workers=devices.default_workers() if workers is None else workers,
        overwrite=overwrite,
        strict=strict,
        progress=not no_progress,
    )
    try:
        summary = convert_folder(config, log=lambda m: click.echo(m, err=True))
    except ConversionError as exc:
        raise CannotConvert(str(exc)) from None
    except OSError as exc:  # anything the checks did not foresee: still one line, not a traceback
        raise CannotConvert(f"{exc.filename or outdir}: {os_reason(exc)}") from None
    click.echo(summary.format())
    sys.exit(summary.exit_code)


@main.command()
def decoders() -> None:
    """List the DICOM transfer syntaxes this installation can decode (and what to install for the others)."""
    click.echo(format_decoder_report())


main.add_command(phantoms_command)
