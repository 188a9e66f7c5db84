"""A deterministic cohort of synthetic lateral lumbar spine radiographs, as DICOM files plus findings.

``python -m data_processing phantoms --out DIR --count N --seed S [--abnormal-fraction 0.39]
[--severity 1.0] [--overwrite]`` writes::

    DIR/dicom/<image_id>.dcm   one DICOM file per film (CR or DX, see data_processing.phantom_dicom)
    DIR/annotations.csv        VinDr-SpineXR-style findings: image_id, patient_id, study_id, series_id,
                               lesion_type, site, xmin, ymin, xmax, ymax; one row per box, and one
                               "No finding" row (empty box) per normal film
    DIR/phantoms.json          the settings and, per film, its patient, study, device, encoding and lesions

so that ``python -m data_processing convert --dicom DIR/dicom --labels DIR/annotations.csv ...`` turns
it into a labelled training folder (abnormal iff the film has a lesion).

**The cohort.** Patients are drawn one after another until ``count`` films exist. Each patient gets a
spine (:func:`data_processing.phantom_anatomy.sample_spine`) and 1-4 studies (months to years apart)
of one film each, or two (a repeat) in 15% of studies. A patient is abnormal with a probability that
keeps the running share of abnormal films close to ``abnormal_fraction`` (VinDr-SpineXR: 1,470 of
3,773 = 39%), so small cohorts have the intended prevalence too; an abnormal patient has 1-3 lesion
types (:func:`~data_processing.phantom_anatomy.sample_lesions`, magnitudes scaled by ``severity``)
in every study, worsening by 10% per study. Every study is taken on one
of the :data:`~data_processing.phantom_dicom.DEVICES` (chosen by their weights), which fixes the
film's size and encoding; positioning, exposure, gas, noise and blur change per film. About 84% of
the films carry a window (the display range of 0.5..99.8% of the film's pixels, widened by up to 3%
at each end).

**Determinism.** Patient ``p`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, 0, p])``,
its abnormality from ``default_rng([s, 1, p])`` and the noise of its films from
``default_rng([s, 2, p, study, film])``; UIDs are ``2.25`` UIDs of name-based UUIDs
(``uuid.uuid5``) of the seed and position, dates are fixed
offsets from 2015-01-01. So the same settings give byte-identical files (with the same library
versions), and a smaller ``count`` gives a prefix of a larger one.

**Writing.** The cohort is built in a hidden ``.DIR.partial-*`` folder beside ``DIR`` and renamed
into place when complete, so ``DIR`` is either absent or whole. If ``DIR`` already holds a cohort
with the same settings, nothing is done (a re-run resumes at no cost); a cohort with other settings
is replaced only with ``overwrite``; any other non-empty folder is refused (never deleted).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import secrets
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import click
import numpy as np

from data_processing import phantom_anatomy as anatomy
from data_processing.phantom_dicom import DEVICES, Device, Identity, dicom_bytes, encode_film

__all__ = [
    "ANNOTATIONS_NAME",
    "DICOM_FOLDER",
    "MANIFEST_NAME",
    "PHANTOM_VERSION",
    "PhantomError",
    "PhantomSettings",
    "PlannedFilm",
    "make_film",
    "phantoms_command",
    "plan_cohort",
    "write_cohort",
]

#: Bumped whenever the same settings would produce different files.
PHANTOM_VERSION = 1
DICOM_FOLDER = "dicom"
ANNOTATIONS_NAME = "annotations.csv"
MANIFEST_NAME = "phantoms.json"
ANNOTATION_COLUMNS = (
    "image_id",
    "patient_id",
    "study_id",
    "series_id",
    "lesion_type",
    "site",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
)
_EPOCH = _dt.date(2015, 1, 1)


class PhantomError(ValueError):
    """Bad settings or an output folder that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class PhantomSettings:
    """What a cohort is made of. ``severity`` scales every lesion's magnitude (1 = the documented
    ranges; smaller is subtler, 0 < severity <= 3)."""

    count: int
    seed: int = 0
    abnormal_fraction: float = 0.39
    severity: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise PhantomError(f"count must be a positive integer, not {self.count!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise PhantomError(f"seed must be an integer in [0, 2**63), not {self.seed!r}")
        if not 0.0 <= self.abnormal_fraction <= 1.0:
            raise PhantomError(f"abnormal fraction must be in [0, 1], not {self.abnormal_fraction!r}")
        if not 0.0 < self.severity <= 3.0:
            raise PhantomError(f"severity must be in (0, 3], not {self.severity!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlannedFilm:
    """One film of the cohort, fully determined (render it with :func:`make_film`)."""

    image_id: str
    identity: Identity
    device: Device
    spine: anatomy.Spine  # with this study's lesions applied
    view: anatomy.View
    window_padding: tuple[float, float] | None  # widening of the window at each end; None: no window
    noise_key: tuple[int, ...]  # entropy of the film's noise generator

    @property
    def abnormal(self) -> bool:
        return bool(self.spine.lesions)


def _uid(seed: int, *parts: object) -> str:
    """A ``2.25`` UID from a name-based (SHA-1, version 5) UUID of the seed and ``parts``: deterministic."""
    name = "/".join(["spine-phantom", str(PHANTOM_VERSION), str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def _patient(settings: PhantomSettings, p: int, films_before: int, abnormal_before: int) -> list[PlannedFilm]:
    """The films of patient ``p``, in study order, given how many films (and abnormal ones) came before.

    Whether the patient has lesions is drawn so that the running share of abnormal films tracks
    ``abnormal_fraction``: with probability ``clip(deficit / n, 0, 1)``, where ``n`` is the patient's
    number of films and ``deficit`` the number of abnormal films the cohort would need after them.
    """
    seed = settings.seed
    rng = np.random.default_rng([seed, 0, p])
    spine = anatomy.sample_spine(rng)
    n_studies = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    films_per_study = [2 if rng.random() < 0.15 else 1 for _ in range(n_studies)]
    n = sum(films_per_study)
    deficit = settings.abnormal_fraction * (films_before + n) - abnormal_before
    abnormal = np.random.default_rng([seed, 1, p]).random() < np.clip(deficit / n, 0.0, 1.0)
    lesions = anatomy.sample_lesions(rng, settings.severity) if abnormal else ()
    patient_id = f"PH{seed}-{p:05d}"
    sex = "F" if rng.random() < 0.55 else "M"
    birth = _EPOCH - _dt.timedelta(days=int(rng.integers(25 * 365, 85 * 365)))
    day = int(rng.integers(0, 5 * 365))
    weights = np.array([d.weight for d in DEVICES])
    films: list[PlannedFilm] = []
    for study, n_films in enumerate(films_per_study):
        device = DEVICES[int(rng.choice(len(DEVICES), p=weights / weights.sum()))]
        study_spine = anatomy.with_lesions(spine, [anatomy.worsened(x, 1 + 0.1 * study) for x in lesions])
        study_identity = Identity(
            patient_id=patient_id,
            patient_name=f"PHANTOM^{p:05d}",
            patient_sex=sex,
            birth_date=birth.strftime("%Y%m%d"),
            study_uid=_uid(seed, p, study),
            series_uid=_uid(seed, p, study, "series"),
            sop_uid="",
            study_date=(_EPOCH + _dt.timedelta(days=day)).strftime("%Y%m%d"),
            study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
            accession=f"A{seed}{p:05d}{study + 1}",
            study_id=str(study + 1),
            series_number=1,
            instance_number=0,
            facing_right=False,
        )
        for film in range(n_films):
            window = (float(rng.uniform(0, 0.03)), float(rng.uniform(0, 0.03))) if device.window else None
            view = anatomy.sample_view(rng, device.rows, device.cols)
            identity = replace(
                study_identity,
                sop_uid=_uid(seed, p, study, film),
                instance_number=film + 1,
                facing_right=view.facing_right,
            )
            films.append(
                PlannedFilm(
                    image_id=f"{patient_id}-{study + 1}-{film + 1}",
                    identity=identity,
                    device=device,
                    spine=study_spine,
                    view=view,
                    window_padding=window,
                    noise_key=(seed, 2, p, study, film),
                )
            )
        day += int(rng.integers(60, 3 * 365))
    return films


def plan_cohort(settings: PhantomSettings) -> list[PlannedFilm]:
    """The ``settings.count`` films of the cohort, patient by patient (the last patient may be cut short)."""
    films: list[PlannedFilm] = []
    abnormal, p = 0, 0
    while len(films) < settings.count:
        patient = _patient(settings, p, len(films), abnormal)
        films.extend(patient)
        abnormal += sum(f.abnormal for f in patient)
        p += 1
    return films[: settings.count]


def make_film(planned: PlannedFilm) -> tuple[bytes, anatomy.Film, tuple[float, float] | None]:
    """Render and encode one film: (DICOM file bytes, the film, the display window written or None)."""
    film = anatomy.render_film(planned.spine, planned.view, np.random.default_rng(list(planned.noise_key)))
    window = None
    if planned.window_padding is not None:
        sample = film.image[::4, ::4]
        lo, hi = np.quantile(sample, [0.005, 0.998])
        window = (
            max(0.0, float(lo) - planned.window_padding[0]),
            min(1.0, float(hi) + planned.window_padding[1]),
        )
    ds = encode_film(film.image, planned.device, planned.identity, window)
    return dicom_bytes(ds), film, window


def _annotation_rows(planned: PlannedFilm, film: anatomy.Film) -> list[list[str]]:
    ident = planned.identity
    key = [planned.image_id, ident.patient_id, ident.study_uid, ident.series_uid]
    if not film.findings:
        return [key + [anatomy.NO_FINDING, "", "", "", "", ""]]
    return [key + [f.lesion_type, f.site] + [f"{v:.1f}" for v in f.box] for f in film.findings]


def _record(planned: PlannedFilm, film: anatomy.Film, window: tuple[float, float] | None) -> dict[str, Any]:
    d, ident = planned.device, planned.identity
    return {
        "image_id": planned.image_id,
        "file": f"{DICOM_FOLDER}/{planned.image_id}.dcm",
        "label": int(planned.abnormal),
        "patient_id": ident.patient_id,
        "study_uid": ident.study_uid,
        "series_uid": ident.series_uid,
        "sop_uid": ident.sop_uid,
        "study_date": ident.study_date,
        "device": d.name,
        "modality": d.modality,
        "photometric": d.photometric,
        "bits_stored": d.bits_stored,
        "signed": d.signed,
        "rescale": list(d.rescale) if d.rescale else None,
        "window": [round(window[0], 4), round(window[1], 4)] if window else None,
        "transfer_syntax": str(d.transfer_syntax),
        "rows": d.rows,
        "cols": d.cols,
        "facing_right": planned.view.facing_right,
        "findings": [
            {
                "lesion_type": f.lesion_type,
                "site": f.site,
                "magnitude": round(f.magnitude, 4),
                "box": list(f.box),
            }
            for f in film.findings
        ],
    }


def _check_out(out: str, settings: PhantomSettings, overwrite: bool) -> bool:
    """True if ``out`` already holds this very cohort; raise if it cannot be (re)written."""
    if not os.path.exists(out):
        return False
    if not os.path.isdir(out):
        raise PhantomError(f"{out}: exists and is not a folder")
    entries = os.listdir(out)
    if not entries:
        return False
    manifest = os.path.join(out, MANIFEST_NAME)
    try:
        with open(manifest, encoding="utf-8") as fh:
            previous = json.load(fh)
    except FileNotFoundError:
        raise PhantomError(
            f"{out}: the folder is not empty and holds no phantom cohort ({MANIFEST_NAME}); choose a new or "
            "empty folder (nothing there is deleted)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PhantomError(f"{manifest}: cannot read the previous cohort's manifest: {exc}") from None
    same = previous.get("version") == PHANTOM_VERSION and previous.get("settings") == settings.as_dict()
    if same:
        return True
    if not overwrite:
        raise PhantomError(
            f"{out}: holds a phantom cohort made with other settings ({previous.get('settings')}, version "
            f"{previous.get('version')}); pass --overwrite to replace it, or choose another folder"
        )
    return False


def write_cohort(
    out: str | os.PathLike[str],
    settings: PhantomSettings,
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write the cohort into ``out`` (see the module docstring); return its manifest.

    ``progress(n)`` is called after each film. Raises :class:`PhantomError` for an unusable folder.
    """
    out = os.path.abspath(os.fspath(out))
    if _check_out(out, settings, overwrite):
        with open(os.path.join(out, MANIFEST_NAME), encoding="utf-8") as fh:
            manifest = json.load(fh)
        manifest["reused"] = True
        return manifest
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.partial-{secrets.token_hex(4)}")
    os.makedirs(os.path.join(staging, DICOM_FOLDER))
    try:
        manifest = _write_into(staging, settings, progress)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write_into(
    folder: str, settings: PhantomSettings, progress: Callable[[int], None] | None
) -> dict[str, Any]:
    rows: list[list[str]] = []
    records = []
    for planned in plan_cohort(settings):
        data, film, window = make_film(planned)
        with open(os.path.join(folder, DICOM_FOLDER, f"{planned.image_id}.dcm"), "wb") as fh:
            fh.write(data)
        rows.extend(_annotation_rows(planned, film))
        records.append(_record(planned, film, window))
        if progress is not None:
            progress(1)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(ANNOTATION_COLUMNS)
    writer.writerows(rows)
    with open(os.path.join(folder, ANNOTATIONS_NAME), "w", encoding="utf-8", newline="") as fh:
        fh.write(text.getvalue())
    abnormal = sum(r["label"] for r in records)
    manifest = {
        "format": "spine-phantom-cohort",
        "version": PHANTOM_VERSION,
        "settings": settings.as_dict(),
        "counts": {
            "films": len(records),
            "abnormal": abnormal,
            "normal": len(records) - abnormal,
            "patients": len({r["patient_id"] for r in records}),
            "studies": len({r["study_uid"] for r in records}),
        },
        "dicom_folder": DICOM_FOLDER,
        "annotations": ANNOTATIONS_NAME,
        "images": records,
    }
    with open(os.path.join(folder, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _move_into_place(staging: str, out: str) -> None:
    """Rename the finished ``staging`` folder to ``out``, replacing an empty folder or an old cohort."""
    if os.path.isdir(out) and os.listdir(out):  # an old cohort (checked by _check_out): swap, then delete
        parent, name = os.path.split(out)
        old = os.path.join(parent, f".{name}.old-{secrets.token_hex(4)}")
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


@click.command("phantoms")
@click.option(
    "--out", "out", required=True, type=click.Path(), help="Output folder (created; see docs/phantoms.md)."
)
@click.option("--count", type=click.IntRange(min=1), default=200, show_default=True, help="Number of films.")
@click.option(
    "--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True, help="Cohort seed."
)
@click.option(
    "--abnormal-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.39,
    show_default=True,
    help="Share of abnormal films (VinDr-SpineXR: 39%).",
)
@click.option(
    "--severity",
    type=click.FloatRange(0.0, 3.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Scales every lesion's magnitude (smaller = subtler = harder to classify).",
)
@click.option("--overwrite", is_flag=True, help="Replace a phantom cohort made with other settings.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def phantoms_command(
    out: str,
    count: int,
    seed: int,
    abnormal_fraction: float,
    severity: float,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Write a deterministic cohort of synthetic lateral lumbar spine radiographs (DICOM) + findings CSV."""
    from tqdm import tqdm

    try:
        settings = PhantomSettings(
            count=count, seed=seed, abnormal_fraction=abnormal_fraction, severity=severity
        )
        with tqdm(total=count, unit="film", desc="Phantoms", disable=no_progress, file=sys.stderr) as bar:
            manifest = write_cohort(out, settings, overwrite=overwrite, progress=bar.update)
    except PhantomError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write the cohort: {exc}") from None
    counts = manifest["counts"]
    verb = "Already complete:" if manifest.get("reused") else "Wrote"
    click.echo(
        f"{verb} {counts['films']} films ({counts['abnormal']} abnormal, "
        f"{100 * counts['abnormal'] / counts['films']:.1f}%) of {counts['patients']} patients, "
        f"{counts['studies']} studies in {out}: {DICOM_FOLDER}/, {ANNOTATIONS_NAME}, {MANIFEST_NAME}"
    )
