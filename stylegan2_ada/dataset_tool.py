"""Pack a folder (or zip) of PNG/JPEG images into a training zip.

    python -m stylegan2_ada.dataset_tool --source DIR --dest OUT.zip [--resolution 256]
        [--transform none|center-crop|pad] [--channels 1|3] [--max-images N] [--overwrite]

Input: everything :mod:`stylegan2_ada.dataset` reads (folder searched recursively, or a zip; 8/16-bit
grayscale or RGB PNG, 8-bit grayscale or RGB JPEG) and its ``dataset.json`` in either label format
(upstream ``{"labels": [[path, label], ...]}`` or the flat ``{path: label}``), with ``class_names``.

Output (upstream's layout): an uncompressed (``ZIP_STORED``) archive with images at
``00000/img00000000.png`` (8-digit index; its first five digits name the folder), written as PNG
mode ``L`` for 1 channel (grayscale stays grayscale) or ``RGB`` for 3, and a ``dataset.json`` with
``{"labels": [["00000/img00000000.png", 1], ...] or null, "class_names": [...] (when given),
"source_files": [["00000/img00000000.png", "<source relative path>"], ...]}`` (``--no-keep-names``
drops ``source_files``). Entries are in sorted source order; timestamps are fixed, so the same input
gives the same bytes.

Pixels: 16-bit images become 8-bit by ``round(x / 257)``. Without ``--resolution`` images are copied
exactly. With ``--resolution N`` each image is (optionally) made square by ``--transform`` --
``center-crop`` to the short side or ``pad`` (black, centred) to the long side -- and resized to N x N
with Pillow's LANCZOS filter in floating point (from the 16-bit values when the source has them),
then rounded. ``--channels`` converts (RGB -> L by ITU-R 601 luma 0.299/0.587/0.114, L -> RGB by
repetition); without it the most common channel count is kept and other images are skipped.

Files that cannot be used (corrupt, unsupported mode, a size or channel count different from the
most common one when no conversion was asked for) are skipped and listed in the report. The source
is only read. The archive is written to a temporary file beside ``--dest`` and moved into place when
complete; an existing ``--dest`` is replaced only with ``--overwrite``. A destination that cannot be
written (read-only folder, a file where its folder should be, disk full) is one ``Error: ...`` line,
exit status 1, and leaves nothing behind. ``--resolution`` is at most :data:`MAX_RESOLUTION`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import click
import numpy as np
from PIL import Image
from tqdm import tqdm

from .atomic import atomic_path
from .dataset import (
    LABELS_FILE,
    MIN_RESOLUTION,
    DatasetError,
    DatasetLabels,
    ImageHeader,
    decode_image,
    open_source,
    parse_dataset_json,
    read_image_header,
    scale_16bit_to_8bit,
)
from .limits import MAX_RESOLUTION

__all__ = ["MAX_RESOLUTION", "PackReport", "pack_dataset", "prepare_image", "archive_name", "main"]

TRANSFORMS = ("none", "center-crop", "pad")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
LANCZOS = Image.Resampling.LANCZOS
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def archive_name(idx: int) -> str:
    """Path of the ``idx``-th image inside the archive: ``00000/img00000000.png``."""
    digits = f"{idx:08d}"
    return f"{digits[:5]}/img{digits}.png"


@dataclass
class PackReport:
    """What :func:`pack_dataset` did. Paths are source-relative with ``/`` separators."""

    dest: str
    num_images: int = 0
    image_shape: tuple[int, int, int] | None = None  # (C, H, W)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source path, reason)
    ignored: list[str] = field(default_factory=list)  # non-image or hidden files in the source
    labels_format: str | None = None  # 'upstream', 'flat' or None (no dataset.json)
    labelled: int = 0
    unlabelled: list[str] = field(default_factory=list)  # packed images without a label
    unknown_label_paths: list[str] = field(default_factory=list)  # labels for files not in the source

    def summary(self, max_lines: int = 50) -> str:
        shape = "x".join(map(str, self.image_shape)) if self.image_shape else "?"
        lines = [f"Wrote {self.num_images} images ([C, H, W] = {shape}) to {self.dest}"]
        if self.labels_format is None:
            lines.append("Labels: none (no dataset.json in the source)")
        else:
            lines.append(
                f"Labels: {self.labelled} labelled (from a {self.labels_format}-format dataset.json)"
            )
        if self.unlabelled:
            lines.append(
                f"WARNING: {len(self.unlabelled)} packed images have no label: "
                + ", ".join(self.unlabelled[:10])
            )
        if self.unknown_label_paths:
            lines.append(
                f"Note: {len(self.unknown_label_paths)} labels name files not in the source (ignored): "
                + ", ".join(self.unknown_label_paths[:10])
            )
        if self.ignored:
            lines.append(f"Ignored {len(self.ignored)} non-image or hidden files")
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} images:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:max_lines]]
            if len(self.skipped) > max_lines:
                lines.append(f"  ... and {len(self.skipped) - max_lines} more")
        return "\n".join(lines)


def prepare_image(
    arr: np.ndarray, *, channels: int, resolution: int | None = None, transform: str = "none"
) -> np.ndarray:
    """Turn a decoded image ``[H, W, C]`` (uint8, or uint16 for 16-bit sources) into ``uint8 [H', W', channels]``.

    Without ``resolution`` the pixels are kept exactly (16-bit: ``round(x / 257)``). With it, the image
    is made square by ``transform`` and resized to ``resolution`` x ``resolution`` (LANCZOS, float).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    h, w, c = arr.shape
    scale = 257.0 if arr.dtype == np.uint16 else 1.0
    if transform == "none":
        if resolution is not None and h != w:
            raise DatasetError(f"image is {w}x{h} (W x H), not square; use transform 'center-crop' or 'pad'")
        side = None
    else:
        side = min(h, w) if transform == "center-crop" else max(h, w)
    resize = resolution is not None and (side or h) != resolution
    exact = not resize and not (c == 3 and channels == 1)
    if exact:
        img = arr if arr.dtype == np.uint8 else scale_16bit_to_8bit(arr)
    else:
        img = arr.astype(np.float32) / scale  # [H, W, C] in 0..255
    if side is not None:
        if transform == "center-crop":
            top, left = (h - side) // 2, (w - side) // 2
            img = img[top : top + side, left : left + side]
        else:
            canvas = np.zeros((side, side, c), dtype=img.dtype)
            top, left = (side - h) // 2, (side - w) // 2
            canvas[top : top + h, left : left + w] = img
            img = canvas
    if c == 3 and channels == 1:
        img = (img @ _LUMA)[:, :, np.newaxis]  # [H, W, 1]
    if resize:
        planes = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(img[:, :, k])).resize((resolution, resolution), LANCZOS)
            )
            for k in range(img.shape[2])
        ]
        img = np.stack(planes, axis=2)  # [N, N, C] float32
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if img.shape[2] == 1 and channels == 3:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _encode_png(img: np.ndarray, compress_level: int) -> bytes:
    pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)  # 'L' or 'RGB'
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _label_json(label: int | tuple[float, ...]) -> int | list[float]:
    return label if isinstance(label, int) else list(label)


def _is_pow2(n: int) -> bool:
    return n >= MIN_RESOLUTION and n & (n - 1) == 0


def _check_destination_folder(dest: str) -> None:
    """A clear error when a file stands where ``dest``'s folder (or one above it) should be."""
    folder = os.path.dirname(dest)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder) if os.path.dirname(folder) != folder else ""
    if folder and not os.path.isdir(folder):
        raise DatasetError(f"{dest}: cannot write there: {folder} is a file, not a folder")


def _os_reason(exc: OSError) -> str:
    """An OS error in words with the path it concerns: 'Permission denied ('/data/.x.zip.tmp')'."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({exc.filename!r})" if exc.filename else reason


def pack_dataset(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    resolution: int | None = None,
    transform: str = "none",
    channels: int | None = None,
    max_images: int | None = None,
    compress_level: int = 0,
    overwrite: bool = False,
    keep_names: bool = True,
    progress: bool = False,
) -> PackReport:
    """Pack ``source`` (folder or zip) into the training zip ``dest``; see the module docstring.

    Raises :class:`DatasetError` when nothing usable can be written (no images, all skipped, bad
    ``dataset.json``, no square power-of-two size without ``resolution``, existing ``dest``).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform != "none" and resolution is None:
        raise DatasetError(f"transform {transform!r} needs a resolution (--resolution N)")
    if resolution is not None and not (_is_pow2(resolution) and resolution <= MAX_RESOLUTION):
        raise DatasetError(
            f"resolution must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution}"
        )
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    dest = os.path.abspath(os.fspath(dest))
    if not dest.lower().endswith(".zip"):
        raise DatasetError(f"{dest}: destination must be a .zip file")
    _check_destination_folder(dest)
    src = open_source(source)
    if os.path.exists(dest):
        if os.path.samefile(dest, src.path):
            raise DatasetError(f"{dest}: destination is the source; choose another file")
        if not overwrite:
            raise DatasetError(f"{dest} already exists; pass --overwrite to replace it")
    report = PackReport(dest=dest)
    files, report.ignored = src.list_files()
    if not files:
        raise DatasetError(f"{src.path}: no PNG/JPEG images found")

    labels_info: DatasetLabels | None = None
    if src.exists(LABELS_FILE):
        labels_info = parse_dataset_json(src.read_bytes(LABELS_FILE), src.display(LABELS_FILE))
        report.labels_format = labels_info.format
        if labels_info.labels is not None:
            file_set = set(files)
            report.unknown_label_paths = sorted(k for k in labels_info.labels if k not in file_set)
    if max_images is not None:
        files = files[:max_images]

    # Pass 1: headers only, to choose the output shape and the files to skip.
    headers: dict[str, ImageHeader] = {}
    for rel in files:
        try:
            with src.open(rel) as fp:
                headers[rel] = read_image_header(fp, src.display(rel))
        except (DatasetError, OSError, zipfile.BadZipFile) as err:
            report.skipped.append((rel, str(err)))
    if not headers:
        listed = "\n  ".join(reason for _, reason in report.skipped[:10])
        raise DatasetError(f"{src.path}: none of the {len(files)} images can be read:\n  {listed}")
    out_channels = channels or Counter(h.channels for h in headers.values()).most_common(1)[0][0]
    ref_hw = None
    if resolution is None:
        ref_hw = Counter((h.height, h.width) for h in headers.values()).most_common(1)[0][0]
        if ref_hw[0] != ref_hw[1] or not _is_pow2(ref_hw[0]):
            raise DatasetError(
                f"{src.path}: most images are {ref_hw[1]}x{ref_hw[0]} (W x H), not a square power of two; "
                "pass --resolution N (with --transform center-crop or pad for non-square images)"
            )
    plan: list[str] = []
    for rel, h in headers.items():
        if channels is None and h.channels != out_channels:
            report.skipped.append(
                (
                    rel,
                    f"has {h.channels} channels but most images have {out_channels} (use --channels to convert)",
                )
            )
        elif ref_hw is not None and (h.height, h.width) != ref_hw:
            report.skipped.append(
                (
                    rel,
                    f"size {h.width}x{h.height} differs from most images' {ref_hw[1]}x{ref_hw[0]} (use --resolution)",
                )
            )
        elif resolution is not None and transform == "none" and h.width != h.height:
            report.skipped.append(
                (rel, f"not square ({h.width}x{h.height}); use --transform center-crop or pad")
            )
        else:
            plan.append(rel)

    # Pass 2: decode, convert, write to a temporary file, then move it into place.
    written: list[tuple[str, str]] = []  # (archive name, source relpath)
    try:
        with atomic_path(dest) as tmp_path, zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_STORED) as zf:
            for rel in tqdm(plan, desc="packing", unit="img", disable=not progress):
                where = src.display(rel)
                try:
                    data = src.read_bytes(rel)
                except (OSError, zipfile.BadZipFile) as err:  # a source file gone or unreadable meanwhile
                    reason = _os_reason(err) if isinstance(err, OSError) else str(err)
                    report.skipped.append((rel, f"{where}: cannot read the file: {reason}"))
                    continue
                try:
                    arr = decode_image(data, where, keep_16bit=True)  # [H, W, C]
                    img = prepare_image(
                        arr, channels=out_channels, resolution=resolution, transform=transform
                    )
                except DatasetError as err:
                    report.skipped.append((rel, str(err)))
                    continue
                name = archive_name(len(written))
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, _encode_png(img, compress_level))
                written.append((name, rel))
                report.image_shape = (img.shape[2], img.shape[0], img.shape[1])
            if not written:
                raise DatasetError(f"{src.path}: no usable images; nothing written")
            meta: dict[str, object] = {"labels": None}
            if labels_info is not None and labels_info.labels is not None:
                entries = []
                for name, rel in written:
                    if rel in labels_info.labels:
                        entries.append([name, _label_json(labels_info.labels[rel])])
                    else:
                        report.unlabelled.append(rel)
                report.labelled = len(entries)
                meta["labels"] = entries if entries else None
            if labels_info is not None and labels_info.class_names is not None:
                meta["class_names"] = labels_info.class_names
            if keep_names:
                meta["source_files"] = [[name, rel] for name, rel in written]
            info = zipfile.ZipInfo(LABELS_FILE, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, json.dumps(meta))
            report.num_images = len(written)
    except OSError as err:  # the destination side: read-only folder, a file in the way, disk full
        raise DatasetError(f"{dest}: cannot write the archive: {_os_reason(err)}") from None
    finally:
        src.close()
    report.skipped.sort()
    return report


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True),
    help="Folder (searched recursively) or zip of PNG/JPEG images.",
)
@click.option("--dest", required=True, type=click.Path(), help="Output .zip file.")
@click.option("--resolution", type=int, default=None, help="Resize to N x N (power of two), LANCZOS.")
@click.option(
    "--transform",
    type=click.Choice(TRANSFORMS),
    default="none",
    show_default=True,
    help="Make non-square images square before resizing (needs --resolution).",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default=None,
    help="Convert every image to 1 (L) or 3 (RGB) channels.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="Pack only the first N images (sorted order).",
)
@click.option(
    "--compress-level",
    type=click.IntRange(0, 9),
    default=0,
    show_default=True,
    help="PNG compression level inside the zip (0 = fastest to read).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --dest.")
@click.option(
    "--keep-names/--no-keep-names",
    default=True,
    show_default=True,
    help="Record each image's source file in dataset.json ('source_files').",
)
def main(
    source: str,
    dest: str,
    resolution: int | None,
    transform: str,
    channels: str | None,
    max_images: int | None,
    compress_level: int,
    overwrite: bool,
    keep_names: bool,
) -> None:
    """Pack a folder (or zip) of PNG/JPEG images and its dataset.json into a training zip."""
    try:
        report = pack_dataset(
            source,
            dest,
            resolution=resolution,
            transform=transform,
            channels=int(channels) if channels else None,
            max_images=max_images,
            compress_level=compress_level,
            overwrite=overwrite,
            keep_names=keep_names,
            progress=True,
        )
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # anything not foreseen: still one line, not a traceback
        raise click.ClickException(_os_reason(err)) from None
    click.echo(report.summary())


if __name__ == "__main__":
    main()
