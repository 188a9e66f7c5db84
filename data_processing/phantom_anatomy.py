"""Synthetic lateral lumbar spine radiographs ("phantoms"): anatomy, lesions and the rendered film.

This module knows nothing of DICOM. It turns a patient's spine (:class:`Spine`, sampled by
:func:`sample_spine`) and one acquisition (:class:`View`, sampled by :func:`sample_view`) into a
:class:`Film`: a display image, float32 ``[rows, cols]`` in [0, 1] with 0 black and bone bright (the
MONOCHROME2 convention), and the bounding box of every finding in pixels of that image.
:mod:`data_processing.phantom_dicom` encodes films as DICOM; :mod:`data_processing.phantoms` samples
whole cohorts.

**Anatomy.** Ten levels, bottom to top :data:`LEVEL_NAMES` (S1, the sacrum, then L5 ... T9), and the
nine discs between them (disc ``k`` lies between level ``k`` and level ``k + 1``, so disc 0 is
L5/S1). Lengths are relative: body heights in units of the patient's mean body height ``h``, AP
depths in units of ``h`` too, spur lengths and slips in units of the body's depth. The column
follows a circular arc (lumbar lordosis): going up from the top of S1 its axis leans anteriorly by
``lordosis`` degrees and turns back by ``curvature`` degrees per ``h`` of arc, so the discs come out
wedge-shaped (taller anteriorly) as in real films. Each body is a quadrilateral with concave
endplates, a cortical rim and a textured (trabecular) interior, with its posterior elements (pedicle
and lamina, spinous process) behind it; the sacrum is a tilted wedge. Normal anatomy varies: body
size, aspect and density, disc heights (about ±10% per disc, thinner in the thoracic spine), natural
anterior wedging up to 12% at T11-L1, small alignment offsets, and in about 40% of patients tiny
corner lipping below the osteophyte range.

**Lesions** (VinDr-SpineXR lesion types). An abnormal patient has 1, 2 or 3 lesion types (40/40/20%;
osteophytes 35%, disc space narrowing 30%, spondylolisthesis 20%, collapse 15% of the draws), each at
one or more sites. Each lesion's magnitude is the cohort's ``severity`` times a draw from the range
below, skewed towards its low end (Beta(1.2, 2.2)); one lesion in four is *mild* instead, drawn from
0.4..1 times the low end, where it overlaps normal variation:

* ``Vertebral collapse``: a body loses height -- anteriorly (wedge, 70%), centrally (biconcave, 20%)
  or uniformly (crush, 10%) -- by ``severity * (0.30 .. 0.80)`` (at most 0.85); one body, T12 to L4.
* ``Disc space narrowing``: 1-3 discs lose ``severity * (0.45 .. 0.90)`` of their height (at most
  0.9); a disc that loses more than 0.4 gets sclerotic (bright) endplates; L1/L2 to L5/S1.
* ``Osteophytes``: bony spurs at the anterior corners of 1-4 bodies, ``severity * (0.20 .. 0.60)`` of
  the body's depth long (at most 0.7; normal lipping stays below 0.06); L1 to L5, one finding per body.
* ``Spondylolysthesis``: a body (and the column above it) slips anteriorly by
  ``severity * (0.15 .. 0.45)`` of its depth (at most 0.5) over the body below; L3 to L5.

**Confounders** that make the task hard for a classifier: mild lesions overlap the normal variation,
bowel gas shadows and the iliac crest overlap the column, the diaphragm may darken the top, the
patient faces left or right, the column tilts, a lead marker is burned in, and exposure, film noise
and blur vary per film.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from data_processing.labels import NO_FINDING

__all__ = [
    "COLLAPSE",
    "Film",
    "Finding",
    "LESION_TYPES",
    "LEVEL_NAMES",
    "Lesion",
    "NARROWING",
    "NO_FINDING",
    "OSTEOPHYTES",
    "SLIP",
    "Spine",
    "View",
    "render_film",
    "sample_lesions",
    "sample_spine",
    "sample_view",
    "with_lesions",
    "worsened",
]

LEVEL_NAMES: tuple[str, ...] = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9")
COLLAPSE = "Vertebral collapse"
NARROWING = "Disc space narrowing"
OSTEOPHYTES = "Osteophytes"
SLIP = "Spondylolysthesis"  # VinDr-SpineXR's spelling
#: The lesion types phantoms carry, with how often an abnormal patient's lesion is of each type.
LESION_TYPES: dict[str, float] = {OSTEOPHYTES: 0.35, NARROWING: 0.30, SLIP: 0.20, COLLAPSE: 0.15}
#: The largest magnitude of each lesion type (height loss, spur length or slip, as a fraction).
_CAP = {COLLAPSE: 0.85, NARROWING: 0.9, OSTEOPHYTES: 0.7, SLIP: 0.5}

_RIM = 0.07  # cortical rim thickness / body depth
_TRABECULAR = 0.55  # trabecular density relative to the cortex
_TILE = 64  # texture tile side, pixels
_MILD = 0.25  # share of lesions drawn below the usual range
#: Mean body height per level (S1 .. T9), relative: lumbar bodies grow downwards, thoracic ones are smaller.
_BODY_SIZE = (1.0, 1.02, 1.008, 0.996, 0.984, 0.972, 0.89, 0.88, 0.87, 0.86)


def disc_name(k: int) -> str:
    """``'L5/S1'`` for disc 0, ``'L4/L5'`` for disc 1, ..."""
    return f"{LEVEL_NAMES[k + 1]}/{LEVEL_NAMES[k]}"


# --------------------------------------------------------------------------------------------------
# The patient.


@dataclass(frozen=True)
class Body:
    """One vertebral body (levels 1..9; level 0, the sacrum, uses only ``depth``).

    Heights in units of the patient's mean body height ``h``; ``depth`` (AP) in ``h`` too; spurs and
    ``slip`` in units of this body's depth; ``offset`` is a normal AP misalignment (depth units).
    """

    anterior: float
    posterior: float
    depth: float
    concavity: float = 0.0
    spur_superior: float = 0.0
    spur_inferior: float = 0.0
    slip: float = 0.0
    offset: float = 0.0
    sclerosis_superior: bool = False
    sclerosis_inferior: bool = False
    density: float = 1.0  # relative to the patient's bone density (collapsed bodies are denser)


@dataclass(frozen=True)
class Lesion:
    """A lesion to draw: ``kind`` (a VinDr lesion type), ``index`` (the level, or the disc for narrowing),
    ``magnitude`` (see the module docstring: height loss, spur length or slip, as a fraction) and
    ``variant`` (collapse: wedge/biconcave/crush; osteophytes: superior/inferior/both)."""

    kind: str
    index: int
    magnitude: float
    variant: str = ""

    @property
    def site(self) -> str:
        return disc_name(self.index) if self.kind == NARROWING else LEVEL_NAMES[self.index]


@dataclass(frozen=True)
class Spine:
    """A patient's spine: ``bodies`` [10] (index 0 = S1), ``discs`` [9] heights / h, the lordosis (degrees
    at S1 and degrees of turn per h of arc), bone ``density`` (0.5..1) and the ``lesions`` applied."""

    bodies: tuple[Body, ...]
    discs: tuple[float, ...]
    lordosis: float
    curvature: float
    density: float
    lesions: tuple[Lesion, ...] = ()


def sample_spine(rng: np.random.Generator) -> Spine:
    """A normal spine with natural variation (see the module docstring)."""
    aspect = rng.uniform(1.3, 1.6)  # body depth / height
    bodies = [Body(anterior=1.0, posterior=1.0, depth=aspect * 1.1)]  # the sacrum
    for level in range(1, len(LEVEL_NAMES)):
        size = _BODY_SIZE[level] * rng.normal(1, 0.03)
        wedge = rng.uniform(0.0, 0.12) if 5 <= level <= 7 else rng.uniform(-0.03, 0.06)
        bodies.append(
            Body(
                anterior=size * (1 - wedge),
                posterior=size,
                depth=aspect * size * rng.normal(1, 0.03),
                concavity=rng.uniform(0.0, 0.05),
                offset=rng.normal(0, 0.015),
            )
        )
    if rng.random() < 0.4:  # harmless marginal lipping, below the osteophyte range
        for level in rng.choice(np.arange(1, 6), size=rng.integers(1, 3), replace=False):
            corner = "spur_superior" if rng.random() < 0.5 else "spur_inferior"
            bodies[level] = replace(bodies[level], **{corner: rng.uniform(0.02, 0.06)})
    ratio = rng.uniform(0.26, 0.40)  # disc height / body height
    disc_factor = (0.95, 1.1, 1.05, 1.0, 0.95, 0.85, 0.7, 0.65, 0.6)  # L5/S1 ... T10/T9
    discs = tuple(float(ratio * f * np.clip(rng.normal(1, 0.1), 0.75, 1.25)) for f in disc_factor)
    return Spine(
        bodies=tuple(bodies),
        discs=discs,
        lordosis=rng.uniform(14.0, 32.0),
        curvature=rng.uniform(4.0, 7.0),
        density=rng.uniform(0.55, 1.0),
    )


def _magnitude(rng: np.random.Generator, severity: float, low: float, span: float, cap: float) -> float:
    """``severity * (low + span * u)`` with u ~ Beta(1.2, 2.2) (skewed to small), but a mild lesion (one in
    four) gets ``severity * low * U(0.4, 1)``: below the usual range, close to normal variation."""
    if rng.random() < _MILD:
        return float(min(cap, severity * low * rng.uniform(0.4, 1.0)))
    return float(min(cap, severity * (low + span * rng.beta(1.2, 2.2))))


def sample_lesions(rng: np.random.Generator, severity: float) -> tuple[Lesion, ...]:
    """The lesions of an abnormal patient: 1-3 lesion types (40/40/20%), each at one or more sites."""
    kinds = list(LESION_TYPES)
    weights = np.array([LESION_TYPES[k] for k in kinds])
    n_types = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    chosen = rng.choice(len(kinds), size=n_types, replace=False, p=weights / weights.sum())
    lesions: list[Lesion] = []
    for kind in sorted(kinds[i] for i in chosen):
        if kind == COLLAPSE:
            level = int(rng.choice([6, 5, 4, 3, 2], p=[0.35, 0.3, 0.15, 0.1, 0.1]))  # T12 .. L4
            variant = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.7, 0.2, 0.1]))
            lesions.append(Lesion(kind, level, _magnitude(rng, severity, 0.3, 0.5, _CAP[kind]), variant))
        elif kind == NARROWING:
            count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
            for disc in rng.choice(5, size=count, replace=False, p=[0.3, 0.35, 0.2, 0.1, 0.05]):
                lesions.append(Lesion(kind, int(disc), _magnitude(rng, severity, 0.45, 0.45, _CAP[kind])))
        elif kind == OSTEOPHYTES:
            count = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15]))
            for level in rng.choice(np.arange(1, 6), size=count, replace=False, p=[0.3, 0.3, 0.2, 0.1, 0.1]):
                variant = str(rng.choice(["superior", "inferior", "both"], p=[0.35, 0.35, 0.3]))
                lesions.append(
                    Lesion(kind, int(level), _magnitude(rng, severity, 0.2, 0.4, _CAP[kind]), variant)
                )
        else:  # SLIP
            level = int(rng.choice([2, 1, 3], p=[0.55, 0.35, 0.1]))  # L4, L5, L3
            lesions.append(Lesion(kind, level, _magnitude(rng, severity, 0.15, 0.3, _CAP[kind])))
    return tuple(lesions)


def worsened(lesion: Lesion, factor: float) -> Lesion:
    """``lesion`` with its magnitude multiplied by ``factor`` (within the type's maximum)."""
    return replace(lesion, magnitude=min(_CAP[lesion.kind], lesion.magnitude * factor))


def with_lesions(spine: Spine, lesions: Sequence[Lesion]) -> Spine:
    """``spine`` with ``lesions`` applied to its bodies and discs (the normal anatomy is kept otherwise)."""
    bodies, discs = list(spine.bodies), list(spine.discs)
    for lesion in lesions:
        m = lesion.magnitude
        if lesion.kind == COLLAPSE:
            b = bodies[lesion.index]
            if lesion.variant == "wedge":
                b = replace(b, anterior=min(b.anterior, b.posterior * (1 - m)))
            elif lesion.variant == "biconcave":
                b = replace(
                    b, concavity=b.concavity + 0.5 * m * b.posterior, anterior=b.anterior * (1 - 0.2 * m)
                )
            else:
                b = replace(b, anterior=b.anterior * (1 - m), posterior=b.posterior * (1 - 0.8 * m))
            bodies[lesion.index] = replace(b, density=1.0 + 0.4 * m)  # compacted trabeculae
        elif lesion.kind == NARROWING:
            k = lesion.index
            discs[k] *= 1 - m
            if m > 0.4:  # sclerotic endplates on both sides of a badly narrowed disc
                bodies[k + 1] = replace(bodies[k + 1], sclerosis_inferior=True)
                if k > 0:
                    bodies[k] = replace(bodies[k], sclerosis_superior=True)
        elif lesion.kind == OSTEOPHYTES:
            b = bodies[lesion.index]
            if lesion.variant in ("superior", "both"):
                b = replace(b, spur_superior=max(b.spur_superior, m))
            if lesion.variant in ("inferior", "both"):
                b = replace(b, spur_inferior=max(b.spur_inferior, m))
            bodies[lesion.index] = b
        elif lesion.kind == SLIP:
            bodies[lesion.index] = replace(bodies[lesion.index], slip=m)
        else:
            raise ValueError(f"unknown lesion type {lesion.kind!r}")
    return replace(spine, bodies=tuple(bodies), discs=tuple(discs), lesions=spine.lesions + tuple(lesions))


# --------------------------------------------------------------------------------------------------
# The acquisition.


@dataclass(frozen=True)
class View:
    """One film of a spine: size, positioning, exposure and artefacts (fractions of the image size)."""

    rows: int
    cols: int
    body_height: float  # mean body height / rows
    sacrum_y: float  # top of S1 / rows
    column_x: float  # body centres' AP position / cols, measured from the anterior edge
    tilt: float  # degrees, added to the lordosis
    facing_right: bool  # anterior on the right (the film is mirrored)
    soft: float  # soft-tissue weight in the attenuation
    bone: float  # bone weight
    gamma: float  # film contrast curve
    blur: float  # system blur, pixels (Gaussian sigma)
    noise: float  # film noise, display units (standard deviation)
    gas: tuple[tuple[float, float, float, float, float], ...]  # (x, y, rx, ry, strength) bowel gas
    iliac_crest: bool
    diaphragm: float  # 0 = none; else the dome's height / rows at the anterior edge
    marker: int  # lead marker corner: 0..3 (top-left, top-right, bottom-left, bottom-right)


def sample_view(rng: np.random.Generator, rows: int, cols: int) -> View:
    """A plausible positioning and exposure for a ``rows`` x ``cols`` film."""
    n_gas = int(rng.choice([0, 1, 2, 3, 4], p=[0.2, 0.25, 0.25, 0.2, 0.1]))
    gas = tuple(
        (
            float(rng.uniform(0.05, 0.55)),
            float(rng.uniform(0.05, 0.95)),
            float(rng.uniform(0.02, 0.09)),
            float(rng.uniform(0.02, 0.07)),
            float(rng.uniform(0.15, 0.5)),
        )
        for _ in range(n_gas)
    )
    return View(
        rows=rows,
        cols=cols,
        body_height=float(rng.uniform(0.074, 0.092)),
        sacrum_y=float(rng.uniform(0.80, 0.90)),
        column_x=float(rng.uniform(0.42, 0.58)),
        tilt=float(rng.normal(0, 3.0)),
        facing_right=bool(rng.random() < 0.5),
        soft=float(rng.uniform(0.35, 0.55)),
        bone=float(rng.uniform(0.40, 0.60)),
        gamma=float(rng.uniform(0.8, 1.25)),
        blur=float(rng.uniform(0.6, 1.5)),
        noise=float(rng.uniform(0.008, 0.035)),
        gas=gas,
        iliac_crest=bool(rng.random() < 0.7),
        diaphragm=float(rng.uniform(0.05, 0.2)) if rng.random() < 0.4 else 0.0,
        marker=int(rng.integers(0, 4)),
    )


# --------------------------------------------------------------------------------------------------
# Rendering.


@dataclass(frozen=True)
class Finding:
    """A finding on a film: ``lesion_type``, ``site`` (e.g. ``'L3'``, ``'L4/L5'``) and ``box``
    (xmin, ymin, xmax, ymax) in pixels of the film, continuous coordinates (pixel ``i`` spans i..i+1)."""

    lesion_type: str
    site: str
    magnitude: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Film:
    """``image`` float32 [rows, cols] in [0, 1] (0 black, bone bright) and its ``findings``."""

    image: np.ndarray
    findings: tuple[Finding, ...]


def _ramp(d: np.ndarray) -> np.ndarray:
    """Anti-aliased inside test: signed distance (pixels, > 0 inside) -> coverage in [0, 1] (in place)."""
    d += 0.5
    return np.clip(d, 0.0, 1.0, out=d)


@dataclass(frozen=True)
class _Frame:
    """A local frame: origin ``(x, y)`` in pixels, ``ant`` the anterior unit vector, ``up`` the cranial one."""

    x: float
    y: float
    ant: tuple[float, float]
    up: tuple[float, float]

    def point(self, a: float, b: float) -> tuple[float, float]:
        """Image coordinates of local (a anterior, b up)."""
        return (self.x + a * self.ant[0] + b * self.up[0], self.y + a * self.ant[1] + b * self.up[1])

    def grid(self, shape: tuple[int, int], local: Sequence[tuple[float, float]]):
        """(rows slice, cols slice, a, b) over the film pixels around the local points ``local``, with
        ``a``, ``b`` float32 local coordinates of the pixel centres; None if that is off the film."""
        p = np.array([self.point(a, b) for a, b in local])
        rows, cols = shape
        x0, y0 = np.floor(p.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(p.max(axis=0)).astype(int) + 2
        x0, x1, y0, y1 = max(0, x0), min(cols, x1), max(0, y0), min(rows, y1)
        if x0 >= x1 or y0 >= y1:
            return None
        dx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - self.x))[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - self.y))[:, None]
        a = dx * np.float32(self.ant[0]) + dy * np.float32(self.ant[1])  # [h, w]
        b = dx * np.float32(self.up[0]) + dy * np.float32(self.up[1])
        return slice(y0, y1), slice(x0, x1), a, b


def _frame(x: float, y: float, angle_deg: float) -> _Frame:
    """Frame whose cranial axis leans anteriorly (towards -x) by ``angle_deg``."""
    t = np.deg2rad(angle_deg)
    return _Frame(x, y, ant=(-float(np.cos(t)), float(np.sin(t))), up=(-float(np.sin(t)), -float(np.cos(t))))


def _polygon(a: np.ndarray, b: np.ndarray, vertices: Sequence[tuple[float, float]], inset: float = 0.0):
    """Coverage of a convex polygon (local coordinates, either winding), shrunk by ``inset`` pixels."""
    v = [(float(p), float(q)) for p, q in vertices]
    area = sum(p0 * q1 - p1 * q0 for (p0, q0), (p1, q1) in zip(v, v[1:] + v[:1]))
    if area < 0:
        v = v[::-1]
    mask = np.ones_like(a)
    for (a0, b0), (a1, b1) in zip(v, v[1:] + v[:1]):
        length = float(np.hypot(a1 - a0, b1 - b0))
        if length == 0:
            continue
        na, nb = -(b1 - b0) / length, (a1 - a0) / length  # inward normal of a counter-clockwise edge
        mask *= _ramp(a * na + b * nb - (a0 * na + b0 * nb + inset))
    return mask


def _paint_polygon(
    bone: np.ndarray, frame: _Frame, vertices: Sequence[tuple[float, float]], value: float
) -> None:
    """Composite a uniform convex polygon (local coordinates) into ``bone`` by maximum."""
    grid = frame.grid(bone.shape, vertices)
    if grid is not None:
        ys, xs, a, b = grid
        np.maximum(bone[ys, xs], value * _polygon(a, b, vertices), out=bone[ys, xs])


def _texture(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, sigma: float = 1.6) -> np.ndarray:
    """Trabecular texture at local coordinates (a, b): a periodic tile of smoothed white noise (mean 1,
    standard deviation about 0.3) read at the pixel's local position, so it moves with the bone and does
    not change where the bone's outline changes."""
    tile = ndimage.gaussian_filter(rng.standard_normal((_TILE, _TILE), dtype=np.float32), sigma, mode="wrap")
    # Gaussian smoothing divides the noise's standard deviation by sqrt(4 pi) sigma; scale it back to 0.3.
    tile = 1 + tile * np.float32(0.3 * np.sqrt(4 * np.pi) * sigma)
    return tile[np.floor(b).astype(np.intp) % _TILE, np.floor(a).astype(np.intp) % _TILE]


def _endplate(a: np.ndarray, body: Body, h: float, depth: float) -> np.ndarray:
    """Half height of the body at AP position ``a`` (pixels): linear from posterior to anterior, concave."""
    t = np.clip(a / np.float32(depth) + np.float32(0.5), 0.0, 1.0)
    half = np.float32(0.5 * h * body.posterior) + np.float32(0.5 * h * (body.anterior - body.posterior)) * t
    u = np.clip(a * np.float32(2 / depth), -1, 1)
    return half - np.float32(body.concavity * h) * (1 - u * u)


def _spur(body: Body, h: float, depth: float, length: float, sign: float) -> list[tuple[float, float]]:
    """Triangle of an anterior osteophyte (local coordinates) at the superior (sign +1) or inferior corner."""
    corner = 0.5 * h * body.anterior
    base = min(0.7 * length, 0.4 * h * body.anterior)
    return [
        (0.5 * depth - 0.25 * length, sign * corner),
        (0.5 * depth, sign * (corner - base)),
        (0.5 * depth + 0.45 * length, sign * (corner + 0.5 * length)),
    ]


def _body_corners(frame: _Frame, body: Body, h: float, depth: float) -> list[tuple[float, float]]:
    return [
        frame.point(s * 0.5 * depth, t * 0.5 * h * (body.anterior if s > 0 else body.posterior))
        for s in (-1, 1)
        for t in (-1, 1)
    ]


def _box(points: Sequence[tuple[float, float]], margin: float, rows: int, cols: int) -> tuple[float, ...]:
    p = np.asarray(points)
    x0, y0 = p.min(axis=0) - margin
    x1, y1 = p.max(axis=0) + margin
    return (max(0.0, x0), max(0.0, y0), min(float(cols), x1), min(float(rows), y1))


def _draw_vertebra(
    bone: np.ndarray, rng: np.random.Generator, frame: _Frame, body: Body, h: float, density: float
) -> None:
    """Composite one body with its spurs and posterior elements into ``bone`` (in place, by maximum)."""
    depth = body.depth * h
    d = density * body.density
    spurs = [
        _spur(body, h, depth, length * depth, sign)
        for length, sign in ((body.spur_superior, 1.0), (body.spur_inferior, -1.0))
        if length > 0
    ]
    extent = [
        (s * 0.5 * depth, t * 0.5 * h * max(body.anterior, body.posterior)) for s in (-1, 1) for t in (-1, 1)
    ]
    grid = frame.grid(bone.shape, extent + [p for spur in spurs for p in spur])
    if grid is not None:
        ys, xs, a, b = grid
        half = _endplate(a, body, h, depth)
        rim = _RIM * depth
        abs_a, abs_b = np.abs(a), np.abs(b)
        across = _ramp(np.float32(0.5 * depth) - abs_a)
        inside = across * _ramp(half - abs_b)
        core = _ramp(np.float32(0.5 * depth - rim) - abs_a) * _ramp(half - np.float32(rim) - abs_b)
        value = np.float32(d) * (np.float32(_TRABECULAR) * core * _texture(rng, a, b) + (inside - core))
        for flag, sign in ((body.sclerosis_superior, 1.0), (body.sclerosis_inferior, -1.0)):
            if flag:
                band = (
                    across
                    * _ramp(half - abs_b)
                    * _ramp(np.float32(sign) * b - (half - np.float32(2.5 * rim)))
                )
                np.maximum(value, np.float32(0.9 * d) * band, out=value)
        for spur in spurs:
            np.maximum(value, np.float32(d) * _polygon(a, b, spur), out=value)
        np.maximum(bone[ys, xs], value, out=bone[ys, xs])
    p = body.posterior * h
    back = -0.5 * depth
    pedicle = [(back + 0.05 * depth, 0.42 * p), (back - 0.55 * depth, 0.35 * p)]
    pedicle += [(back - 0.55 * depth, -0.2 * p), (back + 0.05 * depth, -0.15 * p)]
    spinous = [(back - 0.5 * depth, 0.3 * p), (back - 1.15 * depth, 0.05 * p)]
    spinous += [(back - 1.2 * depth, -0.35 * p), (back - 0.5 * depth, -0.25 * p)]
    _paint_polygon(bone, frame, pedicle, 0.42 * d)
    _paint_polygon(bone, frame, spinous, 0.36 * d)


def _draw_sacrum(
    bone: np.ndarray, rng: np.random.Generator, frame: _Frame, body: Body, h: float, d: float
) -> None:
    depth = body.depth * h
    outline = [(0.5 * depth, 0.0), (-0.5 * depth, 0.0), (-0.85 * depth, -1.7 * h), (-0.2 * depth, -1.9 * h)]
    grid = frame.grid(bone.shape, outline)
    if grid is None:
        return
    ys, xs, a, b = grid
    inside = _polygon(a, b, outline)
    core = _polygon(a, b, outline, inset=_RIM * depth)
    value = np.float32(d) * (np.float32(_TRABECULAR) * core * _texture(rng, a, b) + (inside - core))
    np.maximum(bone[ys, xs], value, out=bone[ys, xs])


def _ellipse(shape: tuple[int, int], x: float, y: float, rx: float, ry: float) -> tuple | None:
    """(rows slice, cols slice, r) with r the elliptical radius (1 on the outline) around (x, y)."""
    frame = _Frame(x, y, ant=(1.0, 0.0), up=(0.0, 1.0))
    grid = frame.grid(shape, [(-rx, -ry), (rx, ry)])
    if grid is None:
        return None
    ys, xs, a, b = grid
    return ys, xs, np.sqrt((a / np.float32(rx)) ** 2 + (b / np.float32(ry)) ** 2)


def _layout(spine: Spine, view: View) -> tuple[list[_Frame], float]:
    """The frame of every level (origin: body centre; for S1, the centre of its top endplate) and h (px)."""
    rows, cols = view.rows, view.cols
    h = view.body_height * rows
    # The arc, sampled finely: arc length s (pixels) from the top of S1 upwards.
    total = sum(b.posterior for b in spine.bodies[1:]) * h + sum(spine.discs) * h
    s = np.linspace(0.0, total, 2048)
    angle = spine.lordosis + view.tilt - spine.curvature * s / h  # degrees
    t = np.deg2rad(angle)
    step = s[1] - s[0]
    x0, y0 = view.column_x * cols, view.sacrum_y * rows
    # Integrate up = (-sin, -cos) along the arc (trapezoid rule).
    x = x0 + np.concatenate([[0.0], np.cumsum(-0.5 * (np.sin(t[1:]) + np.sin(t[:-1])) * step)])
    y = y0 + np.concatenate([[0.0], np.cumsum(-0.5 * (np.cos(t[1:]) + np.cos(t[:-1])) * step)])
    frames = [_frame(x0, y0, angle[0])]
    position, shift = 0.0, 0.0
    for level in range(1, len(LEVEL_NAMES)):
        body = spine.bodies[level]
        position += spine.discs[level - 1] * h + 0.5 * body.posterior * h
        here = _frame(
            float(np.interp(position, s, x)),
            float(np.interp(position, s, y)),
            float(np.interp(position, s, angle)),
        )
        shift += body.slip * body.depth * h  # a slip carries the column above with it
        dx = shift + body.offset * body.depth * h
        frames.append(_Frame(here.x + dx * here.ant[0], here.y + dx * here.ant[1], here.ant, here.up))
        position += 0.5 * body.posterior * h
    return frames, h


def _soft_tissue(view: View, frames: list[_Frame], depth: float) -> np.ndarray:
    """Soft-tissue thickness [rows, cols] in [0, 1]: the abdomen in profile, gas, diaphragm (anterior left)."""
    rows, cols = view.rows, view.cols
    x = np.arange(cols, dtype=np.float32) + 0.5
    y = np.arange(rows, dtype=np.float32)[:, None] + 0.5
    spine_x = frames[0].x  # the top of S1: lesions above it leave the soft tissue alone
    front = spine_x - depth * (1.2 + 6.0 * view.column_x)  # thin patients show the abdominal wall
    back = spine_x + 2.6 * depth
    centre, half = 0.5 * (front + back), 0.5 * (back - front)
    profile = np.sqrt(np.clip(1 - ((x - centre) / half) ** 2, 0, 1))[None, :]  # [1, cols]
    soft = (profile * (0.8 + 0.3 * y / rows)).astype(np.float32)  # thicker towards the pelvis
    if view.diaphragm > 0:
        dome = view.diaphragm * rows * (1 - np.clip((x - front) / (back - front), 0, 1) ** 2)[None, :]
        soft *= (1 - 0.45 * np.clip((dome - y) / (0.03 * rows), 0, 1)).astype(np.float32)
    for gx, gy, rx, ry, strength in view.gas:
        found = _ellipse(soft.shape, front + gx * (back - front), gy * rows, rx * cols, ry * rows)
        if found is not None:
            ys, xs, r = found
            soft[ys, xs] *= 1 - strength * np.clip(1 - r * r, 0, 1)
    return soft


def render_film(spine: Spine, view: View, rng: np.random.Generator) -> Film:
    """Render ``spine`` as seen in ``view``; ``rng`` draws the film noise and bone texture."""
    rows, cols = view.rows, view.cols
    frames, h = _layout(spine, view)
    bone = np.zeros((rows, cols), np.float32)
    # One texture generator per level, so that changing one body leaves every other pixel as it was.
    textures = rng.spawn(len(LEVEL_NAMES))
    _draw_sacrum(bone, textures[0], frames[0], spine.bodies[0], h, spine.density)
    for level in range(1, len(LEVEL_NAMES)):
        _draw_vertebra(bone, textures[level], frames[level], spine.bodies[level], h, spine.density)
    depth = spine.bodies[3].depth * h
    if view.iliac_crest:
        crest = frames[0].point(-0.3 * depth, -0.9 * h)  # anchored to S1, which lesions never move
        found = _ellipse(bone.shape, crest[0], crest[1], 1.9 * depth, 2.4 * h)
        if found is not None:
            ys, xs, r = found
            bone[ys, xs] += spine.density * (
                0.12 * _ramp((1 - r) * 2.4 * h) + 0.2 * np.clip(1 - np.abs(r - 0.97) / 0.03, 0, 1)
            )
    soft = _soft_tissue(view, frames, depth)
    image = (view.soft * soft + view.bone * bone) / (view.soft * 1.1 + view.bone)
    image = np.clip(image, 0, 1) ** view.gamma
    image = ndimage.gaussian_filter(image, view.blur)
    image += view.noise * rng.standard_normal((rows, cols), dtype=np.float32)
    _draw_marker(image, view, h)
    findings = tuple(_finding(lesion, spine, frames, h, rows, cols) for lesion in spine.lesions)
    image = np.clip(image, 0, 1).astype(np.float32)
    if view.facing_right:
        image = np.ascontiguousarray(image[:, ::-1])
        findings = tuple(
            replace(f, box=(cols - f.box[2], f.box[1], cols - f.box[0], f.box[3])) for f in findings
        )
    return Film(image=image, findings=findings)


def _draw_marker(image: np.ndarray, view: View, h: float) -> None:
    """A burned-in lead marker (an 'L'), full brightness, in one corner."""
    rows, cols = image.shape
    size = max(3, int(0.6 * h))
    stroke = max(1, size // 4)
    top = int(0.03 * rows) if view.marker < 2 else rows - int(0.03 * rows) - size
    left = int(0.03 * cols) if view.marker % 2 == 0 else cols - int(0.03 * cols) - size
    image[top : top + size, left : left + stroke] = 1.0
    image[top + size - stroke : top + size, left : left + (2 * size) // 3] = 1.0


def _finding(lesion: Lesion, spine: Spine, frames: list[_Frame], h: float, rows: int, cols: int) -> Finding:
    """The finding a reader would box for ``lesion`` (box in unmirrored film coordinates)."""
    bodies = spine.bodies
    if lesion.kind == NARROWING:
        lower, upper = lesion.index, lesion.index + 1
        points = _body_corners(frames[upper], bodies[upper], h, bodies[upper].depth * h)
        if lower == 0:
            depth = bodies[0].depth * h
            points += [frames[0].point(0.5 * depth, 0.0), frames[0].point(-0.5 * depth, 0.0)]
        else:
            points += _body_corners(frames[lower], bodies[lower], h, bodies[lower].depth * h)
        # the box spans the disc: the facing endplates, not the whole bodies
        p = np.asarray(points)
        ys = np.sort(p[:, 1])
        mid = 0.5 * (ys[len(ys) // 2 - 1] + ys[len(ys) // 2])
        near = p[np.argsort(np.abs(p[:, 1] - mid))[:4]]
        box = _box(near, 0.12 * h, rows, cols)
    elif lesion.kind == OSTEOPHYTES:
        body, frame = bodies[lesion.index], frames[lesion.index]
        depth = body.depth * h
        points = []
        for length, sign in ((body.spur_superior, 1.0), (body.spur_inferior, -1.0)):
            if length > 0 and (lesion.variant == "both" or (sign > 0) == (lesion.variant == "superior")):
                points += [frame.point(a, b) for a, b in _spur(body, h, depth, length * depth, sign)]
        box = _box(points, 0.08 * h, rows, cols)
    elif lesion.kind == SLIP:
        points = []
        for level in (lesion.index, lesion.index - 1):
            body = bodies[level]
            if level == 0:
                depth = body.depth * h
                points += [frames[0].point(0.5 * depth, 0.0), frames[0].point(-0.5 * depth, 0.0)]
            else:
                points += _body_corners(frames[level], body, h, body.depth * h)
        box = _box(points, 0.05 * h, rows, cols)
    else:  # COLLAPSE
        body = bodies[lesion.index]
        box = _box(_body_corners(frames[lesion.index], body, h, body.depth * h), 0.05 * h, rows, cols)
    return Finding(lesion.kind, lesion.site, lesion.magnitude, tuple(round(float(v), 1) for v in box))
