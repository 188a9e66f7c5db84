"""Training options: upstream's ``--cfg`` presets, validation with clear messages, run directories.

:func:`resolve_options` turns the raw command-line values (``train.py``'s parameter names) plus facts
about the dataset into a :class:`TrainingOptions`; every invalid combination raises
:class:`OptionsError` whose message names the option and the fix (``train.py`` shows it as a usage
error).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylegan2_ada import devices

CFG_NAMES = ("auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar")
AUG_MODES = ("noaug", "ada", "fixed")
AUGPIPES = ("blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc")
DEVICES = ("cpu", "cuda")


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


UPSTREAM_WORKERS = 3  # upstream's DataLoader workers, capped at the CPUs available


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


# Raw command-line defaults (train.py's parameter names). ``None`` means "from the preset / derived".
CLI_DEFAULTS: dict[str, Any] = {
    "outdir": None,
    "data": None,
    "cond": False,
    "gpus": 1,
    "batch": None,
    "batch_gpu": None,
    "kimg": None,
    "snap": 50,
    "tick": 4.0,
    "cfg": "auto",
    "gamma": None,
    "cbase": None,
    "cmax": None,
    "map_depth": None,
    "glr": None,
    "dlr": None,
    "mbstd_group": None,
    "aug": "ada",
    "p": None,
    "target": None,
    "augpipe": "bgc",
    "ada_kimg": None,
    "mirror": False,
    "subset": None,
    "resume": None,
    "freezed": 0,
    "fp32": False,
    "metrics": "none",
    "seed": 0,
    "workers": None,
    "device": None,
    "plugin": (),
    "desc": None,
    "dry_run": False,
}


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


@dataclass
class TrainingOptions:
    """The fully resolved options of a run (written to ``training_options.json``)."""

    outdir: str
    data: str
    dataset_name: str
    resolution: int
    img_channels: int
    c_dim: int
    dataset_size: int
    cond: bool = False
    mirror: bool = False
    subset: int | None = None
    gpus: int = 1
    batch: int = 4
    batch_gpu: int = 4
    kimg: float = 25000
    tick: float = 4.0
    snap: int = 50
    cfg: str = "auto"
    gamma: float = 10.0
    cbase: int = 16384
    cmax: int = 512
    map_depth: int = 2
    z_dim: int = 512
    w_dim: int = 512
    glr: float = 0.0025
    dlr: float = 0.0025
    mbstd_group: int = 4
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    pl_weight: float = 2.0
    style_mixing: float = 0.9
    d_architecture: str = "resnet"
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    aug: str = "ada"
    p: float | None = None
    target: float = 0.6
    augpipe: str = "bgc"
    ada_kimg: float = 500
    ada_interval: int = 4
    resume: str | None = None
    resume_format: str | None = None
    freezed: int = 0
    fp32: bool = False
    num_fp16_res: int = 4
    conv_clamp: int | None = 256
    metrics: list[str] = field(default_factory=list)
    seed: int = 0
    workers: int = 3
    device: str = "cpu"
    plugins: list[str] = field(default_factory=list)
    plugin_options: dict[str, Any] = field(default_factory=dict)
    desc: str = ""
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

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


def check_cli(raw: Mapping[str, Any]) -> None:
    """Checks that need neither the dataset nor the resume network. Raises :class:`OptionsError`."""
    aug = raw.get("aug", "ada")
    if aug not in AUG_MODES:
        raise OptionsError(f"--aug must be one of {', '.join(AUG_MODES)}, got {aug!r}")
    if raw.get("p") is not None and aug != "fixed":
        raise OptionsError("--p can only be given with --aug=fixed (ADA sets p itself)")
    if aug == "fixed" and raw.get("p") is None:
        raise OptionsError("--aug=fixed needs --p (the augmentation probability, 0 to 1)")
    if raw.get("p") is not None and not 0 <= raw["p"] <= 1:
        raise OptionsError(f"--p must be in [0, 1], got {raw['p']}")
    if raw.get("target") is not None and aug != "ada":
        raise OptionsError("--target only applies to --aug=ada")
    if raw.get("target") is not None and not 0 <= raw["target"] <= 1:
        raise OptionsError(f"--target must be in [0, 1], got {raw['target']}")
    if raw.get("ada_kimg") is not None and aug != "ada":
        raise OptionsError("--ada-kimg only applies to --aug=ada")
    if raw.get("ada_kimg") is not None and raw["ada_kimg"] <= 0:
        raise OptionsError(f"--ada-kimg must be > 0, got {raw['ada_kimg']}")
    if raw.get("augpipe", "bgc") not in AUGPIPES:
        raise OptionsError(f"--augpipe must be one of {', '.join(AUGPIPES)}")
    if raw.get("cfg", "auto") not in CFG_NAMES:
        raise OptionsError(f"--cfg must be one of {', '.join(CFG_NAMES)}")
    metrics = [m.strip() for m in str(raw.get("metrics", "none")).split(",") if m.strip()]
    if metrics not in ([], ["none"]):
        raise OptionsError(
            f"--metrics {','.join(metrics)}: metrics are not implemented yet; only `none` is accepted"
        )
    gpus = int(raw.get("gpus", 1))
    if gpus < 1:
        raise OptionsError("--gpus must be at least 1")
    batch, batch_gpu = raw.get("batch"), raw.get("batch_gpu")
    if batch is not None and batch < 1:
        raise OptionsError("--batch must be at least 1")
    if batch_gpu is not None and batch_gpu < 1:
        raise OptionsError("--batch-gpu must be at least 1")
    if batch is not None and batch % gpus != 0:
        raise OptionsError(f"--batch={batch} must be divisible by --gpus={gpus}")
    if batch is not None and batch_gpu is not None and batch % (batch_gpu * gpus) != 0:
        raise OptionsError(
            f"--batch={batch} must be divisible by --batch-gpu={batch_gpu} times --gpus={gpus} "
            f"(gradients are accumulated over batch / (batch_gpu * gpus) rounds)"
        )
    for name in ("kimg", "tick"):
        if raw.get(name) is not None and raw[name] <= 0:
            raise OptionsError(f"--{name} must be > 0, got {raw[name]}")
    for name in ("snap", "cbase", "cmax", "map_depth", "mbstd_group"):
        if raw.get(name) is not None and raw[name] < 1:
            raise OptionsError(f"--{name.replace('_', '-')} must be at least 1, got {raw[name]}")
    for name in ("glr", "dlr"):
        if raw.get(name) is not None and raw[name] <= 0:
            raise OptionsError(f"--{name} must be > 0, got {raw[name]}")
    if raw.get("gamma") is not None and raw["gamma"] < 0:
        raise OptionsError(f"--gamma must be >= 0, got {raw['gamma']}")
    if raw.get("freezed", 0) < 0:
        raise OptionsError("--freezed must be >= 0")
    if (raw.get("workers") or 0) < 0:
        raise OptionsError("--workers must be >= 0")
    if raw.get("subset") is not None and raw["subset"] < 1:
        raise OptionsError("--subset must be at least 1")
    device = raw.get("device")
    if device is not None and device not in DEVICES:
        raise OptionsError(f"--device must be one of {', '.join(DEVICES)}")


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


def resolve_options(
    raw: Mapping[str, Any],
    dataset: DatasetInfo,
    *,
    resume: ResumeInfo | None = None,
    world_size: int = 1,
    device: str | None = None,
    plugin_options: Mapping[str, Any] | None = None,
) -> TrainingOptions:
    """Combine the raw options with the preset and the dataset; raise :class:`OptionsError` if invalid."""
    raw = {**CLI_DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k not in CLI_DEFAULTS}}
    check_cli(raw)
    gpus = int(raw["gpus"])
    check_world_size(gpus, world_size)
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

    spec = preset(raw["cfg"], res, gpus)
    batch = raw["batch"] if raw["batch"] is not None else spec.mb
    if raw["batch_gpu"] is not None:
        batch_gpu = raw["batch_gpu"]
    elif raw["batch"] is not None:
        batch_gpu = batch // gpus
    else:
        batch_gpu = max(spec.mb // spec.ref_gpus, 1)
    if batch % (batch_gpu * gpus) != 0:
        raise OptionsError(
            f"--batch={batch} must be divisible by --batch-gpu={batch_gpu} times --gpus={gpus}"
        )
    mbstd = raw["mbstd_group"] if raw["mbstd_group"] is not None else spec.mbstd
    group = min(mbstd, batch_gpu)
    if batch_gpu % group != 0:
        raise OptionsError(
            f"--batch-gpu={batch_gpu} must be divisible by the minibatch-std group size "
            f"{group} (--mbstd-group)"
        )

    c_dim = dataset.label_dim if raw["cond"] else 0
    if resume is not None:
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

    ada_kimg = 500.0
    ema_rampup = spec.ramp
    if resume is not None and resume.format == "weights":
        ada_kimg, ema_rampup = 100.0, None  # upstream's transfer-learning settings
    if raw["ada_kimg"] is not None:
        ada_kimg = float(raw["ada_kimg"])
    fp32 = bool(raw["fp32"])
    o = TrainingOptions(
        outdir=str(raw["outdir"]),
        data=str(raw["data"]),
        dataset_name=dataset.name,
        resolution=res,
        img_channels=dataset.num_channels,
        c_dim=c_dim,
        dataset_size=dataset.size,
        cond=bool(raw["cond"]),
        mirror=bool(raw["mirror"]),
        subset=raw["subset"],
        gpus=gpus,
        batch=int(batch),
        batch_gpu=int(batch_gpu),
        kimg=float(raw["kimg"] if raw["kimg"] is not None else spec.kimg),
        tick=float(raw["tick"]),
        snap=int(raw["snap"]),
        cfg=raw["cfg"],
        gamma=float(raw["gamma"] if raw["gamma"] is not None else spec.gamma),
        cbase=int(raw["cbase"] if raw["cbase"] is not None else spec.fmaps * 32768),
        cmax=int(raw["cmax"] if raw["cmax"] is not None else 512),
        map_depth=int(raw["map_depth"] if raw["map_depth"] is not None else spec.map),
        glr=float(raw["glr"] if raw["glr"] is not None else spec.lrate),
        dlr=float(raw["dlr"] if raw["dlr"] is not None else spec.lrate),
        mbstd_group=int(mbstd),
        ema_kimg=float(spec.ema),
        ema_rampup=ema_rampup,
        pl_weight=0.0 if raw["cfg"] == "cifar" else 2.0,
        style_mixing=0.0 if raw["cfg"] == "cifar" else 0.9,
        d_architecture="orig" if raw["cfg"] == "cifar" else "resnet",
        aug=raw["aug"],
        p=raw["p"],
        target=float(raw["target"] if raw["target"] is not None else 0.6),
        augpipe=raw["augpipe"],
        ada_kimg=ada_kimg,
        resume=resume.path if resume is not None else None,
        resume_format=resume.format if resume else None,
        freezed=int(raw["freezed"]),
        fp32=fp32,
        num_fp16_res=0 if fp32 else 4,
        conv_clamp=None if fp32 else 256,
        metrics=[],
        seed=int(raw["seed"]),
        workers=devices.default_workers(cap=UPSTREAM_WORKERS)
        if raw["workers"] is None
        else int(raw["workers"]),
        device=device if device is not None else resolve_device(raw["device"]),
        plugins=list(raw["plugin"] or ()),
        plugin_options=dict(plugin_options or {}),
        dry_run=bool(raw["dry_run"]),
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
