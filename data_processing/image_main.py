"""Legacy entry point of the original SpineGAN: DICOM folder + VinDr labels -> one PNG folder per class.

    python data_processing/image_main.py --DICOM DIR --labels CSV --save_0 NORMAL_DIR --save_1 ABNORMAL_DIR
        [--resolution 256] [--bits 16] [--crop pad|center] [--workers N]

A thin wrapper over :func:`data_processing.legacy.export_class_folders` (same renderer as
``python -m data_processing convert``; see docs/dicom.md). Exit status 1 if any file failed.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable instead of this folder
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    from data_processing.legacy import export_class_folders
    from data_processing.render import RenderOptions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--DICOM", required=True, help="folder of DICOM files (only read)")
    parser.add_argument(
        "--labels",
        required=True,
        help="VinDr-SpineXR annotations CSV (image_id, lesion_type) or image_id,label",
    )
    parser.add_argument("--save_0", required=True, help="folder for class 0 (normal) PNGs")
    parser.add_argument("--save_1", required=True, help="folder for class 1 (abnormal) PNGs")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument(
        "--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (the original wrote 16)"
    )
    parser.add_argument("--crop", choices=("pad", "center"), default="pad")
    parser.add_argument(
        "--workers", type=_non_negative_int, default=0, help="worker processes (0 = this process)"
    )
    args = parser.parse_args(argv)
    try:
        options = RenderOptions(resolution=args.resolution, bits=args.bits, crop=args.crop)
        summary = export_class_folders(
            args.DICOM, args.labels, (args.save_0, args.save_1), options, workers=args.workers
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder, n in sorted(summary.written.items()):
        print(f"{n} images -> {folder}")
    for kind, items in (
        ("failed", summary.failed),
        ("unlabelled (not written)", summary.unlabelled),
        ("duplicate image ids (not written)", summary.duplicate_ids),
        ("labels without an image", summary.labels_without_image),
    ):
        if items:
            print(f"{len(items)} {kind}:", file=sys.stderr)
            for item in items[:20]:
                print(f"  {item}", file=sys.stderr)
            if len(items) > 20:
                print(f"  ... and {len(items) - 20} more", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
