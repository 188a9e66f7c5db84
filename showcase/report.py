"""``OUTDIR/report.html``: the demo's results on one self-contained page.

Self-contained means: one HTML file with its style inline, no script, nothing fetched from elsewhere
(no CDN, no web font, not even a favicon request); the figures and the clip are the PNG and MP4 files of
the demo folder, linked by relative paths, so the folder can be zipped, moved or served as it is.

Sections (each a ``<section id=...>``, in this order): ``overview``, ``data``, ``samples`` (real and
generated grids per class), ``morph`` (the class-morph clip), ``training`` (loss and metric curves),
``classifier``, ``experiment`` (table and ROC figure), ``runtime`` (each stage's time and share),
``settings`` (preset, software versions, machine). Every value comes from the stages' markers and
output files; text is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stylegan2_ada.atomic import atomic_write

__all__ = ["SECTIONS", "render_report", "write_report"]

#: (id, heading) of every section, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("data", "Data: phantom cohort, conversion, split"),
    ("samples", "Real and generated radiographs per class"),
    ("morph", "Class morph"),
    ("training", "Training and metric curves"),
    ("classifier", "Abnormality classifier"),
    ("experiment", "Synthetic-learning experiment"),
    ("runtime", "Run time per stage"),
    ("settings", "Settings and versions"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 1.5em 3em;
       color: #1d1d1f; line-height: 1.45; }
h1 { margin-top: 1.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
figure { display: inline-block; margin: .4em 1em .8em 0; vertical-align: top; }
figcaption { font-size: .85em; color: #555; }
img.pixels { image-rendering: pixelated; width: 340px; max-width: 100%; }
img.figure { max-width: 100%; }
.note { color: #555; font-size: .9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: str, outdir: Path) -> str:
    """A path of the demo folder as a relative URL (forward slashes, each part quoted)."""
    from urllib.parse import quote

    return "/".join(quote(part) for part in Path(os.path.relpath(path, outdir)).parts)


def _figure(src: str, caption: str, css: str = "figure") -> str:
    return f'<figure><img class="{css}" src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = (
        ""
        if header is None
        else "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>"
    )
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _auc(d: dict[str, Any]) -> str:
    return f"{d['auc']:.3f} (95% CI {d['low']:.3f}-{d['high']:.3f})"


def _versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import pandas
    import pydicom
    import scipy
    import sklearn
    import torch
    import torchvision

    from stylegan2_ada.checkpoint import package_version

    return {
        "spinegan": package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pandas.__version__,
        "matplotlib": matplotlib.__version__,
        "pydicom": pydicom.__version__,
    }


def _machine(device: str) -> dict[str, str]:
    import torch

    info = {"platform": platform.platform(), "CPUs": str(os.cpu_count()), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------------------------------
# Sections. Each takes the stages' outputs (stage name -> outputs) and the demo folder.


def _overview(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    exp = o["09-experiment"]
    return (
        f"<p>Preset <b>{_e(ctx['preset']['name'])}</b>, device {_e(ctx['device'])}, made {_e(ctx['created'])}. "
        "The whole pipeline ran on data the project made itself: phantom lateral spine radiographs written "
        "as DICOM files, converted, split by patient, a classifier, two conditional GANs (standard and with "
        "the spinegan plugin's classifier loss), their metrics, generated images per class, and the "
        "synthetic-learning experiment. Phantoms are not patients: these numbers show the pipeline "
        "working, not clinical performance.</p>"
        f"<p>Every stage's files are in this folder (one subfolder per stage); the experiment's tables are "
        f'<a href="{_e(_rel(exp["summary"], outdir))}">summary.csv</a> and '
        f'<a href="{_e(_rel(str(Path(exp["folder"]) / "results.md"), outdir))}">results.md</a>.</p>'
    )


def _data(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    ph, conv, sp = o["01-phantoms"], o["02-dataset"], o["03-split"]
    lesions = ", ".join(f"{k}: {v}" for k, v in ph["lesion_types"].items()) or "none"
    rows = [
        ("phantom films", ph["films"]),
        ("patients", ph["patients"]),
        ("abnormal films", f"{ph['abnormal_films']} ({ph['abnormal_films'] / max(ph['films'], 1):.0%})"),
        ("films per lesion type", lesions),
        ("conversion", ", ".join(f"{k}: {v}" for k, v in sorted(conv["statuses"].items()))),
        ("labelled images", conv["images"]),
        (
            "training set",
            f"{sp['train_patients']} patients; "
            + ", ".join(f"{k}: {v}" for k, v in sp["train_counts"].items()),
        ),
        (
            "test set",
            f"{sp['test_patients']} patients; "
            + ", ".join(f"{k}: {v}" for k, v in sp["test_counts"].items()),
        ),
        ("split", sp["method"] + "; no patient on both sides"),
    ]
    return _table(rows) + (
        f'<p class="note">DICOM files: <code>{_e(_rel(ph["dicom"], outdir))}</code>; findings: '
        f"<code>{_e(_rel(ph['annotations'], outdir))}</code>; conversion report: "
        f"<code>{_e(_rel(str(Path(conv['dataset']) / 'conversion_report.csv'), outdir))}</code>.</p>"
    )


def _samples(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    s = o["08-samples"]
    parts = [
        f'<p class="note">Generated images: seeds {s["seeds"][0]}-{s["seeds"][-1]} of each network (the same '
        "latents for both), the final snapshot, truncation 1. Real images: a random draw from the training set.</p>"
    ]
    for class_name, grids in s["grids"].items():
        parts.append(f"<h3>{_e(class_name)}</h3>")
        parts += [
            _figure(_rel(path, outdir), f"{class_name}: {source}", "pixels") for source, path in grids.items()
        ]
    return "".join(parts)


def _morph(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    s = o["08-samples"]
    src = _e(_rel(s["video"], outdir))
    return (
        f'<video src="{src}" controls loop muted playsinline preload="auto" width="384" '
        f'style="image-rendering: pixelated"></video>'
        f'<p class="note">{_e(s["video_network"])}, final snapshot: the same latents, the class label moving '
        f"{_e(' → '.join(s['video_classes']))} "
        f'(<a href="{src}">morph.mp4</a>).</p>'
    )


def _training(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    m = o["07-metrics"]
    rows = [(net, *(f"{v:.4g}" for v in values.values())) for net, values in m["final"].items()]
    header = ("network (final snapshot)", *next(iter(m["final"].values())).keys())
    return (
        _figure(_rel(m["losses_png"], outdir), "Generator and discriminator losses against kimg")
        + _figure(_rel(m["metrics_png"], outdir), "Metrics over training (class-balanced)")
        + _table(rows, header)
        + f'<p class="note">FID and KID of every snapshot (<code>train.py --metrics</code>), on the features of the '
        f"abnormality classifier ({_e(m['detector']['feature_dim'])} features), per class and averaged over the "
        "classes; small sample sizes make them noisy and biased upwards, so compare the runs only with each "
        "other. Computing them took "
        + ", ".join(f"{_e(v)} s of the {_e(k)} run" for k, v in m["seconds_in_training"].items())
        + ".</p>"
    )


def _classifier(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    c = o["04-classifier"]
    return (
        f"<p>Architecture <code>small</code>, trained on the real training set (validation: a grouped split of "
        f"it; best epoch {c['best_epoch']}, validation AUC {c['validation_auc']:.3f}). "
        f"Test AUC <b>{_e(_auc(c['test_auc']))}</b>. It is the spinegan plugin's classifier and the "
        "metrics' feature extractor.</p>"
        + _figure(_rel(c["roc"], outdir), "ROC of the classifier on the real test set")
    )


def _experiment(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    import pandas as pd

    from classification.experiment import display_summary

    e = o["09-experiment"]
    table = display_summary(pd.read_csv(e["summary"])).to_html(index=False, escape=True, border=0, na_rep="")
    return (
        "<p>Classifiers trained on real images only, on generated images only, and on both, at several "
        "numbers of generated images per class and several seeds; every one is scored on the same real "
        "test set. AUC with a stratified bootstrap 95% interval; DeLong: paired test against the real-only "
        "model of the same seed.</p>" + table + _figure(_rel(e["roc"], outdir), "ROC curves, mean over seeds")
    )


def _runtime(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    markers = ctx["markers"]
    total = sum(m["seconds"] for m in markers)
    rows = [
        (
            m["stage"],
            m["title"],
            f"{m['seconds']:.1f}",
            f"{m['seconds'] / total:.0%}" if total else "",
            f"{m['cpu_seconds']:.1f}",
            f"{m['load_average']:.1f}",
        )
        for m in markers
    ]
    rows.append(("", "total", f"{total:.1f}", "100%", f"{sum(m['cpu_seconds'] for m in markers):.1f}", ""))
    header = ("stage", "", "wall seconds", "share", "CPU seconds", "load average")
    return _table(rows, header) + (
        f'<p class="note">Wall-clock and CPU seconds (user + system, this process and its commands) of each '
        f"stage as it ran, on {os.cpu_count()} CPUs; the load average (1 minute, at the stage's end) shows how "
        "busy the machine was: above the number of CPUs, other work slowed the demo down. Stages resumed from "
        "an earlier run keep their first figures; the report stage itself is not included.</p>"
    )


def _settings(o: dict[str, Any], outdir: Path, ctx: dict[str, Any]) -> str:
    preset = _table([(k, json.dumps(v)) for k, v in ctx["preset"].items()], ("preset", "value"))
    versions = _table(list(_versions().items()), ("software", "version"))
    machine = _table(list(_machine(ctx["device"]).items()), ("machine", ""))
    return preset + versions + machine


_RENDERERS = {
    "overview": _overview,
    "data": _data,
    "samples": _samples,
    "morph": _morph,
    "training": _training,
    "classifier": _classifier,
    "experiment": _experiment,
    "runtime": _runtime,
    "settings": _settings,
}


def render_report(outputs: dict[str, Any], outdir: Path, context: dict[str, Any]) -> str:
    """The page. ``outputs``: stage name -> the outputs its marker records; ``context``: ``preset``
    (dict), ``device``, ``created``, ``markers`` (the finished stages' markers, in order)."""
    nav = " ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{_RENDERERS[sid](outputs, outdir, context)}</section>'
        for sid, title in SECTIONS
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>SpineGAN demo report</title><style>{_STYLE}</style></head><body>"
        f"<h1>SpineGAN demo report</h1><nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(demo: Any) -> Path:
    """Write ``demo.outdir/report.html`` from the finished stages' markers; returns its path."""
    from showcase.stages import MARKER, REPORT, STAGES

    markers = []
    for stage in STAGES:
        marker = demo.folder(stage.name) / MARKER
        if marker.is_file():
            markers.append(json.loads(marker.read_text(encoding="utf-8")))
    outputs = {m["stage"]: m["outputs"] for m in markers}
    context = {
        "preset": demo.preset.as_dict(),
        "device": demo.device,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "markers": markers,
    }
    text = render_report(outputs, demo.outdir, context)
    path = demo.outdir / REPORT
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
