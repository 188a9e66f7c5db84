"""Multi-process helpers for ``torchrun`` (one process per GPU, or several CPU processes with gloo).

Synchronisation scheme (documented in ``docs/training.md``): no DistributedDataParallel wrapper. Every
rank starts from rank 0's weights (:func:`broadcast_module`), computes its gradients over all its
accumulation rounds, and then the flattened gradients of the trained module are averaged across ranks
with ONE ``all_reduce`` (:func:`all_reduce_gradients`) before the NaN guard, the plugins' gradient
transforms and the optimizer step. Because every rank then applies the same update, the ranks stay in
sync; this also works with the double backward of R1 and path-length regularisation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` in [0, world_size), ``local_rank`` on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as set by ``torchrun``); defaults: single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(info: DistInfo, device_type: str) -> None:
    """Join the process group (``env://`` rendezvous): NCCL on CUDA, gloo on CPU. No-op for one process."""
    if not info.enabled or tdist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    kwargs = {}
    if device_type == "cuda":
        kwargs["device_id"] = torch.device("cuda", info.local_rank)
    tdist.init_process_group(
        backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size, **kwargs
    )


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (in place)."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        tdist.broadcast(t.data, src=src)


@torch.no_grad()
def average_float_buffers(module: nn.Module, info: DistInfo) -> None:
    """Average every floating-point buffer across ranks (e.g. ``mapping.w_avg``, which each rank updates)."""
    if not info.enabled:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= info.world_size
    for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
        b.copy_(v.view_as(b))


@torch.no_grad()
def all_reduce_gradients(
    params: Sequence[torch.nn.Parameter], info: DistInfo, average: bool = True
) -> torch.Tensor | None:
    """Average (or with ``average=False`` sum) the ``.grad`` of ``params`` across ranks through one flat
    buffer.

    Returns the flat gradient [P] (after the reduction) so the caller can inspect it, or ``None`` when no
    parameter has a gradient. Every rank must pass the same parameter list with the same grads present.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    flat = torch.cat([g.reshape(-1) for g in grads])  # [P]
    if info.enabled:
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        if average:
            flat /= info.world_size
    return flat


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (one small all-reduce; call it on every rank together)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return int(t) > 0


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` across ranks (in place) and return it."""
    if info.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Gather one picklable object from every rank (used for small metadata such as statistic names)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def module_checksums(modules: Iterable[tuple[str, nn.Module]]) -> torch.Tensor:
    """One float64 checksum per parameter (sum and sum of squares mixed): [num_tensors]."""
    sums = []
    for _, m in modules:
        for p in m.parameters():
            x = p.detach().double()
            sums.append(x.sum() + 0.5 * x.square().sum())
    return torch.stack(sums) if sums else torch.zeros([0], dtype=torch.float64)


@torch.no_grad()
def check_consistency(modules: Sequence[tuple[str, nn.Module]], info: DistInfo) -> None:
    """Raise ``RuntimeError`` naming the first tensor whose value differs between ranks."""
    if not info.enabled:
        return
    local = module_checksums(modules)
    device = next(iter(modules))[1].parameters().__next__().device
    local = local.to(device)
    gathered = [torch.empty_like(local) for _ in range(info.world_size)]
    tdist.all_gather(gathered, local)
    ref = gathered[0]
    for r, other in enumerate(gathered[1:], start=1):
        bad = (other - ref).abs() > 1e-6 * (1 + ref.abs())
        if bool(bad.any()):
            names = [f"{n}.{pn}" for n, m in modules for pn, _ in m.named_parameters()]
            first = int(bad.nonzero()[0])
            raise RuntimeError(f"ranks out of sync: {names[first]} differs between rank 0 and rank {r}")
