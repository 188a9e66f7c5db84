"""Recording where a module's parameters meet the data, so that per-example gradients need no weight
gradient from autograd.

Inside :func:`trace`, the module runs (through ``torch.func.functional_call``) with every parameter
replaced by a fresh leaf, and a ``TorchFunctionMode`` watches every torch call:

* A call on parameter-derived tensors alone, possibly with the module's buffers (``w * gain``,
  ``w.to(dtype)``, ``w.t()``, ``b.reshape(...)``, ``w * mask``), yields a parameter-derived tensor
  again. It keeps its autograd graph back to the leaf, so a gradient with respect to it maps back to
  the parameter by a vector-Jacobian product of that small graph. Its *key* (parameter name + the
  calls that made it) is equal for equal functions of the parameter, so the several forwards of one
  step (fakes, reals) count as uses of one tensor.
* A call that combines a derived tensor with data is a *use*. Supported uses:

  - ``conv``: ``torch.conv2d(x, w, b, stride, padding, dilation, groups=1)`` (``w`` and/or ``b`` derived);
  - ``linear``: ``x @ W``, ``torch.addmm(b, x, W)``, ``F.linear(x, W, b)`` (``W`` and/or ``b`` derived);
  - ``bias``: ``x + b`` with ``b`` broadcast over the batch.

  The use runs on *detached* weights, so autograd computes no weight gradient at all. It records its
  input ``a`` [R, ...] and marks its output as a *tap*; the gradient of the loss at the tap is the
  output gradient ``g``. The gradient of row r with respect to the weight is then
  ``sum_t g_rt (x) a_rt`` over output positions t (conv: of the unfolded input), which the caller
  computes per example, or only its norm (see :mod:`plugins.dp.per_example`).
* When an input gradient is itself differentiated (``create_graph=True``, as the R1 penalty does), the
  backward of a conv/linear use is a second use of the same weight (the transposed operation), recorded
  the same way with the roles swapped: ``a`` is the gradient at its output, ``g`` its input. Third
  derivatives are refused.

Any other way a parameter meets data raises :class:`UnsupportedParameterUse` naming the parameter and the
call, and :meth:`Tape.check_complete` refuses a loss whose graph still reaches a parameter (a use the
mode did not see). Rows: every module call's batch must be whole copies of the N examples stacked as
blocks (row r is example ``r % N``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree


class UnsupportedParameterUse(RuntimeError):
    """A parameter is combined with data in a way the per-example engine cannot differentiate per example."""


@dataclass(eq=False)
class Derived:
    """A tensor computed from one parameter alone (no data).

    ``scale``: the map parameter -> tensor is ``scale`` times a permutation/reshape/cast (so gradient
    norms scale by ``|scale|``), or ``None`` when it is anything else. ``same_layout``: moreover no
    permutation or reshape (the gradient of the parameter is ``scale`` times that of the tensor).
    """

    tensor: Tensor
    param: str
    key: tuple
    scale: float | None
    same_layout: bool = True


@dataclass(frozen=True)
class ConvGeometry:
    """The hyper-parameters of a ``conv2d`` use (groups is always 1)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    in_shape: tuple[int, ...]  # [R, C_in, H, W] of the conv input


@dataclass(eq=False)
class Use:
    """One place where a derived tensor meets data; the side that is the tap's gradient stays ``None``
    until :meth:`resolve`.

    kind ``conv``: ``a`` [R, C_in, H, W] (conv input), ``g`` [R, C_out, H', W'] (output gradient); the
    weight gradient of row r is ``conv_weight(a_r, g_r)`` [C_out, C_in, kh, kw].
    kind ``linear``: ``a`` [R, ..., I], ``g`` [R, ..., O]; row gradient ``sum_t a_rt (x) g_rt`` [I, O],
    or [O, I] when ``transposed`` (``F.linear``'s weight layout).
    kind ``bias``: ``g`` [R, ...]; row gradient ``g_r`` summed over ``reduce_dims``, shaped as the weight.
    """

    kind: str
    weight: Derived
    tap: Tensor
    a: Tensor | None = None
    g: Tensor | None = None
    conv: ConvGeometry | None = None
    transposed: bool = False
    reduce_dims: tuple[int, ...] = ()
    a_version: int | None = None

    @property
    def rows(self) -> int:
        return (self.a if self.a is not None else self.g).shape[0]

    def resolve(self, tap_grad: Tensor) -> None:
        """Fill in the missing side with the gradient at the tap (detached, float32 from here on)."""
        if self.a is not None and self.a_version is not None and self.a._version != self.a_version:
            raise UnsupportedParameterUse(
                f"the input of a use of {self.weight.param!r} was modified in place after the use"
            )
        if self.g is None:  # first uses and biases: the tap is the output
            self.g = tap_grad
        else:  # second uses (input gradients): the tap's gradient plays the input's part
            self.a = tap_grad
        self.g = self.g.detach().float()
        self.a = self.a.detach().float() if self.a is not None else None


# Calls on derived tensors alone that map the parameter by a scale times a permutation/reshape/cast.
_SCALING = {"mul", "__mul__", "__rmul__", "multiply"}
_DIVIDING = {"div", "__truediv__", "divide", "true_divide"}
_NEGATING = {"neg", "__neg__", "negative"}
_SAME_LAYOUT = {"to", "contiguous", "clone", "float"} | _SCALING | _DIVIDING | _NEGATING
_NORM_PRESERVING = {
    "to",
    "contiguous",
    "t",
    "transpose",
    "permute",
    "reshape",
    "view",
    "flatten",
    "unsqueeze",
    "squeeze",
    "flip",
    "clone",
    "float",
}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    return v * 2 if len(v) == 1 else v


def _describe(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class Tape:
    """The parameter leaves of one traced call, the derived tensors and the recorded uses."""

    def __init__(self, leaves: Mapping[str, Tensor], constants: Iterable[Tensor] = ()) -> None:
        self.leaves = dict(leaves)
        self.uses: list[Use] = []
        self._derived: dict[int, Derived] = {}
        self._constants = {id(t): t for t in constants}  # the module's buffers: not data
        for name, leaf in self.leaves.items():
            self._register(Derived(leaf, name, (name,), 1.0))

    # ------------------------------------------------------------------ derived tensors
    def _register(self, d: Derived) -> Derived:
        self._derived[id(d.tensor)] = d
        return d

    def derived_of(self, t: Any) -> Derived | None:
        """The record of ``t`` if it is a parameter-derived tensor (identity, not equality)."""
        if not isinstance(t, Tensor):
            return None
        d = self._derived.get(id(t))
        return d if d is not None and d.tensor is t else None

    def _is_constant(self, t: Any) -> bool:
        return isinstance(t, Tensor) and self._constants.get(id(t)) is t

    def _derive(self, func: Callable, args: tuple, kwargs: dict, inputs: list[Derived]) -> Any:
        """Run a call on derived tensors (and constants) alone; its tensor results are derived too."""
        name = getattr(func, "__name__", "")
        params = {d.param for d in inputs}
        if len(params) != 1:
            raise UnsupportedParameterUse(
                f"{_describe(func)} combines the parameters {sorted(params)}; each use must involve one"
            )
        if name.endswith("_") and not name.endswith("__"):
            raise UnsupportedParameterUse(f"in-place {_describe(func)} on parameter {inputs[0].param!r}")
        out = func(*args, **kwargs)
        if isinstance(out, Tensor) and self.derived_of(out) is not None:
            return out  # a no-op (``w.to(w.dtype)`` returns ``w`` itself)
        flat = pytree.tree_leaves((args, kwargs))
        numbers = [v for v in flat if isinstance(v, (int, float))]
        scale = inputs[0].scale if len(inputs) == 1 and not any(map(self._is_constant, flat)) else None
        if scale is not None:
            if name in _SCALING and len(numbers) == 1 and len(args) == 2:
                scale *= float(numbers[0])
            elif name in _DIVIDING and len(numbers) == 1 and len(args) == 2 and args[1] is numbers[0]:
                scale /= float(numbers[0])
            elif name in _NEGATING:
                scale = -scale
            elif name not in _NORM_PRESERVING or not isinstance(out, Tensor):
                scale = None
        sig = pytree.tree_map(self._signature, (args, kwargs))
        key = (inputs[0].param, name, repr(sig))
        same_layout = scale is not None and inputs[0].same_layout and name in _SAME_LAYOUT
        if isinstance(out, Tensor):
            return self._register(Derived(out, inputs[0].param, key, scale, same_layout)).tensor
        outs, spec = pytree.tree_flatten(out)  # e.g. w.chunk(2): each piece is derived (general map)
        outs = [
            self._register(Derived(o, inputs[0].param, (*key, i), None, False)).tensor
            if isinstance(o, Tensor)
            else o
            for i, o in enumerate(outs)
        ]
        return pytree.tree_unflatten(outs, spec)

    def _signature(self, v: Any) -> Any:
        d = self.derived_of(v)
        if d is not None:
            return d.key
        return ("constant", id(v)) if self._is_constant(v) else repr(v)

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        derived = [d for d in map(self.derived_of, tensors) if d is not None]
        if not derived:
            return func(*args, **kwargs)
        if all(self.derived_of(t) is not None or self._is_constant(t) for t in tensors):
            return self._derive(func, args, kwargs, derived)
        handler = _USE_HANDLERS.get(func)
        if handler is None:
            raise UnsupportedParameterUse(
                f"parameter {derived[0].param!r} meets data in {_describe(func)}, which the per-example "
                f"engine does not support (supported: conv2d with groups=1, matmul/addmm/linear, bias add)"
            )
        return handler(self, args, kwargs)

    def tap(self, out: Tensor) -> Tensor:
        """Make ``out`` a tensor whose gradient autograd can return (a leaf when nothing before needs one)."""
        return out if out.requires_grad else out.requires_grad_(True)

    def record(self, use: Use) -> None:
        if use.a is not None:
            use.a_version = use.a._version
        self.uses.append(use)

    # ------------------------------------------------------------------ after the forward
    def check_complete(self, loss: Tensor) -> None:
        """Refuse a loss whose autograd graph reaches a parameter leaf: a use the mode did not see."""
        leaves = {id(t): name for name, t in self.leaves.items()}
        seen: set[int] = set()
        stack = [loss.grad_fn] if loss.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            variable = getattr(node, "variable", None)
            if variable is not None and id(variable) in leaves:
                raise UnsupportedParameterUse(
                    f"parameter {leaves[id(variable)]!r} reaches the loss through an operation the "
                    f"per-example engine did not see"
                )
            stack.extend(fn for fn, _ in node.next_functions)

    def resolve(self, loss: Tensor) -> list[Use]:
        """Backpropagate ``loss`` to the taps only (no weight gradients) and complete every use.

        Returns the uses that received a gradient (a use the loss does not depend on is dropped).
        """
        self.check_complete(loss)
        taps = list({id(u.tap): u.tap for u in self.uses}.values())
        if not taps:
            return []
        grads = torch.autograd.grad(loss, taps, allow_unused=True)
        by_tap = {id(t): g for t, g in zip(taps, grads)}
        done = []
        for use in self.uses:
            g = by_tap[id(use.tap)]
            if g is not None:
                use.resolve(g)
                done.append(use)
        self.uses = []
        return done


class _Mode(TorchFunctionMode):
    def __init__(self, tape: Tape) -> None:
        super().__init__()
        self.tape = tape

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        return self.tape.dispatch(func, args, kwargs or {})


def trace(module: nn.Module) -> tuple[Callable[..., Any], Tape]:
    """``(forward, tape)``: ``forward(*args, **kwargs)`` runs ``module`` with its parameters replaced by
    traced leaves (``tape.leaves``); the tape collects the uses. Buffers are the module's own (constants
    that may shape a parameter, e.g. a mask)."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in module.named_parameters()}
    tape = Tape(leaves, module.buffers())

    def forward(*args: Any, **kwargs: Any) -> Any:
        with _Mode(tape):
            return torch.func.functional_call(module, leaves, args, kwargs)

    return forward, tape


# ---------------------------------------------------------------------------------------------------
# Uses: autograd functions that run on detached weights and record their inputs/outputs.


class _WeightUse(torch.autograd.Function):
    """``spec.apply(x)``: an operation linear in the data ``x`` with a detached weight (a spec below).

    Backward gives the input gradient only; under ``create_graph`` (e.g. R1) that input gradient is a
    second use of the weight, recorded on the tape (:class:`_InputUse`)."""

    @staticmethod
    def forward(x: Tensor, spec: _ConvSpec | _LinearSpec) -> Tensor:  # type: ignore[override]
        return spec.apply(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.spec = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        spec = ctx.spec
        if not torch.is_grad_enabled():
            return spec.input_grad(grad), None
        out = spec.tape.tap(_InputUse.apply(grad, spec))
        if spec.derived is not None:
            spec.tape.record(spec.input_use(out, grad))
        return out, None


class _InputUse(torch.autograd.Function):
    """``spec.input_grad(grad)``: linear in ``grad``; its adjoint is ``spec.adjoint``."""

    @staticmethod
    def forward(grad: Tensor, spec: _ConvSpec | _LinearSpec) -> Tensor:  # type: ignore[override]
        return spec.input_grad(grad)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.spec = inputs[1]

    @staticmethod
    def backward(ctx: Any, e: Tensor) -> tuple[Tensor, None]:
        if torch.is_grad_enabled():
            raise UnsupportedParameterUse("third derivatives are not supported by the per-example engine")
        return ctx.spec.adjoint(e), None


@dataclass(eq=False)
class _ConvSpec:
    tape: Tape
    weight: Tensor  # detached
    bias: Tensor | None  # detached
    geometry: ConvGeometry
    derived: Derived | None  # the weight's record, None for a constant weight

    def _conv(self, x: Tensor, bias: Tensor | None) -> Tensor:
        g = self.geometry
        return F.conv2d(x, self.weight, bias, g.stride, g.padding, g.dilation)

    def apply(self, x: Tensor) -> Tensor:
        return self._conv(x, self.bias)

    def input_grad(self, grad: Tensor) -> Tensor:
        g = self.geometry
        return torch.nn.grad.conv2d_input(g.in_shape, self.weight, grad, g.stride, g.padding, g.dilation)

    def adjoint(self, e: Tensor) -> Tensor:
        return self._conv(e, None)

    def input_use(self, out: Tensor, grad: Tensor) -> Use:
        return Use("conv", self.derived, tap=out, g=grad, conv=self.geometry)


def _conv_use(tape: Tape, args: tuple, kwargs: dict) -> Tensor:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    p = {
        "bias": None,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        **dict(zip(names, args)),
        **kwargs,
    }
    x, w, b = p["input"], p["weight"], p["bias"]
    wd, bd = tape.derived_of(w), tape.derived_of(b)
    if tape.derived_of(x) is not None or isinstance(p["padding"], str) or p["groups"] != 1:
        what = tape.derived_of(x) or wd or bd
        raise UnsupportedParameterUse(
            f"conv2d use of {what.param!r}: only data as input, numeric padding and groups=1 are supported"
        )
    geometry = ConvGeometry(
        kernel=tuple(w.shape[2:]),
        stride=_pair(p["stride"]),
        padding=_pair(p["padding"]),
        dilation=_pair(p["dilation"]),
        in_shape=tuple(x.shape),
    )
    spec = _ConvSpec(tape, w.detach(), b.detach() if b is not None else None, geometry, wd)
    out = tape.tap(_WeightUse.apply(x, spec))
    if wd is not None:
        tape.record(Use("conv", wd, tap=out, a=x, conv=geometry))
    if bd is not None:
        tape.record(Use("bias", bd, tap=out, reduce_dims=(2, 3)))
    return out


@dataclass(eq=False)
class _LinearSpec:
    tape: Tape
    weight: Tensor  # detached, [I, O] as multiplied: y = x @ weight
    bias: Tensor | None  # detached, broadcast onto y
    derived: Derived | None
    transposed: bool  # the derived tensor is weight.T ([O, I])

    def apply(self, x: Tensor) -> Tensor:
        y = x.matmul(self.weight)
        return y if self.bias is None else y + self.bias

    def input_grad(self, grad: Tensor) -> Tensor:
        return grad.matmul(self.weight.t())

    def adjoint(self, e: Tensor) -> Tensor:
        return e.matmul(self.weight)

    def input_use(self, out: Tensor, grad: Tensor) -> Use:
        return Use("linear", self.derived, tap=out, g=grad, transposed=self.transposed)


def _bias_reduce_dims(tape: Tape, b: Tensor, out_shape: torch.Size) -> tuple[int, ...]:
    """Dims of the output (batch excluded) that a broadcast bias ``b`` is summed over; refuses a bias
    that differs along the batch."""
    aligned = (1,) * (len(out_shape) - b.ndim) + tuple(b.shape)
    if len(aligned) != len(out_shape) or aligned[0] != 1:
        raise UnsupportedParameterUse(
            f"parameter {tape.derived_of(b).param!r} is broadcast along the batch dimension"
        )
    return tuple(d for d in range(1, len(out_shape)) if aligned[d] == 1 and out_shape[d] != 1)


def _linear(tape: Tape, x: Tensor, w: Tensor, b: Tensor | None, transposed: bool) -> Tensor:
    """``x @ W (+ b)`` with ``W = w.T`` when ``transposed``."""
    wd, bd = tape.derived_of(w), tape.derived_of(b)
    if tape.derived_of(x) is not None or w.ndim != 2 or x.ndim < 2:
        raise UnsupportedParameterUse(
            f"matrix product with parameter {(wd or bd or tape.derived_of(x)).param!r}: only data @ "
            f"parameter (a 2-D weight on the right) is supported"
        )
    wt = w.detach().t() if transposed else w.detach()
    spec = _LinearSpec(tape, wt, b.detach() if b is not None else None, wd, transposed)
    out = tape.tap(_WeightUse.apply(x, spec))
    if wd is not None:
        tape.record(Use("linear", wd, tap=out, a=x, transposed=transposed))
    if bd is not None:
        tape.record(Use("bias", bd, tap=out, reduce_dims=_bias_reduce_dims(tape, b, out.shape)))
    return out


def _matmul_use(tape: Tape, args: tuple, kwargs: dict) -> Tensor:
    x, w = (list(args) + [kwargs.get("other")])[:2]
    return _linear(tape, x, w, None, transposed=False)


def _addmm_use(tape: Tape, args: tuple, kwargs: dict) -> Tensor:
    names = ("input", "mat1", "mat2")
    p = {"beta": 1, "alpha": 1, **dict(zip(names, args)), **kwargs}
    if p["beta"] != 1 or p["alpha"] != 1:
        raise UnsupportedParameterUse("addmm with beta or alpha other than 1 on a parameter")
    return _linear(tape, p["mat1"], p["mat2"], p["input"], transposed=False)


def _linear_use(tape: Tape, args: tuple, kwargs: dict) -> Tensor:
    names = ("input", "weight", "bias")
    p = {"bias": None, **dict(zip(names, args)), **kwargs}
    return _linear(tape, p["input"], p["weight"], p["bias"], transposed=True)


def _add_use(tape: Tape, args: tuple, kwargs: dict) -> Tensor:
    a, b = (list(args) + [kwargs.get("other")])[:2]
    if kwargs.get("alpha", 1) != 1 or not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise UnsupportedParameterUse("only a plain 'data + parameter' add is supported")
    x, bias = (b, a) if tape.derived_of(a) is not None else (a, b)
    bd = tape.derived_of(bias)
    if tape.derived_of(x) is not None or bd is None:
        raise UnsupportedParameterUse("only a plain 'data + parameter' add is supported")
    out = tape.tap(x + bias.detach())
    if out.shape != x.shape:
        raise UnsupportedParameterUse(f"adding parameter {bd.param!r} changes the shape of the data")
    tape.record(Use("bias", bd, tap=out, reduce_dims=_bias_reduce_dims(tape, bias, out.shape)))
    return out


_USE_HANDLERS: dict[Callable, Callable[[Tape, tuple, dict], Tensor]] = {
    torch.conv2d: _conv_use,
    F.conv2d: _conv_use,
    torch.matmul: _matmul_use,
    Tensor.matmul: _matmul_use,
    Tensor.__matmul__: _matmul_use,
    torch.mm: _matmul_use,
    Tensor.mm: _matmul_use,
    torch.addmm: _addmm_use,
    F.linear: _linear_use,
    torch.add: _add_use,
    Tensor.add: _add_use,
    Tensor.__add__: _add_use,
    Tensor.__radd__: _add_use,
}
