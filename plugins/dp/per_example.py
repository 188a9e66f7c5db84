"""Per-example (or per-microbatch) clipped gradient sums of a module, vectorised.

For a loss function returning one loss per example, :func:`clipped_grad_sum` computes

    sum_k  min(1, C / (|g_k| + 1e-6)) * g_k,      g_k = gradient of  sum_{i in group k} L_i

over *groups* k (each example its own group by default; a microbatch is a group of several examples),
where ``g_k`` spans ALL parameters of the module (flat clipping), so each group's contribution has norm
at most C. It also returns the norms |g_k| (private data: use them for tests, never log them).

How (one forward, one backward, no per-example autograd):

1. The module runs once through :func:`plugins.dp.tape.trace`; one backward pass computes only the
   gradients at the outputs of the operations where parameters meet data (no weight gradients).
2. Norms, per parameter-derived tensor W with uses of input rows ``a_r`` and output gradients ``g_r``
   (the gradient of row r is ``sum_t g_rt a_rt^T`` over its P output positions):

   * *ghost norm* where an example covers few positions compared with the weight size
     (``P (D_in + D_out) < D_in D_out``, the low-resolution layers):
     ``|g_k|^2 = sum_{t,s} (g_t . g_s)(a_t . a_s)`` from two P x P Gram matrices, the gradient itself
     never formed;
   * *materialised* elsewhere (high-resolution layers with few weights): each group's gradient from
     the native convolution weight-gradient kernel on that group's rows, kept for step 3 while the
     kept tensors stay under ``keep_bytes``.

   A tensor derived from its parameter by a scale times a permutation/cast (``w * gain``) contributes
   ``scale^2 |.|^2``; any other derivation is mapped to the parameter first (a batched
   vector-Jacobian product of its small graph).
3. Clipped sum: kept gradients are reweighted directly; otherwise one ordinary weight-gradient
   computation per use with each row's output gradient scaled by its group's clip factor.

The uses of one weight in several forwards (fakes and reals) and, on R1 steps, in the differentiated
input gradient, are the rows of one Gram/sum, so an example's gradient includes all of them exactly.

:func:`per_example_grads` returns the materialised per-group gradients. :func:`per_example_grads_loop`
and :func:`clipped_grad_sum_loop` are the plain references: a Python loop over groups with ordinary
autograd (the latter also serves modules the tape cannot trace).

``loss_fn(forward, *batch) -> Tensor [n]`` receives ``forward`` (the module's call with traced
parameters) and the batch tensors (leading dimension n), and returns the n per-example losses. Every
module call inside it must see a batch of whole copies of the n examples stacked as blocks (row r is
example ``r % n``), and nothing may mix examples (e.g. minibatch-stddev groups > 1, batch norm) --
the engine cannot detect mixing; :func:`plugins.dp.mechanism.check_per_example_independent` does for
the StyleGAN2 discriminator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plugins.dp.tape import Derived, Use, trace

LossFn = Callable[..., Tensor]

# Per-group gradients kept between the norm and the sum (above this they are recomputed instead).
DEFAULT_KEEP_BYTES = 512 * 2**20
METHODS = ("auto", "ghost", "materialise")
CLIP_EPS = 1e-6  # factor C / (norm + eps): a clipped gradient's norm stays strictly below C


@dataclass
class ClippedGradients:
    """``grads``: ``{parameter name: sum of clipped group gradients}`` (parameter shape, no noise, not
    normalised); ``norms``: [K] float32, each group's gradient norm before clipping."""

    grads: dict[str, Tensor]
    norms: Tensor


class Grouping:
    """Which examples form each clipping group.

    Args:
        n: number of examples N.
        groups: [N] integer group of each example in ``[0, num_groups)``; ``None``: one group per
            example. For a privacy guarantee a group must be chosen without looking at the examples'
            content and adding or removing one example must not move the others between groups (e.g.
            ``dataset_index % num_groups``; see :func:`plugins.dp.mechanism.microbatch_groups`).
        num_groups: K (default: ``groups.max() + 1``); groups may be empty.
    """

    def __init__(self, n: int, groups: Tensor | None = None, num_groups: int | None = None) -> None:
        self.n = int(n)
        if groups is None:
            self.identity = True
            self.groups = torch.arange(self.n)
            self.count = self.n
            return
        groups = torch.as_tensor(groups).long().cpu()
        if groups.shape != (self.n,):
            raise ValueError(
                f"groups must have shape [{self.n}] (one per example); got {tuple(groups.shape)}"
            )
        count = int(num_groups) if num_groups is not None else (int(groups.max()) + 1 if self.n else 0)
        if self.n and (int(groups.min()) < 0 or int(groups.max()) >= count):
            raise ValueError(f"groups must lie in [0, {count}); got values {groups.min()}..{groups.max()}")
        self.identity = False
        self.groups = groups
        self.count = count

    def of_rows(self, rows: int, device: torch.device) -> Tensor:
        """[rows] the group of each row of a module call (rows = whole copies of the N examples)."""
        if self.n == 0 or rows % self.n:
            raise ValueError(
                f"a module call saw {rows} rows, not a whole number of copies of the {self.n} examples"
            )
        return self.groups.repeat(rows // self.n).to(device)

    def sum_rows(self, t: Tensor) -> Tensor:
        """[R, ...] per-row values -> [K, ...] per-group sums."""
        if self.identity:  # rows are whole copies of the examples in order: a reshape, no scatter
            return t.reshape(-1, self.n, *t.shape[1:]).sum(0)
        out = t.new_zeros(self.count, *t.shape[1:])
        return out.index_add_(0, self.of_rows(t.shape[0], t.device), t)

    def members(self, rows: int) -> list[Tensor | slice]:
        """For each group, the row indices (or a slice) of a module call with ``rows`` rows."""
        if self.identity and rows == self.n:
            return [slice(k, k + 1) for k in range(self.n)]
        of_rows = self.of_rows(rows, torch.device("cpu"))
        return [torch.nonzero(of_rows == k).flatten() for k in range(self.count)]

    def examples(self) -> list[Tensor]:
        """For each group, its example indices."""
        return [torch.nonzero(self.groups == k).flatten() for k in range(self.count)]


def clip_factors(norms: Tensor, clip: float) -> Tensor:
    """``min(1, C / (norm + 1e-6))`` per group; 0 for a non-finite norm (that group is left out, which
    keeps its contribution, 0, within C)."""
    factors = (clip / (norms + CLIP_EPS)).clamp(max=1.0)
    return torch.where(torch.isfinite(norms), factors, torch.zeros_like(factors))


def _weighted_rows(t: Tensor, row_factors: Tensor) -> Tensor:
    """``t`` [R, ...] with row r scaled by f_r; rows with f_r = 0 are exactly 0 even if not finite."""
    scaled = t * row_factors.view(-1, *([1] * (t.ndim - 1)))
    if bool((row_factors > 0).all()):
        return scaled
    return torch.where(row_factors.view(-1, *([1] * (t.ndim - 1))) > 0, scaled, torch.zeros_like(scaled))


def _dropping_zero_rows(t: Tensor, row_factors: Tensor) -> Tensor:
    """``t`` with the rows of factor 0 zeroed (they may hold NaN/inf, and 0 * NaN is NaN)."""
    return t if bool((row_factors > 0).all()) else _weighted_rows(t, (row_factors > 0).to(t.dtype))


def _reweighted(factors: Tensor, per_group: Tensor) -> Tensor:
    """``sum_k factors_k per_group_k``, ignoring groups of factor 0."""
    return torch.tensordot(factors, _dropping_zero_rows(per_group, factors), dims=1)


# ---------------------------------------------------------------------------------------------------
# One use: per-row pieces, per-group gradients, reweighted sums (all float32, in the derived tensor's
# layout).


def _proto(use: Use) -> Tensor:
    """A float32 stand-in with the weight's shape (only the weight gradient is computed; its values are
    not read), without memory, as ``torch.nn.grad.conv2d_weight`` does."""
    return use.g.new_empty(1).expand(use.weight.tensor.shape)


def _conv_weight_grad(use: Use, a: Tensor, g: Tensor) -> Tensor:
    """``sum over rows and positions`` of the conv weight gradient: [C_out, C_in, kh, kw]."""
    geo = use.conv
    return torch.ops.aten.convolution_backward(
        g, a, _proto(use), None, geo.stride, geo.padding, geo.dilation, False, [0, 0], 1, [False, True, False]
    )[1]


def _linear_weight_grad(use: Use, a: Tensor, g: Tensor) -> Tensor:
    """``sum over rows and positions of a (x) g`` from a [R, T, I], g [R, T, O]: [I, O] ([O, I] transposed)."""
    return torch.einsum("rti,rto->oi" if use.transposed else "rti,rto->io", a, g)


def _linear_rows(use: Use) -> tuple[Tensor, Tensor]:
    """a [R, T, I], g [R, T, O] (positions flattened)."""
    r = use.rows
    return use.a.reshape(r, -1, use.a.shape[-1]), use.g.reshape(r, -1, use.g.shape[-1])


def _bias_rows(use: Use) -> Tensor:
    """[R, *weight shape]: each row's bias gradient."""
    g = use.g.sum(use.reduce_dims) if use.reduce_dims else use.g
    return g.reshape(use.rows, *use.weight.tensor.shape)


def _for_each_group(count: int, device: torch.device, fn: Callable[[int], None]) -> None:
    """Call ``fn(k)`` for every group k; on CPU, spread over the intra-op threads, each running its
    kernels single-threaded.

    The per-group kernels are small: run multi-threaded, every one of them synchronises its threads,
    and on a busy machine a descheduled thread makes each wait for a scheduler time slice (measured on
    the loaded 2-core VM: 64 per-example conv weight gradients took 0.13 s with one thread and 2.3 s
    with two). Whole kernels on separate threads need no such barrier and still use every core.
    ``fn`` must only write its own group's slice of the output.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or count < 2:
        for k in range(count):
            fn(k)
        return
    torch.set_num_threads(1)  # new threads take this count for their kernels
    try:
        with ThreadPoolExecutor(min(threads, count)) as pool:
            for future in [pool.submit(fn, k) for k in range(count)]:
                future.result()
    finally:
        torch.set_num_threads(threads)


def _group_grads(use: Use, grouping: Grouping) -> Tensor:
    """[K, *weight shape]: each group's gradient through this use."""
    shape = use.weight.tensor.shape
    if use.kind == "bias":
        return grouping.sum_rows(_bias_rows(use))
    out = use.g.new_zeros(grouping.count, *shape)
    a_rows, g_rows = (use.a, use.g) if use.kind == "conv" else _linear_rows(use)
    members = grouping.members(use.rows)
    weight_grad = _conv_weight_grad if use.kind == "conv" else _linear_weight_grad

    def one(k: int) -> None:
        a, g = a_rows[members[k]], g_rows[members[k]]
        if a.shape[0]:
            out[k] = weight_grad(use, a, g)

    _for_each_group(grouping.count, out.device, one)
    return out


def _weighted_sum(use: Use, row_factors: Tensor) -> Tensor:
    """``sum_r f_r * (gradient of row r)`` [weight shape]: one ordinary weight-gradient computation."""
    if use.kind == "bias":
        return _reweighted(row_factors, _bias_rows(use))
    a, g = (use.a, use.g) if use.kind == "conv" else _linear_rows(use)
    a, g = _dropping_zero_rows(a, row_factors), _weighted_rows(g, row_factors)
    return _conv_weight_grad(use, a, g) if use.kind == "conv" else _linear_weight_grad(use, a, g)


def _pointwise(use: Use) -> bool:
    geo = use.conv
    return geo.kernel == (1, 1) and geo.stride == (1, 1) and geo.padding == (0, 0)


def _positions(use: Use) -> tuple[Tensor, Tensor]:
    """a [R, D_in, T] (conv: unfolded), g [R, D_out, T] over the use's T output positions."""
    if use.kind == "conv":
        geo = use.conv
        if _pointwise(use):  # a 1x1 kernel: the positions are the pixels, no copy
            return use.a.flatten(2), use.g.flatten(2)
        a = F.unfold(use.a, geo.kernel, geo.dilation, geo.padding, geo.stride)
        return a, use.g.flatten(2)
    a, g = _linear_rows(use)
    return a.transpose(1, 2), g.transpose(1, 2)


# ---------------------------------------------------------------------------------------------------
# One derived tensor (all uses of one function of one parameter).


@dataclass(eq=False)
class _Weight:
    derived: Derived  # representative (every tensor with this key is the same function of the parameter)
    uses: list[Use]

    def positions_per_group(self, grouping: Grouping) -> int:
        """Most output positions one group covers, summed over the uses (conv/linear only)."""
        n = max(grouping.n, 1)
        per_example = sum(_n_positions(u) * (u.rows // n) for u in self.uses)
        if grouping.identity:
            return per_example
        return per_example * int(torch.bincount(grouping.groups, minlength=grouping.count).max())

    def alike(self) -> bool:
        """Every use is a convolution or matrix product of the same geometry (their positions line up)."""
        first = self.uses[0]
        return first.kind != "bias" and all(
            u.kind == first.kind and u.transposed == first.transposed and _geometry(u) == _geometry(first)
            for u in self.uses
        )

    def ghost_ok(self, grouping: Grouping, method: str) -> bool:
        """The Gram route applies (same kind and geometry in every use, a known scale) and is wanted:
        ``method`` "auto" (where cheaper), "ghost" (wherever it applies) or "materialise" (never)."""
        if method == "materialise":
            return False
        first = self.uses[0]
        if self.derived.scale is None or not self.alike():
            return False
        if method == "ghost":
            return True
        d_in, d_out = _dims(first)
        p = self.positions_per_group(grouping)
        return p * (d_in + d_out) < d_in * d_out

    def ghost_norms2(self, grouping: Grouping) -> Tensor:
        """[K] squared norms of each group's gradient by Gram matrices over its positions."""
        pieces = [_positions(u) for u in self.uses]  # (a [R, D_in, T], g [R, D_out, T]) per use
        grams = [torch.bmm(x, x.transpose(1, 2)) for x in self._group_positions(pieces, grouping)]
        return (grams[0] * grams[1]).sum((1, 2))

    def _group_positions(self, pieces: list[tuple[Tensor, Tensor]], grouping: Grouping) -> list[Tensor]:
        """For a and g: [K, P, D], each group's items' positions side by side (zero-padded)."""
        n, k = grouping.n, grouping.count
        if grouping.identity:  # example i's items are rows i, i + N, ... of every use
            return [
                torch.cat(
                    [p[j].reshape(-1, n, *p[j].shape[1:]).permute(1, 0, 3, 2) for p in pieces], 1
                ).reshape(n, -1, pieces[0][j].shape[1])
                for j in (0, 1)
            ]
        group = torch.cat([grouping.of_rows(u.rows, pieces[0][0].device) for u in self.uses])  # [items]
        counts = torch.bincount(group, minlength=k)
        order = torch.argsort(group, stable=True)
        slot = torch.empty_like(group)
        slot[order] = (
            torch.arange(group.numel(), device=group.device) - (counts.cumsum(0) - counts)[group[order]]
        )
        out = []
        for j in (0, 1):
            x = torch.cat([p[j] for p in pieces])  # [items, D, T]
            padded = x.new_zeros(k, int(counts.max()), *x.shape[1:])
            padded[group, slot] = x
            out.append(padded.permute(0, 1, 3, 2).reshape(k, -1, x.shape[1]))
        return out

    def group_grads(self, grouping: Grouping, batched: bool) -> Tensor:
        """[K, *weight shape]: each group's gradient, summed over the uses.

        ``batched``: one batched matrix product over the groups' (unfolded) positions, as for the
        Gram route (fast on GPUs); else a loop over groups of the native weight-gradient kernel on
        each group's rows (fast on CPUs, no unfolded copy)."""
        first = self.uses[0]
        shape = first.weight.tensor.shape
        # Matrix products and 1x1 convolutions need no unfolded copy: batched everywhere (fewer calls).
        if (
            batched or first.kind == "linear" or (first.kind == "conv" and _pointwise(first))
        ) and self.alike():
            a, g = self._group_positions([_positions(u) for u in self.uses], grouping)  # [K, P, D_in/out]
            if first.kind == "linear" and not first.transposed:
                return torch.bmm(a.transpose(1, 2), g)  # [K, I, O]
            return torch.bmm(g.transpose(1, 2), a).reshape(grouping.count, *shape)  # [K, O, I(, kh, kw)]
        if first.kind != "conv" or len(self.uses) == 1 or not self.alike():
            return sum(_group_grads(u, grouping) for u in self.uses)
        # Convolutions alike: one weight-gradient call per group on its rows of every use.
        members = [grouping.members(u.rows) for u in self.uses]
        out = first.g.new_zeros(grouping.count, *shape)

        def one(k: int) -> None:
            a = torch.cat([u.a[m[k]] for u, m in zip(self.uses, members)])
            if a.shape[0]:
                g = torch.cat([u.g[m[k]] for u, m in zip(self.uses, members)])
                out[k] = _conv_weight_grad(first, a, g)

        _for_each_group(grouping.count, out.device, one)
        return out

    def weighted_sum(self, factors: Tensor, grouping: Grouping) -> Tensor:
        """``sum_k factors_k g_k`` in this tensor's layout, from the uses' rows."""
        return sum(_weighted_sum(u, factors[grouping.of_rows(u.rows, factors.device)]) for u in self.uses)


def _geometry(use: Use) -> tuple:
    if use.kind == "conv":
        c = use.conv
        return (c.kernel, c.stride, c.padding, c.dilation, tuple(use.a.shape[1:]), tuple(use.g.shape[1:]))
    return (use.a.shape[-1], use.g.shape[-1], _n_positions(use))


def _n_positions(use: Use) -> int:
    if use.kind == "conv":
        return int(use.g.shape[2] * use.g.shape[3])
    return int(use.g[0].numel() // use.g.shape[-1]) if use.kind == "linear" else 1


def _dims(use: Use) -> tuple[int, int]:
    if use.kind == "conv":
        w = use.weight.tensor
        return int(w[0].numel()), int(w.shape[0])
    return int(use.a.shape[-1]), int(use.g.shape[-1])


def _squared_norms(per_group: Tensor) -> Tensor:
    return per_group.flatten(1).square().sum(1)


def _to_param(weight: _Weight, leaf: Tensor, grads: Tensor, batched: bool) -> Tensor:
    """Map gradients w.r.t. the derived tensor to the parameter (vector-Jacobian product), in float32."""
    d = weight.derived
    if d.same_layout:  # e.g. (w * gain).to(float16): scale only (exact in float32, no half-precision VJP)
        return grads * d.scale if d.scale != 1 else grads
    (out,) = torch.autograd.grad(
        weight.derived.tensor,
        leaf,
        grads.to(weight.derived.tensor.dtype),
        retain_graph=True,
        is_grads_batched=batched,
    )
    return out.float()


# ---------------------------------------------------------------------------------------------------
# The engine


def _traced_uses(
    module: nn.Module, loss_fn: LossFn, batch: Sequence[Tensor], grouping: Grouping
) -> tuple[dict[str, Tensor], dict[str, list[_Weight]]]:
    """Run the loss once through the tape; return the leaves and, per parameter, its derived tensors."""
    forward, tape = trace(module)
    losses = loss_fn(forward, *batch)
    if losses.shape != (grouping.n,):
        raise ValueError(f"loss_fn must return [{grouping.n}] per-example losses; got {tuple(losses.shape)}")
    by_param: dict[str, dict[tuple, _Weight]] = {}
    for use in tape.resolve(losses.sum()):
        weights = by_param.setdefault(use.weight.param, {})
        weights.setdefault(use.weight.key, _Weight(use.weight, [])).uses.append(use)
    return tape.leaves, {p: list(w.values()) for p, w in by_param.items()}


def _check_batch(batch: Sequence[Tensor]) -> int:
    if not batch:
        raise ValueError("the batch needs at least one tensor")
    n = batch[0].shape[0]
    if any(t.shape[0] != n for t in batch):
        raise ValueError(f"batch tensors disagree on the number of examples: {[t.shape[0] for t in batch]}")
    return int(n)


def clipped_grad_sum(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[Tensor],
    clip: float,
    *,
    groups: Tensor | None = None,
    num_groups: int | None = None,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
    method: str = "auto",
    batched: bool | None = None,
) -> ClippedGradients:
    """Sum over groups of each group's gradient of ``loss_fn`` clipped to norm ``clip`` (see module doc).

    Args:
        module: the network; gradients for every parameter (``named_parameters()``).
        loss_fn: ``loss_fn(forward, *batch) -> [N]`` per-example losses.
        batch: tensors with the N examples along dim 0 (N may be 0: all-zero sums, no forward).
        clip: C > 0.
        groups, num_groups: microbatches (see :class:`Grouping`); default one group per example.
        keep_bytes: memory for per-group gradients kept between the norms and the sum.
        method: norms by "auto" (the cheaper route per weight), "ghost" (Gram matrices wherever they
            apply) or "materialise" (per-group gradients everywhere); the results agree to rounding.
        batched: how per-group gradients are materialised (see :meth:`_Weight.group_grads`); default:
            batched on CUDA, a loop of native kernels on CPU.
    """
    if not clip > 0:
        raise ValueError(f"clip must be positive; got {clip}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    grouping = Grouping(_check_batch(batch), groups, num_groups)
    params = dict(module.named_parameters())
    zeros = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    if grouping.n == 0:
        return ClippedGradients(zeros, torch.zeros(grouping.count, device=device))
    leaves, weights = _traced_uses(module, loss_fn, batch, grouping)
    batched = device.type == "cuda" if batched is None else batched
    norms2 = torch.zeros(grouping.count, device=device)
    kept: dict[int, Tensor] = {}  # id(_Weight) -> [K, weight shape]; id(leaf) -> [K, param shape]
    budget = keep_bytes
    for name, ws in weights.items():
        sq, per_group, target = _norms2(ws, leaves[name], grouping, method, batched)
        norms2 += sq
        size = per_group.numel() * per_group.element_size() if per_group is not None else budget + 1
        if size <= budget:
            kept[target] = per_group
            budget -= size
    norms = norms2.sqrt()
    factors = clip_factors(norms, clip)
    grads = dict(zeros)
    for name, ws in weights.items():
        grads[name] = _clipped_sum(ws, leaves[name], factors, grouping, kept)
    return ClippedGradients(grads, norms)


def _norms2(
    ws: list[_Weight], leaf: Tensor, grouping: Grouping, method: str, batched: bool
) -> tuple[Tensor, Tensor | None, int]:
    """One parameter's share of the groups' squared norms [K], with the per-group gradients it formed
    (or ``None`` for the Gram route) and the key to keep them under (its derived tensor or the leaf)."""
    if len(ws) == 1 and ws[0].derived.scale is not None:
        w = ws[0]
        if w.ghost_ok(grouping, method):
            return w.derived.scale**2 * w.ghost_norms2(grouping), None, id(w)
        per_group = w.group_grads(grouping, batched)
        return w.derived.scale**2 * _squared_norms(per_group), per_group, id(w)
    # Several derivations or an unknown one: per-group gradients of the parameter itself.
    per_group = sum(_to_param(w, leaf, w.group_grads(grouping, batched), batched=True) for w in ws)
    return _squared_norms(per_group), per_group, id(leaf)


def _clipped_sum(
    ws: list[_Weight], leaf: Tensor, factors: Tensor, grouping: Grouping, kept: dict[int, Tensor]
) -> Tensor:
    """``sum_k factors_k g_k`` for one parameter: from kept per-group gradients, else from the rows."""
    if id(leaf) in kept:
        return _reweighted(factors, kept[id(leaf)])
    total = torch.zeros_like(leaf, dtype=torch.float32)
    for w in ws:
        s = _reweighted(factors, kept[id(w)]) if id(w) in kept else w.weighted_sum(factors, grouping)
        total += _to_param(w, leaf, s, batched=False)
    return total


def per_example_grads(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[Tensor],
    *,
    groups: Tensor | None = None,
    num_groups: int | None = None,
    batched: bool | None = None,
) -> dict[str, Tensor]:
    """``{parameter name: [K, *shape]}``: every group's gradient, materialised through the tape
    (``batched`` as in :func:`clipped_grad_sum`)."""
    grouping = Grouping(_check_batch(batch), groups, num_groups)
    params = dict(module.named_parameters())
    if batched is None:
        batched = bool(params) and next(iter(params.values())).device.type == "cuda"
    out = {n: p.new_zeros(grouping.count, *p.shape, dtype=torch.float32) for n, p in params.items()}
    if grouping.n == 0:
        return out
    leaves, weights = _traced_uses(module, loss_fn, batch, grouping)
    for name, ws in weights.items():
        out[name] = sum(
            _to_param(w, leaves[name], w.group_grads(grouping, batched), batched=True) for w in ws
        )
    return out


def _group_grads_loop(
    module: nn.Module, loss_fn: LossFn, batch: Sequence[Tensor], grouping: Grouping
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """``(k, {name: gradient})`` for each non-empty group k: plain autograd on its summed loss."""
    params = {n: p.detach().requires_grad_(True) for n, p in module.named_parameters()}

    def forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return torch.func.functional_call(module, params, args, kwargs)

    for k, idx in enumerate(grouping.examples()):
        if idx.numel() == 0:
            continue
        loss = loss_fn(forward, *(t[idx.to(t.device)] for t in batch)).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        yield k, {n: g.float() for n, g in zip(params, grads) if g is not None}


def per_example_grads_loop(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[Tensor],
    *,
    groups: Tensor | None = None,
    num_groups: int | None = None,
) -> dict[str, Tensor]:
    """Reference for :func:`per_example_grads`: a Python loop over groups with plain autograd."""
    grouping = Grouping(_check_batch(batch), groups, num_groups)
    params = dict(module.named_parameters())
    out = {n: p.new_zeros(grouping.count, *p.shape, dtype=torch.float32) for n, p in params.items()}
    for k, grads in _group_grads_loop(module, loss_fn, batch, grouping):
        for name, g in grads.items():
            out[name][k] = g
    return out


def clipped_grad_sum_loop(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[Tensor],
    clip: float,
    *,
    groups: Tensor | None = None,
    num_groups: int | None = None,
) -> ClippedGradients:
    """Reference (and fallback for modules the tape cannot trace) for :func:`clipped_grad_sum`: a
    Python loop over groups, each group's gradient clipped and added as it comes (memory of one)."""
    if not clip > 0:
        raise ValueError(f"clip must be positive; got {clip}")
    grouping = Grouping(_check_batch(batch), groups, num_groups)
    params = dict(module.named_parameters())
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    norms = torch.zeros(grouping.count, device=device)
    for k, grads in _group_grads_loop(module, loss_fn, batch, grouping):
        norms[k] = torch.sqrt(sum(g.square().sum() for g in grads.values()))
        factor = clip_factors(norms[k : k + 1], clip)[0]
        if factor > 0:
            for name, g in grads.items():
                total[name] += g * factor
    return ClippedGradients(total, norms)
