"""Training options: one table of option specs, upstream's ``--cfg`` presets, validation, run folders.

Every core option of ``train.py`` is defined ONCE, in :data:`OPTION_SPECS`: its parameter name, type,
command-line default, where an unset value comes from (a preset, a constant, the resumed network...), its
help text and its check. The click options (:func:`stylegan2_ada.training.cli.core_options`), the raw
defaults (:data:`CLI_DEFAULTS`), the per-option checks (:func:`check_cli`) and the resolved values
(:func:`resolve_options`) all follow from that table.

:func:`resolve_options` turns the raw command-line values (``train.py``'s parameter names) plus facts
about the dataset into a :class:`TrainingOptions`; every invalid value or combination raises
:class:`OptionsError` whose message names the option and the fix (``train.py`` shows it as a usage
error). Every float option must be a finite number.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylegan2_ada import devices
from stylegan2_ada.augment import AUGPIPE_SPECS, DEFAULT_ADA_KIMG, DEFAULT_ADA_TARGET, RESUME_ADA_KIMG
from stylegan2_ada.dataset import DEFAULT_MAX_CLASSES
from stylegan2_ada.metrics.runner import METRICS, MetricError, parse_metric_list

CFG_NAMES = ("auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar")
AUG_MODES = ("noaug", "ada", "fixed")
AUGPIPES = tuple(AUGPIPE_SPECS)
DEVICES = devices.DEVICES
UPSTREAM_WORKERS = 3  # upstream's DataLoader workers, capped at the CPUs available
DEFAULT_CMAX = 512  # upstream's channel_max
MAX_KIMG = 1e9  # --kimg / --tick above this overflow the image counters' arithmetic
DEFAULT_MAX_BAD_IMAGES = 100  # training items that may fail to load before training stops


class OptionsError(ValueError):
    """An invalid option or combination of options (message says which and how to fix it)."""


@dataclass(frozen=True)
class Preset:
    """One ``--cfg`` preset (upstream's ``cfg_specs``)."""

    ref_gpus: int
    kimg: float
    mb: int
    mbstd: int
    fmaps: float
    lrate: float
    gamma: float
    ema: float
    ramp: float | None
    map: int


def preset(cfg: str, resolution: int, gpus: int) -> Preset:
    """The preset ``cfg`` for square images of ``resolution`` trained on ``gpus`` processes."""
    if cfg == "auto":
        res = resolution
        mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
        return Preset(
            ref_gpus=gpus,
            kimg=25000,
            mb=mb,
            mbstd=min(mb // gpus, 4),
            fmaps=1 if res >= 512 else 0.5,
            lrate=0.002 if res >= 1024 else 0.0025,
            gamma=0.0002 * res**2 / mb,
            ema=mb * 10 / 32,
            ramp=0.05,
            map=2,
        )
    table = {
        "stylegan2": Preset(8, 25000, 32, 4, 1, 0.002, 10, 10, None, 8),
        "paper256": Preset(8, 25000, 64, 8, 0.5, 0.0025, 1, 20, None, 8),
        "paper512": Preset(8, 25000, 64, 8, 1, 0.0025, 0.5, 20, None, 8),
        "paper1024": Preset(8, 25000, 32, 4, 1, 0.002, 2, 10, None, 8),
        "cifar": Preset(2, 100000, 64, 32, 1, 0.0025, 0.01, 500, 0.05, 2),
    }
    if cfg not in table:
        raise OptionsError(f"--cfg must be one of {', '.join(CFG_NAMES)}, got {cfg!r}")
    return table[cfg]


# ---------------------------------------------------------------------------------------- the option table


def flag_name(name: str) -> str:
    """The command-line flag of parameter ``name``: ``batch_gpu`` -> ``--batch-gpu``."""
    return "--" + name.replace("_", "-")


def _num(x: float) -> str:
    """A bound as written by hand: ``0``, ``1``, ``0.5``, ``1000000000``."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """A numeric bound: ``gt``/``ge`` below, ``le`` above (``None``: unbounded)."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` (as in "must be ..."), or ``None``."""
        lo_ok = (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
        if lo_ok and (self.le is None or value <= self.le):
            return None
        if self.ge is not None and self.le is not None:
            return f"must be in [{_num(self.ge)}, {_num(self.le)}]"
        if not lo_ok:
            if self.gt is not None:
                return f"must be > {_num(self.gt)}"
            return "must be at least 1" if self.ge == 1 else f"must be >= {_num(self.ge)}"
        return f"must be at most {_num(self.le)}"


@dataclass(frozen=True)
class Fallback:
    """Where the value of an option left unset (``None``) comes from, and how ``--help`` says it."""

    value: Callable[[Resolution], Any]
    doc: str


@dataclass(frozen=True)
class Resolution:
    """What a :class:`Fallback` may look at: the preset, the raw options and the ``--resume`` network."""

    preset: Preset
    raw: Mapping[str, Any]
    resume: ResumeInfo | None


def _from_preset(attr: str) -> Fallback:
    return Fallback(lambda r: getattr(r.preset, attr), "preset")


def _constant(value: Any) -> Fallback:
    return Fallback(lambda r: value, f"{value}")


def _default_batch_gpu(r: Resolution) -> int:
    if r.raw["batch"] is not None:
        return int(r.raw["batch"]) // int(r.raw["gpus"])
    return max(r.preset.mb // r.preset.ref_gpus, 1)


def _default_ada_kimg(r: Resolution) -> float:
    transfer = r.resume is not None and r.resume.format == "weights"
    return float(RESUME_ADA_KIMG if transfer else DEFAULT_ADA_KIMG)  # upstream's transfer-learning speed


def _metrics_problem(value: str) -> str | None:
    try:
        parse_metric_list(str(value))
    except MetricError as exc:
        return f"{value}: {exc}"
    return None


def _detector_problem(value: str) -> str | None:
    # Only that it exists here: a plugin may read folders; the file is loaded and checked once the
    # device and the plugins are known (stylegan2_ada.training.evaluation.check_detector).
    return None if os.path.exists(value) else f"{value}: no such file"


def check_metric_options(raw: Mapping[str, Any]) -> None:
    """``--metrics`` needs ``--detector``; ``--detector`` and ``--metrics-num`` need ``--metrics``."""
    if not parse_metric_list(str(raw["metrics"])):
        for name in ("detector", "metrics_num"):
            if raw[name] is not None:
                raise OptionsError(f"{flag_name(name)} only applies with --metrics (now {raw['metrics']!r})")
    elif raw["detector"] is None:
        raise OptionsError(
            f"--metrics {raw['metrics']} needs --detector PATH: the feature extractor, a local file "
            "(TorchScript, torch.export, torchvision weights; see docs/metrics.md). Nothing is downloaded"
        )


@dataclass(frozen=True)
class OptionSpec:
    """One core option of ``train.py``.

    ``type``: ``int``, ``float``, ``str``, or ``bool`` (upstream's ``--flag`` / ``--flag=1`` / ``--flag=0``).
    ``default``: the command-line default; ``None`` leaves the option unset, and ``fallback`` then says
    where its value comes from. ``check``: a :class:`Range`, or a function returning a problem ("must
    be ...") or ``None``. ``choices``: the accepted strings. ``flag``: a plain on/off switch
    (``--dry-run``). Float options must always be finite.
    """

    name: str
    type: type
    help: str
    default: Any = None
    fallback: Fallback | None = None
    check: Range | Callable[[Any], str | None] | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    metavar: str | None = None
    multiple: bool = False
    flag: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def flag_name(self) -> str:
        return flag_name(self.name)

    def problem(self, value: Any) -> str | None:
        """What is wrong with a set ``value`` of this option (``"--x must be ..."``), or ``None``."""
        if value is None or self.multiple:
            return None
        if self.type is float and not math.isfinite(value):
            return f"{self.flag_name} must be a finite number, got {value}"
        if self.choices is not None and value not in self.choices:
            return f"{self.flag_name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.check is None:
            return None
        if isinstance(self.check, Range):
            what = self.check.problem(value)
            return None if what is None else f"{self.flag_name} {what}, got {value}"
        what = self.check(value)
        return None if what is None else f"{self.flag_name} {what}"

    def resolve(self, value: Any, r: Resolution) -> Any:
        """The value of this option in a run: the given one (converted to ``type``) or its fallback."""
        if value is None:
            return self.fallback.value(r) if self.fallback is not None else None
        if self.multiple:
            return list(value)
        return self.type(value)


_BATCH_GPU_HELP = "Batch per process per step; gradients accumulate over batch/(batch-gpu*gpus) rounds."

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("outdir", str, "Where to make the run folder NNNNN-<desc>.", required=True, metavar="DIR"),
    OptionSpec(
        "data",
        str,
        "Training data: an image folder or zip (or what a plugin reads).",
        required=True,
        metavar="PATH",
    ),
    OptionSpec("cond", bool, "Train a conditional model (labels from dataset.json).", default=False),
    OptionSpec(
        "gpus",
        int,
        "Number of processes (GPUs, or CPU processes with --device cpu); >1 needs torchrun.",
        default=1,
        check=Range(ge=1),
    ),
    OptionSpec("batch", int, "Total batch size.", fallback=_from_preset("mb"), check=Range(ge=1)),
    OptionSpec(
        "batch_gpu",
        int,
        _BATCH_GPU_HELP,
        check=Range(ge=1),
        fallback=Fallback(_default_batch_gpu, "batch / gpus with --batch, else preset"),
    ),
    OptionSpec(
        "kimg",
        float,
        "Training length in thousands of real images.",
        fallback=_from_preset("kimg"),
        check=Range(gt=0, le=MAX_KIMG),
    ),
    OptionSpec("snap", int, "Image grid and snapshot interval, in ticks.", default=50, check=Range(ge=1)),
    OptionSpec(
        "tick",
        float,
        "Progress interval, in kimg (may be below 1 for tiny runs).",
        default=4.0,
        check=Range(gt=0, le=MAX_KIMG),
    ),
    OptionSpec("cfg", str, "Base configuration.", default="auto", choices=CFG_NAMES),
    OptionSpec(
        "gamma", float, "R1 regularisation weight.", fallback=_from_preset("gamma"), check=Range(ge=0)
    ),
    OptionSpec(
        "cbase",
        int,
        "Capacity multiplier (channel_base).",
        check=Range(ge=1),
        fallback=Fallback(lambda r: int(r.preset.fmaps * 32768), "preset"),
    ),
    OptionSpec("cmax", int, "Maximum feature maps.", fallback=_constant(DEFAULT_CMAX), check=Range(ge=1)),
    OptionSpec("map_depth", int, "Mapping network depth.", fallback=_from_preset("map"), check=Range(ge=1)),
    OptionSpec("glr", float, "G learning rate.", fallback=_from_preset("lrate"), check=Range(gt=0)),
    OptionSpec("dlr", float, "D learning rate.", fallback=_from_preset("lrate"), check=Range(gt=0)),
    OptionSpec(
        "mbstd_group", int, "Minibatch std group size.", fallback=_from_preset("mbstd"), check=Range(ge=1)
    ),
    OptionSpec("aug", str, "Augmentation mode.", default="ada", choices=AUG_MODES),
    OptionSpec("p", float, "Augmentation probability for --aug=fixed.", check=Range(ge=0, le=1)),
    OptionSpec(
        "target",
        float,
        "ADA target value for --aug=ada.",
        fallback=_constant(DEFAULT_ADA_TARGET),
        check=Range(ge=0, le=1),
    ),
    OptionSpec("augpipe", str, "Augmentation pipeline.", default="bgc", choices=AUGPIPES),
    OptionSpec(
        "ada_kimg",
        float,
        "ADA speed: kimg for p to move by 1.",
        check=Range(gt=0),
        fallback=Fallback(
            _default_ada_kimg, f"{DEFAULT_ADA_KIMG}; {RESUME_ADA_KIMG} when resuming from an upstream .pkl"
        ),
    ),
    OptionSpec("mirror", bool, "Enable dataset x-flips.", default=False),
    OptionSpec(
        "subset",
        int,
        "Train with only N images.",
        fallback=Fallback(lambda r: None, "all"),
        check=Range(ge=1),
    ),
    OptionSpec(
        "resume",
        str,
        "Resume from a snapshot, an upstream .pkl, or 'latest' (newest snapshot under --outdir).",
        metavar="PATH|latest",
    ),
    OptionSpec("freezed", int, "Freeze-D: number of D layers to freeze.", default=0, check=Range(ge=0)),
    OptionSpec("fp32", bool, "Disable mixed precision (fp16 only ever runs on CUDA).", default=False),
    OptionSpec(
        "compile",
        bool,
        "torch.compile the networks for the main phases (falls back to eager with a message where "
        "compilation is unavailable; regularisation phases run eagerly).",
        default=False,
    ),
    OptionSpec(
        "metrics",
        str,
        f"Quality metrics at each snapshot, comma-separated ({', '.join(METRICS)}), or none; needs --detector.",
        default="none",
        check=_metrics_problem,
        metavar="LIST",
    ),
    OptionSpec(
        "detector",
        str,
        "Feature extractor of --metrics: a local file (TorchScript, torch.export .pt2, torchvision weights, "
        "or a kind a --plugin reads); see docs/metrics.md.",
        check=_detector_problem,
        metavar="PATH",
    ),
    OptionSpec(
        "metrics_num",
        int,
        "Generated images per metric evaluation (use fewer for small data and quick runs).",
        check=Range(ge=2),
        fallback=Fallback(lambda r: None, "each metric's own, 50000"),
        metavar="N",
    ),
    OptionSpec("seed", int, "Random seed.", default=0, check=Range(ge=0, le=2**32 - 1)),
    OptionSpec(
        "workers",
        int,
        "DataLoader worker processes.",
        check=Range(ge=0),
        fallback=Fallback(
            lambda r: devices.default_workers(cap=UPSTREAM_WORKERS),
            f"{UPSTREAM_WORKERS}, at most the CPUs this process may use",
        ),
    ),
    OptionSpec(
        "device",
        str,
        "Device.",
        choices=DEVICES,
        fallback=Fallback(lambda r: resolve_device(None), "cuda when available, else cpu"),
    ),
    OptionSpec(
        "max_classes",
        int,
        "Most conditioning classes (label dimensions) accepted from the data; a guard against a stray "
        "huge class id in dataset.json, which would build a huge G.",
        default=DEFAULT_MAX_CLASSES,
        check=Range(ge=1),
    ),
    OptionSpec(
        "max_bad_images",
        int,
        "Training items that may fail to load (e.g. truncated files) before training stops with a final "
        "snapshot; each is skipped, replaced by another item and listed in log.txt.",
        default=DEFAULT_MAX_BAD_IMAGES,
        check=Range(ge=0),
    ),
    OptionSpec(
        "plugin",
        str,
        "Enable a plugin (repeatable): built-in name, entry point name or dotted module path.",
        multiple=True,
        metavar="NAME",
        default=(),
    ),
    OptionSpec("desc", str, "String appended to the run folder name."),
    OptionSpec(
        "dry_run",
        bool,
        "Print the resolved options as JSON and exit.",
        default=False,
        flag=True,
        aliases=("-n",),
    ),
)
SPECS: dict[str, OptionSpec] = {s.name: s for s in OPTION_SPECS}

#: Resolved settings without a command-line option that plugins may change (``adjust_options``): the
#: run-behaviour switches that exist for plugins and the values fixed by the preset or upstream.
PLUGIN_SETTINGS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "combine_d_reg",
        bool,
        "R1 joins D's main phase on the steps where it is due (phase Dboth: one loss per example, one "
        "optimizer step, D's learning rate not rescaled for lazy regularisation).",
        default=False,
    ),
    OptionSpec("reals_grid", bool, "Write reals.png (a grid of training images).", default=True),
    OptionSpec(
        "real_score_stats",
        bool,
        "Report D's scores on real images (Loss/scores/real, Loss/signs/real).",
        default=True,
    ),
    OptionSpec(
        "dataset_details",
        bool,
        "Log the dataset's size and the names of items that fail to load.",
        default=True,
    ),
    OptionSpec("ema_kimg", float, "G_ema half-life in kimg.", check=Range(gt=0)),
    OptionSpec("ema_rampup", float, "G_ema ramp-up ratio (None: off).", check=Range(gt=0)),
    OptionSpec("pl_weight", float, "Path-length regularisation weight.", check=Range(ge=0)),
    OptionSpec("style_mixing", float, "Style-mixing probability.", check=Range(ge=0, le=1)),
    OptionSpec("G_reg_interval", int, "Steps between path-length regularisation phases.", check=Range(ge=1)),
    OptionSpec("D_reg_interval", int, "Steps between R1 regularisation phases.", check=Range(ge=1)),
    OptionSpec("ada_interval", int, "Steps between ADA updates.", check=Range(ge=1)),
)

#: The resolved options a plugin may change (``adjust_options``). The others are fixed by the time plugins
#: are asked: the data is open (``data``, ``cond``, ``mirror``, ``subset``, ``max_classes``), the run
#: folder's place and name (``outdir``, ``desc``), the preset and architecture (``cfg``, ``cbase``,
#: ``cmax``, ``map_depth``, ``fp32``, ``freezed``), the process layout (``gpus``, ``device``) and the
#: run's identity (``seed``, ``resume``, ``plugin``, ``metrics``, ``dry_run``).
ADJUSTABLE: dict[str, OptionSpec] = {
    **{
        name: SPECS[name]
        for name in (
            "batch",
            "batch_gpu",
            "kimg",
            "tick",
            "snap",
            "gamma",
            "glr",
            "dlr",
            "mbstd_group",
            "aug",
            "p",
            "target",
            "augpipe",
            "ada_kimg",
            "workers",
            "max_bad_images",
        )
    },
    **{spec.name: spec for spec in PLUGIN_SETTINGS},
}
_MAY_BE_NONE = ("p", "ema_rampup")

# Raw command-line defaults (train.py's parameter names). ``None`` means "from the fallback".
CLI_DEFAULTS: dict[str, Any] = {s.name: s.default for s in OPTION_SPECS}


@dataclass
class DatasetInfo:
    """What option resolution needs to know about the training data."""

    name: str
    resolution: int
    num_channels: int
    label_dim: int
    has_labels: bool
    size: int


@dataclass
class ResumeInfo:
    """What option resolution needs to know about ``--resume`` (see :mod:`.snapshots`)."""

    path: str
    format: (
        str  # 'snapshot' (continue a run) | 'weights' (transfer learning: upstream .pkl, exported network)
    )
    resolution: int
    img_channels: int
    c_dim: int
    cur_nimg: int = 0
    z_dim: int = 512
    w_dim: int = 512


@dataclass(kw_only=True)
class TrainingOptions:
    """The fully resolved options of a run (written to ``training_options.json``).

    Built by :func:`resolve_options` only: the fields that come from an option have no default here (their
    defaults live in :data:`OPTION_SPECS`); those with a default are fixed by the architecture.
    """

    # From the command line (see OPTION_SPECS).
    outdir: str
    data: str
    cond: bool
    mirror: bool
    subset: int | None
    gpus: int
    batch: int
    batch_gpu: int
    kimg: float
    tick: float
    snap: int
    cfg: str
    gamma: float
    cbase: int
    cmax: int
    map_depth: int
    glr: float
    dlr: float
    mbstd_group: int
    aug: str
    p: float | None
    target: float
    augpipe: str
    ada_kimg: float
    resume: str | None
    freezed: int
    fp32: bool
    compile: bool
    metrics: list[str]
    detector: str | None
    metrics_num: int | None
    seed: int
    workers: int
    device: str
    max_classes: int
    max_bad_images: int
    plugins: list[str]
    dry_run: bool
    # From the dataset, the preset and the resumed network.
    dataset_name: str
    resolution: int
    img_channels: int
    c_dim: int
    dataset_size: int
    resume_format: str | None  # 'snapshot' | 'weights' | None
    ema_kimg: float
    ema_rampup: float | None
    pl_weight: float
    style_mixing: float
    d_architecture: str
    num_fp16_res: int
    conv_clamp: int | None
    plugin_options: dict[str, Any] = field(default_factory=dict)
    desc: str = ""
    # Run behaviour that only plugins change (PLUGIN_SETTINGS; hookspecs.adjust_options).
    combine_d_reg: bool = False
    reals_grid: bool = True
    real_score_stats: bool = True
    dataset_details: bool = True
    # What plugins changed: {option name: {"plugin": name, "from": old value, "to": new value}}.
    adjusted: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The hooks each enabled plugin implements: {plugin name: [hook names]}.
    plugin_hooks: dict[str, list[str]] = field(default_factory=dict)
    # Fixed (upstream's values), or taken from a resumed network.
    z_dim: int = 512
    w_dim: int = 512
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    ada_interval: int = 4

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return dataclasses.asdict(self)

    def context_options(self) -> dict[str, Any]:
        """The dict plugins see as ``context.options``: every field plus the plugins' own options."""
        d = self.to_dict()
        d.update(self.plugin_options)
        return d

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`stylegan2_ada.networks.Generator`."""
        return dict(
            z_dim=self.z_dim,
            c_dim=self.c_dim,
            w_dim=self.w_dim,
            img_resolution=self.resolution,
            img_channels=self.img_channels,
            mapping_kwargs={"num_layers": self.map_depth},
            synthesis_kwargs={
                "channel_base": self.cbase,
                "channel_max": self.cmax,
                "num_fp16_res": self.num_fp16_res,
                "conv_clamp": self.conv_clamp,
            },
        )

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`stylegan2_ada.networks.Discriminator`."""
        return dict(
            c_dim=self.c_dim,
            img_resolution=self.resolution,
            img_channels=self.img_channels,
            architecture=self.d_architecture,
            channel_base=self.cbase,
            channel_max=self.cmax,
            num_fp16_res=self.num_fp16_res,
            conv_clamp=self.conv_clamp,
            block_kwargs={"freeze_layers": self.freezed},
            mapping_kwargs={},
            epilogue_kwargs={"mbstd_group_size": self.mbstd_group},
        )


def _fmt(x: float) -> str:
    return f"{x:g}"


def sanitize_name(name: str) -> str:
    """A dataset name safe for a folder name."""
    s = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._")
    return s or "dataset"


def with_cli_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` completed with :data:`CLI_DEFAULTS` for the core options it lacks or leaves ``None``."""
    return {**CLI_DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k not in CLI_DEFAULTS}}


def check_cli(raw: Mapping[str, Any]) -> None:
    """Checks that need neither the dataset nor the resume network. Raises :class:`OptionsError`.

    First each option alone (:meth:`OptionSpec.problem`: finite floats, bounds, choices), then the
    combinations.
    """
    raw = with_cli_defaults(raw)
    for spec in OPTION_SPECS:
        problem = spec.problem(raw[spec.name])
        if problem is not None:
            raise OptionsError(problem)
    aug, p = raw["aug"], raw["p"]
    if p is not None and aug != "fixed":
        raise OptionsError("--p can only be given with --aug=fixed (ADA sets p itself)")
    if aug == "fixed" and p is None:
        raise OptionsError("--aug=fixed needs --p (the augmentation probability, 0 to 1)")
    check_metric_options(raw)
    for name in ("target", "ada_kimg"):
        if raw[name] is not None and aug != "ada":
            raise OptionsError(f"{flag_name(name)} only applies to --aug=ada")
    gpus, batch, batch_gpu = raw["gpus"], raw["batch"], raw["batch_gpu"]
    if batch is not None and batch % gpus != 0:
        raise OptionsError(f"--batch={batch} must be divisible by --gpus={gpus}")
    if batch is not None and batch_gpu is not None and batch % (batch_gpu * gpus) != 0:
        raise OptionsError(
            f"--batch={batch} must be divisible by --batch-gpu={batch_gpu} times --gpus={gpus} "
            f"(gradients are accumulated over batch / (batch_gpu * gpus) rounds)"
        )


def check_outdir(outdir: str | os.PathLike[str]) -> None:
    """``--outdir`` must be a folder this process can create run folders in (it may not exist yet)."""
    path = Path(outdir)
    if path.exists() and not path.is_dir():
        raise OptionsError(f"--outdir {outdir} is a file, not a folder")
    existing = path
    while not existing.exists():  # the nearest existing ancestor is where folders get created
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OptionsError(f"--outdir {outdir}: {existing} is a file, not a folder")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise OptionsError(f"--outdir {outdir}: cannot create folders in {existing} (permission denied)")


def resolve_device(requested: str | None) -> str:
    """``cuda`` when available unless ``cpu`` is asked for; asking for ``cuda`` without one is an error."""
    try:
        return devices.resolve_device(requested).type
    except ValueError as exc:
        raise OptionsError(f"--device: {exc}") from exc


def check_world_size(gpus: int, world_size: int) -> None:
    """``--gpus`` must match the number of processes ``torchrun`` started."""
    if gpus != world_size:
        if world_size == 1:
            raise OptionsError(
                f"--gpus={gpus} needs {gpus} processes: launch with "
                f"`torchrun --nproc_per_node={gpus} train.py ...` (see docs/training.md)"
            )
        raise OptionsError(
            f"--gpus={gpus} but torchrun started {world_size} processes (WORLD_SIZE); make them equal"
        )


def run_desc(o: TrainingOptions, raw: Mapping[str, Any]) -> str:
    """Upstream-style run description: ``<dataset>-cond-auto1-gamma...-<--desc>``."""
    desc = sanitize_name(o.dataset_name)
    if o.cond:
        desc += "-cond"
    if o.subset is not None:
        desc += f"-subset{o.subset}"
    if o.mirror:
        desc += "-mirror"
    desc += f"-{o.cfg}" + (str(o.gpus) if o.cfg == "auto" else "")
    if raw.get("gamma") is not None:
        desc += f"-gamma{_fmt(o.gamma)}"
    if raw.get("kimg") is not None:
        desc += f"-kimg{_fmt(o.kimg)}"
    if raw.get("batch") is not None:
        desc += f"-batch{o.batch}"
    if o.aug != "ada":
        desc += f"-{o.aug}"
    if o.p is not None:
        desc += f"-p{_fmt(o.p)}"
    if raw.get("target") is not None:
        desc += f"-target{_fmt(o.target)}"
    if o.augpipe != "bgc" and o.aug != "noaug":
        desc += f"-{o.augpipe}"
    if o.resume is not None:
        desc += "-resume" if o.resume_format == "snapshot" else "-resumecustom"
    if o.freezed:
        desc += f"-freezed{o.freezed}"
    for name in o.plugins:
        desc += "-" + sanitize_name(name.rsplit(".", 1)[-1].rsplit(":", 1)[-1])
    if raw.get("desc"):
        desc += "-" + sanitize_name(str(raw["desc"]))
    return desc


def check_dataset(raw: Mapping[str, Any], dataset: DatasetInfo) -> None:
    """The options against the data: labels for ``--cond``, a usable resolution and channel count,
    ``--subset`` within the data."""
    if raw["cond"] and not dataset.has_labels:
        raise OptionsError(
            f"--cond needs labels, but {dataset.name!r} ({raw['data']}) has none "
            '(add a dataset.json with {"labels": [[file, class], ...]})'
        )
    res = dataset.resolution
    if res < 4 or res & (res - 1):
        raise OptionsError(
            f"the images of {raw['data']} are {res}x{res}; the resolution must be a power of two >= 4"
        )
    if dataset.num_channels not in (1, 3):
        raise OptionsError(
            f"the images of {raw['data']} have {dataset.num_channels} channels; 1 or 3 are supported"
        )
    if raw["subset"] is not None and raw["subset"] > dataset.size:
        raise OptionsError(f"--subset={raw['subset']} is larger than the dataset ({dataset.size} images)")


def check_capacity(v: Mapping[str, Any], resolution: int) -> None:
    """Every layer gets at least one feature map: ``channel_base // resolution >= 1`` at the top block
    (a smaller ``--cbase`` would build zero-width layers)."""
    if v["cbase"] < resolution:
        raise OptionsError(
            f"--cbase={v['cbase']} is smaller than the resolution {resolution}: the {resolution}x{resolution} "
            f"layers would have no feature maps (use --cbase >= {resolution})"
        )


def check_batch(v: Mapping[str, Any]) -> None:
    """The resolved batch sizes divide: batch by batch_gpu x gpus, batch_gpu by the mbstd group."""
    batch, batch_gpu, gpus = v["batch"], v["batch_gpu"], v["gpus"]
    if batch % (batch_gpu * gpus) != 0:
        raise OptionsError(
            f"--batch={batch} must be divisible by --batch-gpu={batch_gpu} times --gpus={gpus}"
        )
    group = min(v["mbstd_group"], batch_gpu)
    if batch_gpu % group != 0:
        raise OptionsError(
            f"--batch-gpu={batch_gpu} must be divisible by the minibatch-std group size "
            f"{group} (--mbstd-group)"
        )


def check_resume(resume: ResumeInfo, dataset: DatasetInfo, c_dim: int) -> None:
    """The ``--resume`` network fits the data (resolution, channels; labels for a snapshot)."""
    res = dataset.resolution
    if resume.resolution != res:
        raise OptionsError(
            f"--resume {resume.path}: the network is {resume.resolution}x{resume.resolution} "
            f"but the data is {res}x{res}"
        )
    if resume.img_channels != dataset.num_channels:
        raise OptionsError(
            f"--resume {resume.path}: the network has {resume.img_channels} image channels "
            f"but the data has {dataset.num_channels}"
        )
    if resume.format == "snapshot" and resume.c_dim != c_dim:
        raise OptionsError(
            f"--resume {resume.path}: the network has c_dim={resume.c_dim} but this run has "
            f"c_dim={c_dim} (check --cond)"
        )


def freezable_layers(resolution: int, img_channels: int, architecture: str) -> int:
    """How many layers ``--freezed`` can freeze: the layers of D's blocks (the 4x4 epilogue never freezes).

    Counted on a D with one channel per layer (the layer structure does not depend on the widths).
    """
    from stylegan2_ada.networks import Discriminator

    D = Discriminator(
        c_dim=0,
        img_resolution=resolution,
        img_channels=img_channels,
        architecture=architecture,
        channel_base=resolution,
        channel_max=1,
    )
    return sum(getattr(D, f"b{res}").num_layers for res in D.block_resolutions)


# Options whose resolved value is not stored under their own name.
_NOT_STORED_AS_IS = ("plugin", "resume", "metrics", "desc")


def resolve_options(
    raw: Mapping[str, Any],
    dataset: DatasetInfo,
    *,
    resume: ResumeInfo | None = None,
    world_size: int = 1,
    device: str | None = None,
    plugin_options: Mapping[str, Any] | None = None,
) -> TrainingOptions:
    """Combine the raw options with the preset and the dataset; raise :class:`OptionsError` if invalid.

    Each option's value is the one given or its :class:`Fallback` (:data:`OPTION_SPECS`); ``device``,
    when given, is the already resolved ``--device``.
    """
    raw = with_cli_defaults(raw)
    check_cli(raw)
    check_world_size(int(raw["gpus"]), world_size)
    check_dataset(raw, dataset)
    res = dataset.resolution
    spec = preset(raw["cfg"], res, int(raw["gpus"]))
    raw["device"] = device if device is not None else resolve_device(raw["device"])
    v = {s.name: s.resolve(raw[s.name], Resolution(spec, raw, resume)) for s in OPTION_SPECS}
    check_batch(v)
    check_capacity(v, res)
    c_dim = dataset.label_dim if v["cond"] else 0
    if resume is not None:
        check_resume(resume, dataset, c_dim)
    cifar = v["cfg"] == "cifar"
    d_architecture = "orig" if cifar else "resnet"
    limit = freezable_layers(res, dataset.num_channels, d_architecture)
    if v["freezed"] > limit:
        raise OptionsError(
            f"--freezed={v['freezed']}: D has {limit} layers that can be frozen at {res}x{res} "
            f"(--cfg {v['cfg']}); give at most {limit}"
        )
    o = TrainingOptions(
        **{name: value for name, value in v.items() if name not in _NOT_STORED_AS_IS},
        plugins=v["plugin"],
        resume=resume.path if resume is not None else None,
        resume_format=resume.format if resume is not None else None,
        metrics=parse_metric_list(v["metrics"]),
        dataset_name=dataset.name,
        resolution=res,
        img_channels=dataset.num_channels,
        c_dim=c_dim,
        dataset_size=dataset.size,
        ema_kimg=float(spec.ema),
        ema_rampup=None if resume is not None and resume.format == "weights" else spec.ramp,
        pl_weight=0.0 if cifar else 2.0,
        style_mixing=0.0 if cifar else 0.9,
        d_architecture=d_architecture,
        num_fp16_res=0 if v["fp32"] else 4,
        conv_clamp=None if v["fp32"] else 256,
        plugin_options=dict(plugin_options or {}),
    )
    if resume is not None:  # no option sets z_dim / w_dim: take the resumed network's
        o.z_dim, o.w_dim = int(resume.z_dim), int(resume.w_dim)
    o.desc = run_desc(o, raw)
    if resume is not None and resume.format == "snapshot" and resume.cur_nimg >= o.kimg * 1000:
        raise OptionsError(
            f"--resume {resume.path} is already at {resume.cur_nimg / 1000:g} kimg; "
            f"raise --kimg above that (now {o.kimg:g}) to train further"
        )
    return o


def _typed(spec: OptionSpec, value: Any) -> Any:
    """``value`` as ``spec.type`` (an int is a float too; nothing else converts), or an OptionsError."""
    if value is None and spec.name in _MAY_BE_NONE:
        return None
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[spec.type]
    if not isinstance(value, kinds) or (spec.type is not bool and isinstance(value, bool)):
        raise OptionsError(f"must be of type {spec.type.__name__}, got {value!r}")
    return spec.type(value)


def apply_adjustment(o: TrainingOptions, plugin: str, changes: Mapping[str, Any]) -> TrainingOptions:
    """``o`` with a plugin's ``adjust_options`` ``changes`` applied and recorded in ``adjusted``.

    Each change is checked like the command line's value (:data:`ADJUSTABLE`: type, range, choices), then
    the combinations (batch sizes and the minibatch-std group, ``aug``/``p``). A change of an option
    another plugin already set to a different value is refused. Raises :class:`OptionsError` naming the
    plugin. ``o`` itself is not modified.
    """
    values: dict[str, Any] = {}
    adjusted = {name: dict(record) for name, record in o.adjusted.items()}
    for name, value in changes.items():
        spec = ADJUSTABLE.get(name)
        if spec is None:
            known = ", ".join(sorted(ADJUSTABLE))
            raise OptionsError(
                f"plugin {plugin!r} cannot change the option {name!r} (it may change: {known})"
            )
        try:
            value = _typed(spec, value)
            problem = spec.problem(value)
        except OptionsError as exc:
            problem = f"{name} {exc}"
        if problem is not None:
            raise OptionsError(f"plugin {plugin!r} sets {name} = {value!r}: {problem}")
        earlier = adjusted.get(name)
        if earlier is not None and earlier["plugin"] != plugin and earlier["to"] != value:
            raise OptionsError(
                f"plugins {earlier['plugin']!r} and {plugin!r} set {name} to different values "
                f"({earlier['to']!r} and {value!r})"
            )
        old = getattr(o, name)
        if value != old:
            values[name] = value
            adjusted[name] = {"plugin": plugin, "from": old, "to": value}
    new = dataclasses.replace(o, **values, adjusted=adjusted)
    try:
        check_combinations(new)
    except OptionsError as exc:
        raise OptionsError(f"after the changes of plugin {plugin!r}: {exc}") from exc
    return new


def check_combinations(o: TrainingOptions) -> None:
    """The checks of resolved options that involve several of them (after plugins' changes)."""
    check_batch(dataclasses.asdict(o))
    if o.aug == "fixed" and o.p is None:
        raise OptionsError("--aug=fixed needs --p (the augmentation probability, 0 to 1)")
    if o.p is not None and o.aug != "fixed":
        raise OptionsError(f"--p={o.p} can only be given with --aug=fixed, not --aug={o.aug}")


def describe_adjustments(o: TrainingOptions) -> list[str]:
    """One line per option a plugin changed: ``Plugin 'x' set mbstd_group = 1 (was 4)``."""
    return [
        f"Plugin {record['plugin']!r} set {name} = {record['to']!r} (was {record['from']!r})"
        for name, record in o.adjusted.items()
    ]


_RUN_RE = re.compile(r"^(\d+)-")


def next_run_dir(outdir: str | os.PathLike[str], desc: str) -> Path:
    """Create and return ``outdir/NNNNN-desc`` with the next free index (safe against concurrent starts)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if p.is_dir() and (m := _RUN_RE.match(p.name))]
    idx = max(ids, default=-1) + 1
    while True:
        path = outdir / f"{idx:05d}-{desc}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            idx += 1


def kimg_label(cur_nimg: int, tick_kimg: float) -> str:
    """``NNNNNN`` (kimg, 6 digits) as upstream; with ticks under 1 kimg, ``NNNNNN.nnn`` to stay unique."""
    kimg, rem = divmod(int(cur_nimg), 1000)
    if tick_kimg >= 1 or math.isclose(tick_kimg, 1):
        return f"{kimg:06d}"
    return f"{kimg:06d}.{rem:03d}"
