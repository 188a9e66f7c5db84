"""Training snapshots on top of :mod:`stylegan2_ada.checkpoint`: save, find the latest, resume.

A snapshot ``network-snapshot-NNNNNN.safetensors`` (kimg, 6 digits) is one native checkpoint holding
the networks ``G``, ``D``, ``G_ema`` and ``augment_pipe`` and everything needed to continue training:

- tensors ``optimizer/<G|D>/<param index>/<key>`` (Adam's ``exp_avg``, ``exp_avg_sq``, ``step``),
  ``loss/pl_mean``, ``rng/<rank>/torch`` and ``rng/<rank>/cuda`` (RNG states of every rank);
- metadata ``training_state`` (``cur_nimg``, ``cur_tick``, ``batch_idx``, ``tick_start_nimg``,
  ``sampler_position``), ``ada`` (the controller's counters; p itself is the pipe's buffer), ``rng``
  (numpy and python states per rank), ``plugins`` (each plugin's ``plugin_state``),
  ``required_plugins`` (``{plugin: reason}``: plugins without which the snapshot must not be resumed,
  from ``resume_requirement``), ``training_options``, ``resumed_from``, ``class_names``.

A snapshot is a file people share, so it names no machine or person: ``save_checkpoint`` records no
host name, and every path in ``training_options`` and ``resumed_from`` (data, outdir, resume, plugin
files) is reduced to its last component, since folder names often hold user, site or patient names.
The run folder's ``training_options.json``, which stays on the machine, keeps the full paths.

The checkpoint is written to a temporary file and renamed (see ``save_checkpoint``), so a crash leaves
the previous snapshots untouched; older snapshots are kept. Temporary files that a killed run left in
the run folders under the same outdir are removed when a snapshot is saved
(:func:`stylegan2_ada.atomic.clean_stale_temp_files`).

Resuming (:func:`load_resume_checkpoint`) raises :class:`ResumeError`, with a one-line message naming
the file and the problem, for anything that makes a file unusable: missing, unreadable, damaged
(content hash mismatch), not a snapshot, or a training snapshot with incomplete training state.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan2_ada.atomic import clean_stale_temp_files
from stylegan2_ada.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from stylegan2_ada.legacy_pickle import LegacyPickleError

SNAPSHOT_PREFIX = "network-snapshot-"
SNAPSHOT_SUFFIX = ".safetensors"
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)(?:\.(\d{3}))?\.safetensors$")
_RUN_RE = re.compile(r"^(\d+)-")
SNAPSHOT_KIND = "stylegan2_ada-training-snapshot"


class ResumeError(ValueError):
    """``--resume`` cannot be honoured (no snapshot, unreadable or damaged file, wrong network, ...); the
    message is one line that names the file and says why, for a command line to print as it is."""


#: What loading a file can raise when the file itself is unusable (nothing else is expected).
_UNUSABLE_FILE_ERRORS = (CheckpointError, LegacyPickleError, OSError)


@dataclass
class TrainingState:
    """Counters of a run, as stored in snapshots.

    ``cur_nimg``: real images shown to D so far. ``cur_tick``: index of the NEXT tick. ``batch_idx``:
    training steps done. ``tick_start_nimg``: ``cur_nimg`` when the next tick started.
    ``sampler_position``: dataset items this rank's sampler has handed out.
    """

    cur_nimg: int = 0
    cur_tick: int = 0
    batch_idx: int = 0
    tick_start_nimg: int = 0
    sampler_position: int = 0

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingState:
        return cls(**{k: int(d[k]) for k in cls().__dict__ if k in d})


@dataclass
class RngState:
    """The random state of one process: torch (CPU [and CUDA]) as uint8 tensors, numpy and python as JSON."""

    torch_cpu: torch.Tensor
    torch_cuda: torch.Tensor | None
    numpy_global: dict[str, Any]
    numpy_loop: dict[str, Any] | None
    python: list[Any]


def capture_rng(device: torch.device, loop_rng: np.random.Generator | None) -> RngState:
    """Snapshot this process's RNG states (``loop_rng``: the loop's own numpy generator, if any)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    return RngState(
        torch_cpu=torch.get_rng_state(),
        torch_cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        numpy_global={
            "kind": kind,
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        numpy_loop=dict(loop_rng.bit_generator.state) if loop_rng is not None else None,
        python=[py[0], list(py[1]), py[2]],
    )


def restore_rng(state: RngState, device: torch.device, loop_rng: np.random.Generator | None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state.torch_cpu.cpu().to(torch.uint8))
    if device.type == "cuda" and state.torch_cuda is not None:
        torch.cuda.set_rng_state(state.torch_cuda.cpu().to(torch.uint8), device)
    g = state.numpy_global
    np.random.set_state(
        (g["kind"], np.asarray(g["keys"], dtype=np.uint32), g["pos"], g["has_gauss"], g["cached_gaussian"])
    )
    if loop_rng is not None and state.numpy_loop is not None:
        loop_rng.bit_generator.state = state.numpy_loop
    random.setstate((state.python[0], tuple(state.python[1]), state.python[2]))


def snapshot_path(run_dir: str | Path, label: str) -> Path:
    """``run_dir/network-snapshot-<label>.safetensors`` (label from :func:`.options.kimg_label`)."""
    return Path(run_dir) / f"{SNAPSHOT_PREFIX}{label}{SNAPSHOT_SUFFIX}"


def _optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"optimizer/{name}/{idx}/{key}"] = t
    return out


def save_snapshot(
    path: str | Path,
    *,
    G: nn.Module,
    D: nn.Module,
    G_ema: nn.Module,
    augment_pipe: nn.Module | None,
    optimizers: Mapping[str, torch.optim.Optimizer],
    pl_mean: torch.Tensor,
    state: TrainingState,
    rng_states: list[RngState],
    ada_state: Mapping[str, Any] | None,
    plugin_states: Mapping[str, Any],
    training_options: Mapping[str, Any],
    resumed_from: str | None = None,
    class_names: list[str] | None = None,
    required_plugins: Mapping[str, str] | None = None,
) -> None:
    """Write one training snapshot atomically (see the module docstring for its contents).

    ``rng_states``: one per rank, in rank order (gathered by the caller).
    """
    networks: dict[str, nn.Module] = {"G": G, "D": D, "G_ema": G_ema}
    if augment_pipe is not None:
        networks["augment_pipe"] = augment_pipe
    tensors: dict[str, torch.Tensor] = {"loss/pl_mean": pl_mean.detach().reshape([])}
    for name, opt in optimizers.items():
        tensors.update(_optimizer_tensors(name, opt))
    rng_meta = []
    for rank, rs in enumerate(rng_states):
        tensors[f"rng/{rank}/torch"] = rs.torch_cpu
        if rs.torch_cuda is not None:
            tensors[f"rng/{rank}/cuda"] = rs.torch_cuda
        rng_meta.append({"numpy_global": rs.numpy_global, "numpy_loop": rs.numpy_loop, "python": rs.python})
    metadata = {
        "kind": SNAPSHOT_KIND,
        "training_state": state.to_dict(),
        "ada": dict(ada_state) if ada_state is not None else None,
        "augment_p": float(augment_pipe.p) if augment_pipe is not None else None,
        "rng": rng_meta,
        "plugins": dict(plugin_states),
        "required_plugins": dict(required_plugins or {}),
        "training_options": shareable(dict(training_options)),
        "resumed_from": shareable(resumed_from),
        "class_names": class_names,
    }
    clean_run_folders(Path(path).parent)
    save_checkpoint(path, networks=networks, tensors=tensors, metadata=metadata)


def shareable(value: Any) -> Any:
    """``value`` with every string that is a path (holds ``/`` or the system's separator) reduced to its
    last component, in nested dicts and lists too: ``'/home/ann/site-3/data'`` -> ``'data'``."""
    if isinstance(value, str):
        separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
        if any(sep in value for sep in separators):
            trimmed = value.rstrip("".join(separators))
            return trimmed.replace(os.sep, "/").rsplit("/", 1)[-1] if trimmed else value
        return value
    if isinstance(value, Mapping):
        return {key: shareable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable(item) for item in value]
    return value


def clean_run_folders(run_dir: str | Path) -> list[Path]:
    """Remove stale temporary files (a killed save's) from ``run_dir`` and, when it is a run folder
    (``NNNNN-...``), from the other run folders beside it. Returns the files removed."""
    run_dir = Path(run_dir)
    folders = [run_dir]
    if _RUN_RE.match(run_dir.name) and run_dir.parent.is_dir():
        folders += [
            f for f in run_dir.parent.iterdir() if f != run_dir and _RUN_RE.match(f.name) and f.is_dir()
        ]
    return [removed for folder in folders for removed in clean_stale_temp_files(folder)]


# ---------------------------------------------------------------------------------------------- finding


def _snapshot_sort_key(path: Path) -> tuple[int, int]:
    m = SNAPSHOT_RE.match(path.name)
    assert m is not None
    return int(m.group(1)), int(m.group(2) or 0)


def list_snapshots(outdir: str | Path) -> list[Path]:
    """Every snapshot under ``outdir``'s run folders, newest first (by run index, then kimg)."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        return []
    found: list[tuple[int, tuple[int, int], Path]] = []
    for run in outdir.iterdir():
        m = _RUN_RE.match(run.name)
        if not (run.is_dir() and m):
            continue
        for f in run.iterdir():
            if f.is_file() and SNAPSHOT_RE.match(f.name):
                found.append((int(m.group(1)), _snapshot_sort_key(f), f))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [f for _, _, f in found]


def load_resume_checkpoint(spec: str, outdir: str | Path) -> Checkpoint:
    """Load ``--resume`` ``spec``: a path (native snapshot or upstream ``.pkl``) or ``latest``.

    ``latest`` is the newest snapshot of the run folders under ``outdir`` (highest run index, then
    highest kimg); an unusable one (e.g. damaged on disk) is skipped with a warning naming it and the
    problem. A training snapshot's training state is checked here too, before anything is built.

    Raises:
        ResumeError: the file is missing, unreadable, damaged, or an incomplete training snapshot; or,
            for ``latest``, no snapshot under ``outdir`` is usable.
    """
    if spec == "latest":
        candidates = list_snapshots(outdir)
        if not candidates:
            raise ResumeError(
                f"--resume latest: no {SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX} in the run folders under {outdir}"
            )
        problems: list[ResumeError] = []
        for path in candidates:
            try:
                return _load_usable(path)
            except ResumeError as exc:
                warnings.warn(f"--resume latest: skipping unusable snapshot: {exc}", stacklevel=2)
                problems.append(exc)
        raise ResumeError(
            f"--resume latest: none of the {len(candidates)} snapshots under {outdir} can be used; "
            f"the newest: {problems[0]}"
        )
    if not Path(spec).is_file():
        raise ResumeError(
            f"--resume {spec}: no such file (give a snapshot path, an upstream .pkl, or 'latest')"
        )
    try:
        return _load_usable(spec)
    except ResumeError as exc:
        raise ResumeError(f"--resume {exc}") from exc


def _load_usable(path: str | Path) -> Checkpoint:
    """Load a resume candidate; ResumeError ``'<path>: <problem>'`` if it cannot be used."""
    try:
        ckpt = load_checkpoint(path, device="cpu")
    except _UNUSABLE_FILE_ERRORS as exc:
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise ResumeError(message) from exc
    if is_training_snapshot(ckpt):
        parse_resume_data(ckpt)  # the training state is complete (raises ResumeError naming the file)
    return ckpt


def check_required_plugins(ckpt: Checkpoint, enabled: Sequence[str]) -> None:
    """Raise :class:`ResumeError` when the snapshot names a plugin (``required_plugins``) that is not
    among the ``enabled`` plugin names, quoting the plugin's reason."""
    required = ckpt.metadata.get("required_plugins") if is_training_snapshot(ckpt) else None
    missing = {name: reason for name, reason in (required or {}).items() if name not in enabled}
    if missing:
        needs = "; ".join(f"--plugin {name}: {reason}" for name, reason in missing.items())
        raise ResumeError(f"--resume {ckpt.path}: this snapshot can only be continued with {needs}")


def is_training_snapshot(ckpt: Checkpoint) -> bool:
    return ckpt.format == "native" and ckpt.metadata.get("kind") == SNAPSHOT_KIND


@dataclass
class ResumeData:
    """What the loop restores from a native snapshot."""

    state: TrainingState
    optimizer_states: dict[str, dict[int, dict[str, torch.Tensor]]] = field(default_factory=dict)
    pl_mean: torch.Tensor | None = None
    rng_states: list[RngState] = field(default_factory=list)
    ada_state: dict[str, Any] | None = None
    plugin_states: dict[str, Any] = field(default_factory=dict)


def parse_resume_data(ckpt: Checkpoint) -> ResumeData:
    """Split a native training snapshot into the pieces the loop restores.

    Raises:
        ResumeError: not a training snapshot, or one whose training state is incomplete or malformed.
    """
    if not is_training_snapshot(ckpt):
        raise ResumeError(f"{ckpt.path}: a native checkpoint but not a training snapshot (no training state)")
    try:
        return _parse_resume_data(ckpt)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ResumeError(
            f"{ckpt.path}: incomplete training snapshot (its training state cannot be read: {exc!r})"
        ) from exc


def _parse_resume_data(ckpt: Checkpoint) -> ResumeData:
    meta = ckpt.metadata
    if "cur_nimg" not in meta["training_state"]:  # the one counter every reader needs
        raise KeyError("training_state.cur_nimg")
    opt_states: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, t in ckpt.tensors.items():
        parts = key.split("/")
        if parts[0] == "optimizer" and len(parts) == 4:
            opt_states.setdefault(parts[1], {}).setdefault(int(parts[2]), {})[parts[3]] = t
    rngs: list[RngState] = []
    for rank, rm in enumerate(meta.get("rng") or []):
        rngs.append(
            RngState(
                torch_cpu=ckpt.tensors[f"rng/{rank}/torch"],
                torch_cuda=ckpt.tensors.get(f"rng/{rank}/cuda"),
                numpy_global=rm["numpy_global"],
                numpy_loop=rm.get("numpy_loop"),
                python=rm["python"],
            )
        )
    return ResumeData(
        state=TrainingState.from_dict(meta["training_state"]),
        optimizer_states=opt_states,
        pl_mean=ckpt.tensors.get("loss/pl_mean"),
        rng_states=rngs,
        ada_state=meta.get("ada"),
        plugin_states=dict(meta.get("plugins") or {}),
    )


def load_optimizer_state(
    opt: torch.optim.Optimizer, saved: Mapping[int, Mapping[str, torch.Tensor]], name: str
) -> None:
    """Put saved per-parameter state into ``opt``; the hyperparameters (lr, betas) stay the current ones."""
    sd = opt.state_dict()
    n_params = sum(len(g["params"]) for g in sd["param_groups"])
    bad = [i for i in saved if i >= n_params]
    if bad:
        raise ResumeError(
            f"optimizer {name}: the snapshot has state for {max(bad) + 1} parameters, the network {n_params}"
        )
    sd["state"] = {int(i): {k: v.clone() for k, v in st.items()} for i, st in saved.items()}
    opt.load_state_dict(sd)


@torch.no_grad()
def copy_weights(src: nn.Module, dst: nn.Module, *, strict: bool, where: str) -> tuple[int, list[str]]:
    """Copy parameters and buffers from ``src`` to ``dst`` by name.

    ``strict``: every tensor must exist in both with the same shape (continuing a run). Otherwise the
    tensors with matching names and shapes are copied (transfer learning). Returns
    ``(number copied, names skipped)``.
    """
    src_t = {**dict(src.named_parameters()), **dict(src.named_buffers())}
    dst_t = {**dict(dst.named_parameters()), **dict(dst.named_buffers())}
    skipped: list[str] = []
    mismatched: list[str] = []
    copied = 0
    for name, t in dst_t.items():
        s = src_t.get(name)
        if s is None or s.shape != t.shape:
            (mismatched if strict else skipped).append(
                f"{name} (snapshot {'missing' if s is None else list(s.shape)}, network {list(t.shape)})"
            )
            continue
        t.copy_(s.to(t.device, t.dtype))
        copied += 1
    extra = sorted(set(src_t) - set(dst_t))
    if strict and (mismatched or extra):
        listed = "; ".join(mismatched[:5] + [f"{e} (not in the network)" for e in extra[:5]])
        raise ResumeError(
            f"{where}: the snapshot's network does not match the options of this run: {listed}. "
            "Use the same --cfg/--cbase/--cmax/--map-depth/--cond as the run being resumed."
        )
    return copied, skipped
