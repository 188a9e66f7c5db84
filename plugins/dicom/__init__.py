"""``dicom`` plugin: train straight from a folder of DICOM radiographs.

``python train.py --plugin dicom --data DICOM_DIR --labels CSV --resolution 256 --cond 1 ...``

Through the ``dataset_readers`` hook, a ``--data`` folder that contains DICOM files is converted once
(with :mod:`data_processing`, the same rendering as ``python -m data_processing convert``; 8-bit PNGs)
into a cache under the run's cache folder, keyed by the input files, the labels and the settings
(see :mod:`plugins.dicom.cache`); later runs with unchanged inputs reuse it. The cached folder then
opens like any image folder (``stylegan2_ada.dataset.open_image_dataset``). Files that fail are
listed in the cached ``conversion_report.csv``; training goes on with the rest.

Options: ``--labels CSV`` (VinDr-SpineXR annotations or image_id,label; required with ``--cond 1``),
``--resolution`` (power of two, default 256), ``--crop pad|center``, ``--window auto|percentile``,
``--multiclass`` (one class per lesion type), ``--dicom-workers N`` (conversion processes).
A ``--data`` path that is not a DICOM folder is left to the core (the plugin returns ``None``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click

from data_processing.convert import ConversionError, os_reason
from data_processing.render import RenderOptions
from plugins.dicom.cache import NoImagesConvertedError, ensure_converted, looks_like_dicom_folder
from stylegan2_ada import devices
from stylegan2_ada.hookspecs import hookimpl

__all__ = ["plugin_options", "validate_options", "dataset_readers", "render_options_from"]


@hookimpl
def plugin_options() -> list[click.Option]:
    """The plugin's command-line options."""
    return [
        click.Option(
            ["--labels"],
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="dicom: labels CSV (VinDr-SpineXR image_id,lesion_type or image_id,label).",
        ),
        click.Option(
            ["--resolution"],
            type=int,
            default=256,
            show_default=True,
            help="dicom: training resolution the radiographs are rendered at (power of two).",
        ),
        click.Option(
            ["--crop"],
            type=click.Choice(["pad", "center"]),
            default="pad",
            show_default=True,
            help="dicom: pad films to a square (default) or centre-crop them.",
        ),
        click.Option(
            ["--window"],
            type=click.Choice(["auto", "percentile"]),
            default="auto",
            show_default=True,
            help="dicom: the files' VOI LUT/window (percentile fallback) or always the percentile window.",
        ),
        click.Option(
            ["--multiclass"],
            is_flag=True,
            default=False,
            help="dicom: one class per VinDr lesion type instead of normal/abnormal.",
        ),
        click.Option(
            ["--dicom-workers"],
            type=int,
            default=None,
            help="dicom: processes for the one-off conversion [default: CPUs available].",
        ),
    ]


def render_options_from(options: Mapping[str, Any]) -> RenderOptions:
    """The (8-bit) rendering settings the options ask for; ``click.UsageError`` when invalid."""
    try:
        return RenderOptions(
            resolution=int(options.get("resolution") or 256),
            crop=options.get("crop") or "pad",
            bits=8,
            window=options.get("window") or "auto",
        )
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"dicom plugin: {exc}") from None


@hookimpl
def validate_options(options: Mapping[str, Any]) -> None:
    """Check the dicom options against ``--data`` and ``--cond``."""
    render_options_from(options)
    workers = options.get("dicom_workers")
    if workers is not None and int(workers) < 0:
        raise click.UsageError(f"--dicom-workers must be >= 0, not {workers}")
    data, labels = options.get("data"), options.get("labels")
    is_dicom = bool(data) and looks_like_dicom_folder(str(data))
    if labels and data and not is_dicom:
        raise click.UsageError(f"--labels is for DICOM folders, but --data {data} holds no DICOM files")
    if is_dicom and options.get("cond") and not labels:
        raise click.UsageError(
            "--cond 1 with a DICOM folder needs --labels CSV (VinDr-SpineXR annotations or image_id,label)"
        )
    if options.get("multiclass") and not labels:
        raise click.UsageError("--multiclass needs --labels CSV")


@hookimpl
def dataset_readers(path: str, options: Mapping[str, Any], cache_dir: str) -> Any:
    """Convert a DICOM ``path`` once into ``cache_dir`` and open it; ``None`` for anything else."""
    if not looks_like_dicom_folder(path):
        return None
    from stylegan2_ada.dataset import open_image_dataset

    labels = options.get("labels")
    workers = options.get("dicom_workers")
    try:
        folder, summary = ensure_converted(
            os.path.abspath(path),
            os.path.abspath(labels) if labels else None,
            render_options_from(options),
            bool(options.get("multiclass")),
            cache_dir,
            workers=devices.default_workers() if workers is None else int(workers),
            log=lambda message: click.echo(message, err=True),
        )
    except (ConversionError, NoImagesConvertedError) as exc:
        raise click.UsageError(f"dicom plugin: {exc}") from None
    except OSError as exc:  # the cache folder cannot be created or written
        raise click.UsageError(
            f"dicom plugin: cannot convert {path} into {cache_dir}: {os_reason(exc)}"
        ) from None
    if summary is not None:
        click.echo(summary.format(), err=True)
    return open_image_dataset(
        folder,
        use_labels=bool(options.get("cond", False)),
        xflip=bool(options.get("mirror", False)),
        max_size=options.get("subset"),
        random_seed=int(options.get("seed") or 0),
        **({"max_classes": int(options["max_classes"])} if options.get("max_classes") else {}),
    )
