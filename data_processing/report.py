"""The conversion report (``conversion_report.csv``, one row per input file) and ``label_issues.csv``."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

from data_processing.labels import LabelIssue
from data_processing.pngio import write_atomic

__all__ = [
    "REPORT_NAME",
    "ISSUES_NAME",
    "STATUSES",
    "ReportRow",
    "write_report",
    "read_report",
    "write_issues",
]

REPORT_NAME = "conversion_report.csv"
ISSUES_NAME = "label_issues.csv"
#: ``converted``: PNG written now; ``existing``: kept from an earlier run; ``failed``: could not be
#: rendered (see reason); ``unlabelled``: no label, not converted; ``excluded``: its label is unusable
#: (conflict, duplicate id); ``ignored``: not an image input (DICOMDIR index).
STATUSES = ("converted", "existing", "failed", "unlabelled", "excluded", "ignored")


@dataclass
class ReportRow:
    """One input file's outcome. Paths are relative, with ``/`` separators."""

    source: str
    status: str
    reason_code: str = ""
    reason: str = ""
    output: str = ""
    image_id: str = ""
    label: str = ""
    class_name: str = ""
    findings: str = ""
    window_source: str = ""
    source_window: str = ""
    voi_function: str = ""
    inverted: str = ""
    fallback: str = ""
    modality_lut: str = ""
    padding: str = ""
    photometric: str = ""
    transfer_syntax: str = ""
    lossy: str = ""
    warnings: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def update_from_metadata(self, meta: dict) -> None:
        """Fill the rendering columns from :func:`~data_processing.render.render_dicom` metadata."""
        self.window_source = str(meta.get("window_source", ""))
        self.source_window = str(meta.get("source_window", ""))
        self.voi_function = str(meta.get("voi_function", ""))
        self.inverted = "yes" if meta.get("inverted") else "no"
        self.fallback = str(meta.get("fallback", ""))
        self.modality_lut = str(meta.get("modality_lut", ""))
        padding = str(meta.get("padding", ""))
        if padding:
            padding += f" ({100.0 * float(meta.get('padding_fraction', 0.0)):.1f}% of pixels)"
        self.padding = padding
        self.photometric = str(meta.get("photometric", ""))
        self.transfer_syntax = str(meta.get("transfer_syntax", ""))
        self.lossy = "yes" if meta.get("lossy") else "no"
        self.warnings = "; ".join(meta.get("warnings", []))

    RENDER_COLUMNS = (
        "window_source",
        "source_window",
        "voi_function",
        "inverted",
        "fallback",
        "modality_lut",
        "padding",
        "photometric",
        "transfer_syntax",
        "lossy",
        "warnings",
    )


def _csv_bytes(header: list[str], rows: Iterable[list[str]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_report(path: str | os.PathLike[str], rows: Iterable[ReportRow]) -> None:
    """Write the report CSV atomically, rows sorted by source path."""
    ordered = sorted(rows, key=lambda r: r.source)
    data = _csv_bytes(ReportRow.columns(), ([str(v) for v in asdict(r).values()] for r in ordered))
    write_atomic(path, lambda fh: fh.write(data))


def read_report(path: str | os.PathLike[str]) -> dict[str, ReportRow]:
    """Rows of an earlier report keyed by source; {} when absent or unreadable (a new report is written)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            names = set(ReportRow.columns())
            return {
                r["source"]: ReportRow(**{k: v for k, v in r.items() if k in names})
                for r in reader
                if r.get("source")
            }
    except (OSError, ValueError, TypeError, KeyError, csv.Error):
        return {}


def write_issues(path: str | os.PathLike[str], issues: Iterable[LabelIssue]) -> None:
    """Write ``label_issues.csv`` (kind, image_id, row, detail) atomically."""
    rows = ([i.kind, i.image_id, "" if i.row is None else str(i.row), i.detail] for i in issues)
    data = _csv_bytes(["kind", "image_id", "csv_line", "detail"], rows)
    write_atomic(path, lambda fh: fh.write(data))
