"""Legacy entry point of the original SpineGAN: 8-bit copies of 16-bit PNGs.

    python data_processing/scale_png.py --directory DIR [--outdir OUT | --in-place] [--scale full|max]

Writes scaled copies into OUT (default ``DIR_8bit``); replaces the files only with ``--in-place``.
A thin wrapper over :func:`data_processing.scale.scale_folder` (scalings documented there).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable instead of this folder
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from data_processing.scale import scale_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", required=True, help="folder of PNGs (searched recursively)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--outdir", default=None, help="where to write the 8-bit copies [default: DIRECTORY_8bit]"
    )
    where.add_argument(
        "--in-place", action="store_true", help="replace the 16-bit PNGs by their 8-bit versions"
    )
    parser.add_argument(
        "--scale",
        choices=("full", "max"),
        default="full",
        help="full: x/257 (windowed PNGs from our converter); max: x*255/max per image (raw PNGs)",
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        print(f"error: --directory {args.directory}: not a folder", file=sys.stderr)
        return 2
    try:
        summary = scale_folder(args.directory, args.outdir, in_place=args.in_place, mode=args.scale)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(summary.written)} 16-bit PNGs scaled to 8 bits, {len(summary.skipped)} already 8-bit")
    for item in summary.failed:
        print(f"failed: {item}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
