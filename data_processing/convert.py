"""Convert a folder of DICOM radiographs (+ labels CSV) into a training folder.

Output folder layout::

    OUTDIR/<input relative path, extension -> .png>   one PNG per converted image (mirrors the input tree)
    OUTDIR/dataset.json             {"labels": [["rel.png", class], ...], "class_names": [...]} (upstream format;
                                    ``"labels": null`` without a labels CSV) -- what ``train.py --cond 1`` reads
    OUTDIR/conversion_report.csv    one row per input file: status, reason, window, inversion, fallback, output...
    OUTDIR/label_issues.csv         unlabelled images, labels without an image, duplicates, conflicts (if any)
    OUTDIR/conversion_settings.json the rendering settings, so a re-run can resume safely

With a labels CSV only labelled images are converted (``dataset.json`` lists exactly the PNGs in the
folder, as a conditional dataset requires); unlabelled ones are reported and left alone. Re-running
skips images whose PNG exists and is newer than the DICOM (``--overwrite`` re-renders all); PNGs of a
previous run that the current labels no longer select are removed (only those the previous report
lists as ours). The input folder is only read; the output folder must not be inside it.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import tempfile
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from data_processing.errors import DicomInputError
from data_processing.labels import LabelIssue, LabelTable, image_id_from_filename, read_labels
from data_processing.pngio import write_atomic, write_png
from data_processing.render import RENDER_VERSION, RenderOptions, render_dicom
from data_processing.report import (
    ISSUES_NAME,
    REPORT_NAME,
    ReportRow,
    read_report,
    write_issues,
    write_report,
)
from stylegan2_ada import devices

__all__ = [
    "ConversionError",
    "OutputError",
    "InputEntry",
    "scan_inputs",
    "os_reason",
    "ConvertConfig",
    "ConvertSummary",
    "DATASET_JSON",
    "SETTINGS_NAME",
    "convert_folder",
    "list_inputs",
    "is_inside",
    "render_task",
    "run_render_tasks",
    "worker_init",
]

DATASET_JSON = "dataset.json"
SETTINGS_NAME = "conversion_settings.json"
#: Files with these extensions in the input folder are not images: listed as "ignored", not failures.
SIDECAR_EXTENSIONS = frozenset(
    {
        ".csv",
        ".txt",
        ".json",
        ".xml",
        ".md",
        ".pdf",
        ".html",
        ".htm",
        ".png",
        ".jpg",
        ".jpeg",
        ".log",
        ".ini",
        ".zip",
    }
)
_LABEL_PROBLEM_KINDS = frozenset(
    {
        "image-without-label",
        "label-without-image",
        "duplicate-image-id",
        "conflicting-labels",
        "invalid-label",
        "blank-row",
    }
)


class ConversionError(Exception):
    """The conversion cannot start (bad folders, labels, settings clash); the message says why."""


class OutputError(ConversionError):
    """The output folder cannot be written (read-only, a file in the way, disk full); the message says where."""


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and how. ``workers=0`` renders in this process (no pool)."""

    dicom_dir: str
    outdir: str
    labels_csv: str | None = None
    render: RenderOptions = field(default_factory=RenderOptions)
    multiclass: bool = False
    workers: int = field(default_factory=devices.default_workers)
    overwrite: bool = False
    strict: bool = False
    progress: bool = True


@dataclass
class ConvertSummary:
    """Outcome of :func:`convert_folder`. ``exit_code``: 0 all good, 1 something failed (see the report)."""

    rows: list[ReportRow]
    issues: list[LabelIssue]
    class_counts: dict[str, int]
    removed_stale: list[str]
    outdir: str
    exit_code: int

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.rows)

    @property
    def report_path(self) -> str:
        return os.path.join(self.outdir, REPORT_NAME)

    def format(self) -> str:
        """A short human-readable summary."""
        c = self.counts
        lines = [
            f"{len(self.rows)} input files: {c['converted']} converted, {c['existing']} already converted, "
            f"{c['failed']} failed, {c['unlabelled']} unlabelled, {c['excluded']} excluded, {c['ignored']} ignored"
        ]
        if self.class_counts:
            lines.append(
                "dataset.json classes: " + ", ".join(f"{k}: {v}" for k, v in self.class_counts.items())
            )
        reasons = Counter(r.reason_code for r in self.rows if r.status == "failed")
        if reasons:
            lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common()))
            for r in [r for r in self.rows if r.status == "failed"][:5]:
                lines.append(f"  {r.reason}")
        kinds = Counter(i.kind for i in self.issues)
        if kinds:
            lines.append(
                f"label issues ({ISSUES_NAME}): " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
            )
        if self.removed_stale:
            lines.append(
                f"removed {len(self.removed_stale)} PNGs of an earlier run that the labels no longer select"
            )
        lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


@dataclass(frozen=True)
class InputEntry:
    """One entry of the input folder: ``rel`` ('/'-separated, relative) and what it is.

    ``kind``: ``"file"`` (a regular file, or a link to one), ``"broken-link"`` (a symbolic link to
    nothing: a partial copy or a moved share), ``"special"`` (FIFO, socket, device: never opened, a
    FIFO would block) or ``"linked-folder"`` (a symbolic link to a folder: not followed, so that a
    conversion never reads outside the input folder or loops).
    """

    rel: str
    kind: str


def scan_inputs(dicom_dir: str, exclude: Iterable[str] = ()) -> list[InputEntry]:
    """Every non-hidden entry under ``dicom_dir`` (recursive) that is not a folder, sorted by path.

    Files whose real path is in ``exclude`` (the labels CSV) are left out; so are hidden entries
    (a name starting with ``.``) and ``__MACOSX`` folders.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    found = []
    for root, dirs, files in os.walk(dicom_dir):
        visible = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        dirs[:] = [d for d in visible if not os.path.islink(os.path.join(root, d))]
        linked = [d for d in visible if os.path.islink(os.path.join(root, d))]
        for name, is_folder in [(n, False) for n in files] + [(d, True) for d in linked]:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, dicom_dir).replace(os.sep, "/")
            if _is_hidden(rel) or os.path.realpath(full) in excluded:
                continue
            found.append(InputEntry(rel, "linked-folder" if is_folder else _entry_kind(full)))
    return sorted(found, key=lambda entry: entry.rel)


def _entry_kind(path: str) -> str:
    if os.path.isfile(path):
        return "file"
    if os.path.islink(path) and not os.path.exists(path):
        return "broken-link"
    return "special"


def list_inputs(dicom_dir: str, exclude: Iterable[str] = ()) -> list[str]:
    """All non-hidden regular files under ``dicom_dir`` (recursive), relative, '/'-separated, sorted."""
    return [entry.rel for entry in scan_inputs(dicom_dir, exclude) if entry.kind == "file"]


def _output_rel(rel: str) -> str:
    root, ext = os.path.splitext(rel)
    base = root if ext.lower() in (".dcm", ".dicom", ".dic") else rel
    return base + ".png"


def is_inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


# ----------------------------------------------------------------------------------------------------
# Work done in the worker processes


def render_task(task: tuple[str, str, RenderOptions]) -> tuple[str, dict[str, Any] | None, str, str]:
    """Render one file and write its PNG: (source, metadata or None, reason_code, reason)."""
    src, out, options = task
    try:
        result = render_dicom(src, options)
        try:
            write_png(out, result.image)
        except OSError as exc:  # the output side: disk full, a folder made read-only meanwhile, ...
            return src, None, "write-failed", f"{src}: its PNG cannot be written: {os_reason(exc)}"
        return src, result.metadata, "", ""
    except DicomInputError as exc:
        return src, None, exc.code, str(exc)
    except MemoryError:
        return src, None, "out-of-memory", f"{src}: not enough memory to render this image"
    except Exception as exc:  # a batch never stops on one file: report the unexpected too
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return (
            src,
            None,
            "internal-error",
            (
                f"{src}: unexpected {type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno}; "
                "please report this file)"
            ),
        )


TaskResult = tuple[str, "dict[str, Any] | None", str, str]


def run_render_tasks(
    tasks: list[tuple[str, str, RenderOptions]],
    workers: int,
    progress: bool,
    *,
    func: Callable[[tuple[str, str, RenderOptions]], TaskResult] = render_task,
) -> Iterator[TaskResult]:
    """Run ``func`` (default :func:`render_task`) over ``tasks``, yielding results as they finish.

    ``workers == 0`` runs in this process (negative: ValueError). Otherwise a pool of ``workers`` spawned processes is used;
    if native code crashes a worker (a codec segfault), the files that were in flight are retried one
    per fresh process, so only the culprit is reported (``worker-crashed``) and the batch goes on.
    """
    from tqdm import tqdm

    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 renders in this process), not {workers}")
    bar = tqdm(
        total=len(tasks),
        desc="DICOM -> PNG",
        unit="file",
        disable=not progress or not tasks,
        dynamic_ncols=True,
    )
    try:
        if workers == 0 or len(tasks) <= 1:
            for task in tasks:
                yield func(task)
                bar.update(1)
            return
        for result in _pool_results(tasks, min(workers, len(tasks)), func):
            yield result
            bar.update(1)
    finally:
        bar.close()


def worker_init() -> None:
    """Initialise a conversion worker process: one BLAS thread, and keep freed large buffers.

    * Each worker renders one file at a time on one core, so its BLAS (the Lanczos stage's small
      matrix products) gets one thread: N workers then use N cores, without BLAS thread pools
      competing for them (``threadpoolctl``, where installed; the products are also kept small enough
      for OpenBLAS to run them on the calling thread anyway).
    * glibc returns big freed blocks to the OS, so a fresh process pays ~2000 page faults (several ms)
      per 8 MB DICOM it reads; raising the mmap/trim thresholds (as a long-running process ends up
      doing by itself) removes that cost. No effect where glibc's ``mallopt`` is unavailable.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - an optional helper (installed with scikit-learn)
        threadpool_limits = None
    if threadpool_limits is not None:
        threadpool_limits(limits=1, user_api="blas")  # stays in force for the life of the worker
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (its maximum on 64-bit glibc)
        libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _spawn() -> Any:
    # spawn: safe even when the parent runs torch/OpenMP threads (the training plugin)
    return multiprocessing.get_context("spawn")


def _pool_results(tasks: list, workers: int, func: Callable) -> Iterator[TaskResult]:
    queue = deque(tasks)
    while queue:
        suspects: list = []
        with cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=_spawn(), initializer=worker_init
        ) as pool:
            inflight: dict[cf.Future, tuple] = {}
            broken = False
            while (queue or inflight) and not broken:
                while queue and len(inflight) < 4 * workers:
                    task = queue.popleft()
                    inflight[pool.submit(func, task)] = task
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = inflight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        suspects.append(task)
                        broken = True
                        continue
                    yield result
            suspects.extend(inflight.values())
        for task in suspects:  # one fresh process each: find the file that kills its worker
            yield _isolated(task, func)


def _isolated(task: tuple, func: Callable) -> TaskResult:
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=_spawn(), initializer=worker_init) as pool:
        try:
            return pool.submit(func, task).result()
        except BrokenProcessPool:
            return (
                task[0],
                None,
                "worker-crashed",
                (
                    f"{task[0]}: decoding this file crashed the worker process (a bug in native decoder code); skipped"
                ),
            )


# ----------------------------------------------------------------------------------------------------
# The conversion: checks, planning, running, writing the results


def convert_folder(config: ConvertConfig, *, log: Callable[[str], None] | None = None) -> ConvertSummary:
    """Convert ``config.dicom_dir`` into ``config.outdir``; see the module docstring.

    Never raises for a bad input file (it gets a report row). Raises :class:`ConversionError` when the
    conversion cannot start (folders, labels, settings) and :class:`OutputError` when the output
    folder cannot be written.
    """
    log = log or (lambda message: None)
    dicom_dir, outdir = _check_config(config)
    table = _read_table(config)
    settings = _settings(config)
    _check_settings(outdir, settings, config.overwrite)
    _prepare_outdir(outdir)
    previous = read_report(os.path.join(outdir, REPORT_NAME))
    plan = _plan_conversion(config, dicom_dir, outdir, table, previous)
    existing = sum(r.status == "existing" for r in plan.rows.values())
    log(
        f"{plan.inputs} files in {config.dicom_dir}: {len(plan.tasks)} to convert, {existing} already converted"
    )
    for src, meta, code, reason in run_render_tasks(plan.tasks, config.workers, config.progress):
        _record_result(plan.rows[plan.task_rel[src]], meta, code, reason)
    return _write_results(config, outdir, table, settings, plan, previous)


# Checks before any work


def _check_config(config: ConvertConfig) -> tuple[str, str]:
    """(input folder, output folder), absolute; :class:`ConversionError` when they cannot be used."""
    dicom_dir, outdir = os.path.abspath(config.dicom_dir), os.path.abspath(config.outdir)
    if not isinstance(config.workers, int) or config.workers < 0:
        raise ConversionError(f"workers must be >= 0 (0 renders in this process), not {config.workers!r}")
    if not os.path.isdir(dicom_dir):
        raise ConversionError(f"--dicom {config.dicom_dir}: not a folder")
    if is_inside(outdir, dicom_dir):
        raise ConversionError(
            f"--outdir {config.outdir} is inside the input folder {config.dicom_dir}: choose an output folder outside "
            "it (inputs are never modified)"
        )
    return dicom_dir, outdir


def _read_table(config: ConvertConfig) -> LabelTable | None:
    if config.labels_csv is None:
        return None
    try:
        return read_labels(config.labels_csv, multiclass=config.multiclass)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


def _settings(config: ConvertConfig) -> dict[str, Any]:
    """What ``conversion_settings.json`` records: everything that changes the PNGs or their labels."""
    return {
        "render": config.render.as_dict(),
        "render_version": RENDER_VERSION,
        "multiclass": config.multiclass,
        "labels_csv": os.path.abspath(config.labels_csv) if config.labels_csv else None,
    }


def _check_settings(outdir: str, settings: dict[str, Any], overwrite: bool) -> None:
    path = os.path.join(outdir, SETTINGS_NAME)
    if overwrite or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError):
        raise ConversionError(
            f"{path}: unreadable settings of an earlier conversion; use --overwrite to start afresh"
        ) from None
    if old.get("render") != settings["render"] or old.get("render_version") != settings["render_version"]:
        diffs = [
            f"{k}: {old.get('render', {}).get(k)!r} -> {v!r}"
            for k, v in settings["render"].items()
            if old.get("render", {}).get(k) != v
        ] or ["renderer version changed"]
        raise ConversionError(
            f"{outdir} holds images converted with other settings ({', '.join(diffs)}); use --overwrite to "
            "re-render them all, or choose another --outdir"
        )


def _prepare_outdir(outdir: str) -> None:
    """Create the output folder and prove that files can be created in it, before any rendering."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise OutputError(f"{outdir}: the output folder is a file, not a folder")
    try:
        os.makedirs(outdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot write to the output folder: {os_reason(exc)}") from None


def os_reason(exc: OSError) -> str:
    """An OS error in words, with the path it concerns: 'Read-only file system ('/data/out')'."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({exc.filename!r})" if exc.filename else reason


# Planning: one report row per input, the render tasks


@dataclass
class _Plan:
    """A conversion to run: a report row per input (the rendered ones completed as results arrive),
    the label issues, and the render tasks with the input each one renders."""

    inputs: int
    rows: dict[str, ReportRow] = field(default_factory=dict)  # relative input path -> its row
    issues: list[LabelIssue] = field(default_factory=list)
    tasks: list[tuple[str, str, RenderOptions]] = field(default_factory=list)  # (source, PNG, options)
    task_rel: dict[str, str] = field(default_factory=dict)  # source path -> relative input path


def _plan_conversion(
    config: ConvertConfig,
    dicom_dir: str,
    outdir: str,
    table: LabelTable | None,
    previous: dict[str, ReportRow],
) -> _Plan:
    entries = scan_inputs(dicom_dir, exclude=[config.labels_csv] if config.labels_csv else [])
    plan = _Plan(len(entries), issues=list(table.issues) if table else [])
    candidates = []
    for entry in entries:
        row = _unused_input_row(entry)
        if row is None:
            candidates.append(entry.rel)
        else:
            plan.rows[entry.rel] = row
    groups = _InputGroups.of(candidates)
    for rel in candidates:
        row, issue = _candidate_row(rel, groups, table, config.labels_csv)
        plan.rows[rel] = row
        if issue is not None:
            plan.issues.append(issue)
        if row.status:
            continue
        src, dst = os.path.join(dicom_dir, rel), os.path.join(outdir, row.output)
        if not config.overwrite and _is_current(dst, src):
            _keep_existing(row, previous.get(rel))
            continue
        plan.tasks.append((src, dst, config.render))
        plan.task_rel[src] = rel
    if table is not None:
        present = {r.image_id for r in plan.rows.values() if r.image_id}  # candidates and broken links
        plan.issues.extend(_labels_without_images(table, present, config.labels_csv))
    return plan


def _unused_input_row(entry: InputEntry) -> ReportRow | None:
    """The row of an input that is not rendered whatever the labels say (None for a candidate image)."""
    rel = entry.rel
    name = rel.rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1].lower()
    if entry.kind == "linked-folder":
        return ReportRow(
            rel,
            "ignored",
            "linked-folder",
            f"{rel}: a symbolic link to a folder; not followed (pass the folder itself, or copy it in)",
        )
    if name.upper() == "DICOMDIR":
        return ReportRow(
            rel, "ignored", "dicomdir", f"{rel}: DICOMDIR index file (lists the images; not an image)"
        )
    if ext in SIDECAR_EXTENSIONS:
        return ReportRow(rel, "ignored", "not-an-input", f"{rel}: not a DICOM input (extension {ext})")
    if entry.kind == "broken-link":
        return ReportRow(
            rel,
            "failed",
            "broken-link",
            f"{rel}: a symbolic link to a file that does not exist (an incomplete copy, or a moved share?)",
            image_id=image_id_from_filename(name),
        )
    if entry.kind == "special":
        return ReportRow(
            rel, "ignored", "not-a-file", f"{rel}: not a regular file (a FIFO, socket or device); not read"
        )
    return None


@dataclass(frozen=True)
class _InputGroups:
    """Candidate inputs grouped by image id and by output PNG (to find ambiguous ids and collisions)."""

    by_id: dict[str, list[str]]
    by_output: dict[str, list[str]]

    @classmethod
    def of(cls, candidates: list[str]) -> _InputGroups:
        by_id: dict[str, list[str]] = {}
        by_output: dict[str, list[str]] = {}
        for rel in candidates:
            by_id.setdefault(image_id_from_filename(rel.rsplit("/", 1)[-1]), []).append(rel)
            by_output.setdefault(_output_rel(rel), []).append(rel)
        return cls(by_id, by_output)


def _candidate_row(
    rel: str, groups: _InputGroups, table: LabelTable | None, labels_csv: str | None
) -> tuple[ReportRow, LabelIssue | None]:
    """A candidate image's row, and a label issue if it has one. Status "" means: render it to ``row.output``."""
    image_id = image_id_from_filename(rel.rsplit("/", 1)[-1])
    out_rel = _output_rel(rel)
    row = ReportRow(rel, "", image_id=image_id)
    if len(groups.by_output[out_rel]) > 1:
        others = ", ".join(o for o in groups.by_output[out_rel] if o != rel)
        row.status, row.reason_code = "failed", "output-collision"
        row.reason = f"{rel}: its output {out_rel} would also be written for {others}; rename one of them"
        return row, None
    if table is not None:
        if len(groups.by_id[image_id]) > 1:
            others = ", ".join(o for o in groups.by_id[image_id] if o != rel)
            row.status, row.reason_code = "excluded", "duplicate-image-id"
            row.reason = f"{rel}: image id {image_id!r} is also the id of {others}, so its label is ambiguous"
            return row, LabelIssue("duplicate-image-id", image_id, f"{rel} and {others}")
        if image_id in table.excluded:
            row.status, row.reason_code = "excluded", "label-excluded"
            row.reason = f"{rel}: no usable label for {image_id!r}: {table.excluded[image_id]}"
            return row, None
        if image_id not in table.labels:
            row.status, row.reason_code = "unlabelled", "no-label"
            row.reason = f"{rel}: image id {image_id!r} is not in {labels_csv}; not converted"
            return row, LabelIssue("image-without-label", image_id, rel)
        label = table.labels[image_id]
        row.label, row.class_name = str(label), table.class_name(label)
        row.findings = "; ".join(table.findings.get(image_id, []))
    row.output = out_rel
    return row, None


def _keep_existing(row: ReportRow, old: ReportRow | None) -> None:
    """Mark ``row`` as converted by an earlier run, with that run's rendering columns."""
    row.status, row.reason = "existing", "already converted by an earlier run (kept)"
    if old is not None:
        for column in ReportRow.RENDER_COLUMNS:
            setattr(row, column, getattr(old, column))


def _labels_without_images(table: LabelTable, present: set[str], labels_csv: str | None) -> list[LabelIssue]:
    return [
        LabelIssue("label-without-image", image_id, f"labelled in {labels_csv} but no such file")
        for image_id in table.labels
        if image_id not in present
    ]


def _is_current(dst: str, src: str) -> bool:
    """The PNG exists and is not older than its DICOM."""
    try:
        return os.stat(dst).st_mtime_ns >= os.stat(src).st_mtime_ns
    except OSError:
        return False


# Running: results into the rows


def _record_result(row: ReportRow, meta: dict[str, Any] | None, code: str, reason: str) -> None:
    if meta is None:
        row.status, row.reason_code, row.reason, row.output = "failed", code, reason, ""
        return
    row.status = "converted"
    row.update_from_metadata(meta)
    if row.warnings:
        row.reason = row.warnings


# Writing the results: stale PNGs removed, dataset.json, settings, report, label issues


def _write_results(
    config: ConvertConfig,
    outdir: str,
    table: LabelTable | None,
    settings: dict[str, Any],
    plan: _Plan,
    previous: dict[str, ReportRow],
) -> ConvertSummary:
    rows = list(plan.rows.values())
    done = [r for r in rows if r.status in ("converted", "existing")]
    try:
        removed = _remove_stale(outdir, previous, {r.output for r in done})
        labelled = _write_dataset_json(outdir, done, table)
        _write_json(os.path.join(outdir, SETTINGS_NAME), settings)
        write_report(os.path.join(outdir, REPORT_NAME), rows)
        _write_issues(outdir, plan.issues)
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot write the conversion results: {os_reason(exc)}") from None
    class_counts: dict[str, int] = {}
    if table is not None:
        counts = Counter(label for _, label in labelled)
        class_counts = {table.class_name(k): v for k, v in sorted(counts.items())}
    failed = any(r.status == "failed" for r in rows)
    label_problem = any(i.kind in _LABEL_PROBLEM_KINDS for i in plan.issues)
    exit_code = 1 if failed or (config.strict and label_problem) else 0
    return ConvertSummary(rows, plan.issues, class_counts, removed, outdir, exit_code)


def _remove_stale(outdir: str, previous: dict[str, ReportRow], expected: set[str]) -> list[str]:
    removed = []
    for row in previous.values():
        out = row.output
        if (
            row.status not in ("converted", "existing")
            or not out
            or out in expected
            or not out.endswith(".png")
        ):
            continue
        path = os.path.join(outdir, out)
        if is_inside(path, outdir) and os.path.isfile(path):
            os.remove(path)
            removed.append(out)
    return removed


def _write_dataset_json(
    outdir: str, done: list[ReportRow], table: LabelTable | None
) -> list[tuple[str, int]]:
    """Write ``dataset.json`` for the converted rows ``done``; return its (PNG, class) pairs, sorted."""
    labelled = sorted((r.output, int(r.label)) for r in done if r.label != "")
    dataset: dict[str, Any] = {"labels": [list(item) for item in labelled] if table is not None else None}
    if table is not None and table.class_names:
        dataset["class_names"] = list(table.class_names)
    _write_json(os.path.join(outdir, DATASET_JSON), dataset)
    return labelled


def _write_issues(outdir: str, issues: list[LabelIssue]) -> None:
    path = os.path.join(outdir, ISSUES_NAME)
    if issues:
        write_issues(path, issues)
    elif os.path.exists(path):
        os.remove(path)  # ours, from an earlier run whose issues are now resolved


def _write_json(path: str, obj: dict[str, Any]) -> None:
    """Pretty JSON with one line per list entry (dataset.json stays readable and diffable)."""
    parts = []
    for key, value in obj.items():
        if isinstance(value, list) and value:
            items = ",\n".join("  " + json.dumps(v) for v in value)
            parts.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    data = ("{\n" + ",\n".join(parts) + "\n}\n").encode("utf-8")
    json.loads(data)  # always valid JSON
    write_atomic(path, lambda fh: fh.write(data))
