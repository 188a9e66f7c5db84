"""The original SpineGAN ``image_main.py`` workflow on top of the shared renderer: class folders.

``export_class_folders`` renders every labelled DICOM with :func:`~data_processing.render.render_dicom`
(same pipeline as ``python -m data_processing convert``) and writes ``<image_id>.png`` into the folder
of its binary class (VinDr rule: abnormal iff any finding is not "No finding"). Unlike the original it
reports every file it could not convert or could not label, and never overwrites an input.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from data_processing.convert import is_inside, run_render_tasks, scan_inputs
from data_processing.labels import image_id_from_filename, read_labels
from data_processing.render import RenderOptions

__all__ = ["ClassFolderSummary", "export_class_folders"]


@dataclass
class ClassFolderSummary:
    written: Counter = field(default_factory=Counter)  # class -> count
    failed: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    labels_without_image: list[str] = field(default_factory=list)


def export_class_folders(
    dicom_dir: str,
    labels_csv: str,
    class_dirs: tuple[str, str],
    options: RenderOptions,
    *,
    workers: int = 0,
    progress: bool = True,
) -> ClassFolderSummary:
    """Render labelled DICOMs into ``class_dirs[label]/<image_id>.png``; see the module docstring."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 renders in this process), not {workers}")
    for folder in class_dirs:
        if is_inside(folder, dicom_dir):
            raise ValueError(f"output folder {folder} is inside the DICOM folder {dicom_dir}; choose another")
    table = read_labels(labels_csv, multiclass=False)
    summary = ClassFolderSummary()
    by_id: dict[str, list[str]] = {}
    for entry in scan_inputs(dicom_dir, exclude=[labels_csv]):
        rel = entry.rel
        name = rel.rsplit("/", 1)[-1]
        if entry.kind == "broken-link":
            summary.failed.append(f"{rel}: a symbolic link to a file that does not exist")
            continue
        if entry.kind != "file":
            continue
        if name.upper() == "DICOMDIR" or os.path.splitext(name)[1].lower() in (
            ".csv",
            ".txt",
            ".json",
            ".png",
        ):
            continue
        by_id.setdefault(image_id_from_filename(name), []).append(rel)
    tasks = []
    for image_id, rels in sorted(by_id.items()):
        if len(rels) > 1:
            summary.duplicate_ids.append(f"{image_id}: {', '.join(rels)}")
            continue
        if image_id not in table.labels:
            summary.unlabelled.append(rels[0])
            continue
        label = table.labels[image_id]
        tasks.append(
            (os.path.join(dicom_dir, rels[0]), os.path.join(class_dirs[label], image_id + ".png"), options)
        )
    summary.labels_without_image = sorted(set(table.labels) - set(by_id))
    label_of = {src: os.path.dirname(dst) for src, dst, _ in tasks}
    for src, meta, _code, reason in run_render_tasks(tasks, workers, progress):
        if meta is None:
            summary.failed.append(reason)
        else:
            summary.written[label_of[src]] += 1
    return summary
