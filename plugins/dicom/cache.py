"""Convert a DICOM folder once into a cached training folder, keyed by everything that affects it.

The cache key is a SHA-256 of: the input file list (relative path, size, modification time of every
file), the labels CSV bytes, the rendering settings, the renderer version and the multiclass flag.
Any change gives a new key and therefore a fresh conversion; an unchanged input reuses the cache.

A conversion runs in ``CACHE_DIR/.dicom-<key>.partial`` (resumable: re-running continues it) under
a file lock, so concurrent ranks of a distributed run convert once; it is renamed to
``CACHE_DIR/dicom-<key>`` only when complete (``COMPLETE`` marker inside).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator

from data_processing.convert import ConvertConfig, ConvertSummary, convert_folder, list_inputs
from data_processing.render import RENDER_VERSION, RenderOptions

__all__ = [
    "COMPLETE_MARKER",
    "NoImagesConvertedError",
    "cache_key",
    "ensure_converted",
    "looks_like_dicom_folder",
]

COMPLETE_MARKER = "COMPLETE"
_SNIFF_LIMIT = 64  # files examined when deciding whether a folder holds DICOM files


class NoImagesConvertedError(ValueError):
    """The conversion produced no usable image; the message points to the report."""


def _is_dicom_file(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_dicom_folder(path: str) -> bool:
    """True when ``path`` is a folder and one of its first files (recursively) is a DICOM Part 10 file."""
    if not os.path.isdir(path):
        return False
    seen = 0
    for rel in list_inputs(path):
        if rel.lower().endswith((".png", ".jpg", ".jpeg", ".json", ".csv", ".txt")):
            continue
        if _is_dicom_file(os.path.join(path, rel)):
            return True
        seen += 1
        if seen >= _SNIFF_LIMIT:
            break
    return False


def cache_key(dicom_dir: str, labels_csv: str | None, render: RenderOptions, multiclass: bool) -> str:
    """Hex SHA-256 over the inputs' names/sizes/mtimes, the labels bytes and the conversion settings."""
    h = hashlib.sha256()
    settings = {"render": render.as_dict(), "render_version": RENDER_VERSION, "multiclass": multiclass}
    h.update(json.dumps(settings, sort_keys=True).encode())
    if labels_csv is not None:
        with open(labels_csv, "rb") as fh:
            h.update(b"labels\0" + hashlib.sha256(fh.read()).digest())
    exclude = [labels_csv] if labels_csv else []
    for rel in list_inputs(dicom_dir, exclude=exclude):
        st = os.stat(os.path.join(dicom_dir, rel))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_converted(
    dicom_dir: str,
    labels_csv: str | None,
    render: RenderOptions,
    multiclass: bool,
    cache_dir: str,
    *,
    workers: int,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[str, ConvertSummary | None]:
    """Path of the complete cached conversion (converting first if needed) and the summary if converted now."""
    key = cache_key(dicom_dir, labels_csv, render, multiclass)[:20]
    final = os.path.join(cache_dir, f"dicom-{key}")
    if os.path.isfile(os.path.join(final, COMPLETE_MARKER)):
        log(f"dicom: reusing the converted dataset {final}")
        return final, None
    os.makedirs(cache_dir, exist_ok=True)
    with _locked(os.path.join(cache_dir, f".dicom-{key}.lock")):
        if os.path.isfile(os.path.join(final, COMPLETE_MARKER)):  # another process finished it meanwhile
            return final, None
        partial = os.path.join(cache_dir, f".dicom-{key}.partial")
        log(f"dicom: converting {dicom_dir} into {final} (once; later runs reuse it)")
        config = ConvertConfig(
            dicom_dir=dicom_dir,
            outdir=partial,
            labels_csv=labels_csv,
            render=render,
            multiclass=multiclass,
            workers=workers,
            progress=progress,
        )
        summary = convert_folder(config, log=log)
        if summary.counts["converted"] + summary.counts["existing"] == 0:
            raise NoImagesConvertedError(
                f"no image of {dicom_dir} could be converted (or none is labelled); see {summary.report_path}"
            )
        with open(os.path.join(partial, COMPLETE_MARKER), "w", encoding="utf-8") as fh:
            json.dump({"counts": dict(summary.counts), "exit_code": summary.exit_code}, fh)
        os.replace(partial, final)
    return final, summary
