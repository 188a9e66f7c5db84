"""Benchmark: DICOM -> PNG conversion throughput vs bare pydicom decoding.

Generates COUNT synthetic radiographs (default 256 files of 2000 x 2000, 12 bits stored in 16, uncompressed,
MONOCHROME1 with a window) into a temp folder (or --workdir), then measures, on the same files:

* bare decode: ``pydicom.dcmread(f).pixel_array`` in one process (files/s), wall and CPU time;
* our conversion in one process (``--workers 0``): the apples-to-apples overhead over bare decoding,
  wall and CPU time (CPU time is less sensitive to other jobs on the machine);
* where our time goes, per file: reading the data set, checks + pixel view, rendering (grey levels,
  box stage, Lanczos), PNG encoding, atomic write;
* our conversion command with 1 and 2 worker processes: wall time including the pool start-up, the
  steady-state rate between the first and the last finished file, and the CPU time per file inside the
  workers (equal for 1 and 2 workers = the work scales linearly; wall-clock scaling then only depends on
  free cores) -> scaling.

This process gets the conversion workers' set-up (``worker_init``: glibc malloc thresholds, one BLAS
thread) before anything is measured, so in-process bare decoding and our conversion run under the same
allocator settings: without it, bare decoding alone varies 3-4x with the allocator's state (page faults
on every fresh 8 MB buffer).

Prints a table. Example: ``python bench/bench_dicom_convert.py --count 64``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402

from data_processing.convert import (  # noqa: E402
    ConvertConfig,
    convert_folder,
    render_task,
    run_render_tasks,
    worker_init,
)
from data_processing.pngio import deflate_backend, encode_png, write_atomic  # noqa: E402
from data_processing.reader import decode_stored, inspect_image, read_dataset  # noqa: E402
from data_processing.render import RenderOptions, render_dicom  # noqa: E402


def synthetic_film(size: int, seed: int) -> np.ndarray:
    """A radiograph-like 12-bit image [size, size]: smooth anatomy-ish blobs plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = (
        1800
        + 900 * np.sin(6 * xx + seed) * np.cos(4 * yy)
        + 600 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) * 20)
    )
    img += rng.normal(0, 40, (size, size)).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_files(folder: str, count: int, size: int, transfer_syntax: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    base = [synthetic_film(size, s) for s in range(4)]
    paths = []
    for i in range(count):
        pixels = np.roll(base[i % 4], 37 * i, axis=1)
        fm = FileMetaDataset()
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        fm.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
        ds.Modality = "CR"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 3500
        ds.PixelData = pixels.tobytes()
        if transfer_syntax == "j2k":
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        path = os.path.join(folder, f"film_{i:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def bare_decode(paths: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of ``dcmread(f).pixel_array`` over ``paths``."""
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        _ = pydicom.dcmread(p).pixel_array  # the bare decode being measured
    return time.perf_counter() - t0, time.process_time() - c0


def _bare_one(path: str) -> int:
    return int(pydicom.dcmread(path).pixel_array.shape[0])


def bare_decode_parallel(paths: list[str], workers: int) -> float:
    import concurrent.futures as cf
    import multiprocessing

    # the same worker set-up as the conversion pool (glibc malloc thresholds), for a fair comparison
    with cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init
    ) as pool:
        list(pool.map(_bare_one, paths[: workers * 2]))  # start the workers first
        t0 = time.perf_counter()
        list(pool.map(_bare_one, paths, chunksize=4))
        return time.perf_counter() - t0


def ours_in_process(paths: list[str], outdir: str, options: RenderOptions) -> tuple[float, float]:
    """(wall s, CPU s) of ``render_task`` (render + PNG write) over ``paths``, in this process."""
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    tasks = [(p, os.path.join(outdir, os.path.basename(p) + ".png"), options) for p in paths]
    t0, c0 = time.perf_counter(), time.process_time()
    for task in tasks:
        _, meta, code, reason = render_task(task)
        if meta is None:
            raise RuntimeError(reason)
    return time.perf_counter() - t0, time.process_time() - c0


STAGES = (
    "read data set (dcmread)",
    "checks + pixel view",
    "render (grey, box, Lanczos)",
    "PNG encode",
    "PNG write",
)


def stage_times(paths: list[str], outdir: str, options: RenderOptions) -> list[float]:
    """CPU seconds per file of each of :data:`STAGES` (the steps of ``render_task``, timed one by one)."""
    os.makedirs(outdir, exist_ok=True)
    totals = [0.0] * len(STAGES)
    for p in paths:
        c = [time.process_time()]
        ds = read_dataset(p)
        c.append(time.process_time())
        decode_stored(ds, inspect_image(ds, p), p)  # what render_dicom does first (timed again inside it)
        c.append(time.process_time())
        image = render_dicom(ds, options).image
        c.append(time.process_time())
        data = encode_png(image)
        c.append(time.process_time())
        write_atomic(os.path.join(outdir, os.path.basename(p) + ".png"), lambda fh, data=data: fh.write(data))
        c.append(time.process_time())
        for i in range(len(STAGES)):
            totals[i] += c[i + 1] - c[i]
    totals[2] -= totals[1]  # render_dicom(ds) repeats the checks and the pixel view: count them once
    return [t / len(paths) for t in totals]


def ours_command(src: str, outdir: str, options: RenderOptions, workers: int) -> float:
    """Wall seconds of the whole conversion command (``convert_folder``), pool start-up included."""
    shutil.rmtree(outdir, ignore_errors=True)  # a fresh output folder: nothing to resume
    t0 = time.perf_counter()
    summary = convert_folder(ConvertConfig(src, outdir, None, options, workers=workers, progress=False))
    wall = time.perf_counter() - t0
    assert summary.exit_code == 0, summary.format()
    return wall


def cpu_timed_render_task(task):
    """render_task plus the CPU seconds it took in its (worker) process."""
    c0 = time.process_time()
    result = render_task(task)
    return result, time.process_time() - c0


def ours_pool(paths: list[str], outdir: str, options: RenderOptions, workers: int) -> tuple[float, float]:
    """(steady-state s per file between the first and the last result, mean worker CPU s per file)."""
    tasks = [(p, os.path.join(outdir, os.path.basename(p) + ".png"), options) for p in paths]
    stamps, cpu = [], []
    for _result, seconds in run_render_tasks(tasks, workers, False, func=cpu_timed_render_task):
        stamps.append(time.perf_counter())
        cpu.append(seconds)
    return (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1), sum(cpu) / len(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument(
        "--workdir", default=None, help="where to write the DICOMs and PNGs (default: a temp folder)"
    )
    parser.add_argument("--transfer-syntax", choices=("native", "j2k"), default="native")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each measurement")
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench_dicom_")
    src = os.path.join(work, "dicom")
    try:
        t0 = time.perf_counter()
        paths = write_files(src, args.count, args.size, args.transfer_syntax)
        mb = sum(os.path.getsize(p) for p in paths) / 2**20
        print(
            f"wrote {len(paths)} DICOMs ({args.size}x{args.size}, 12-bit, {args.transfer_syntax}, {mb:.0f} MiB) "
            f"in {time.perf_counter() - t0:.1f} s; cpus={os.cpu_count()}"
        )
        worker_init()  # the workers' allocator and BLAS settings, for bare decoding and ours alike
        bare_decode(paths[:8])  # warm caches/imports
        options = RenderOptions(resolution=args.resolution)
        n = len(paths)

        def best(fn, *a):
            return min(fn(*a) for _ in range(args.repeats))

        def best_pair(fn, *a):
            results = [fn(*a) for _ in range(args.repeats)]
            return min(r[0] for r in results), min(r[1] for r in results)

        bare = best_pair(bare_decode, paths)
        ours0 = best_pair(ours_in_process, paths, os.path.join(work, "png_inproc"), options)
        stages = [
            min(v)
            for v in zip(
                *(stage_times(paths, os.path.join(work, "png_stages"), options) for _ in range(args.repeats))
            )
        ]
        bare2 = best(bare_decode_parallel, paths, 2)
        wall = {w: best(ours_command, src, os.path.join(work, f"png_cmd{w}"), options, w) for w in (1, 2)}
        for w in (1, 2):
            shutil.rmtree(os.path.join(work, f"png_cmd{w}"), ignore_errors=True)
        pool = {
            w: best_pair(ours_pool, paths, os.path.join(work, f"png_pool{w}"), options, w) for w in (1, 2)
        }
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

        print(f"\n{'measurement':<52}{'files/s':>10}{'ms/file':>10}{'CPU ms':>10}")

        def line(label: str, seconds_per_file: float, cpu_per_file: float | None = None) -> None:
            cpu = f"{1000 * cpu_per_file:>10.2f}" if cpu_per_file is not None else ""
            print(f"{label:<52}{1 / seconds_per_file:>10.1f}{1000 * seconds_per_file:>10.2f}{cpu}")

        line("bare dcmread().pixel_array, 1 process", bare[0] / n, bare[1] / n)
        line("bare dcmread().pixel_array, 2 processes", bare2 / n)
        line("ours, in-process (render + PNG write)", ours0[0] / n, ours0[1] / n)
        for w in (1, 2):
            line(f"ours, convert --workers {w} (wall, incl. start-up)", wall[w] / n)
            line(f"ours, --workers {w} steady state", pool[w][0], pool[w][1])
        print(f"\nwhere our time goes (CPU ms per file, in-process; PNG deflate: {deflate_backend()}):")
        for label, seconds in zip(STAGES, stages):
            print(f"  {label:<50}{1000 * seconds:>10.2f}")
        print(f"  {'total':<50}{1000 * sum(stages):>10.2f}")
        print(
            f"\noverhead over bare decoding (in-process, per file): {100 * (ours0[0] / bare[0] - 1):+.0f}% wall, "
            f"{100 * (ours0[1] / bare[1] - 1):+.0f}% CPU"
        )
        print(
            f"scaling 1 -> 2 workers: {wall[1] / wall[2]:.2f}x wall, {pool[1][0] / pool[2][0]:.2f}x steady state; "
            f"bare decoding scales {bare[0] / bare2:.2f}x here; worker CPU per file 2 vs 1 worker: "
            f"{pool[2][1] / pool[1][1]:.2f}x (1.00 = no contention inside our design); "
            f"1-min load average {load:.1f} on {os.cpu_count()} CPUs"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
