"""Optional ``torch.compile`` of the networks, with an eager fallback that always works.

``torch.compile`` fuses the networks' element-wise work (bias, noise, demodulation, activation, clamp)
into few kernels. It needs a working toolchain: on CPU, inductor builds C++ with the system compiler
(``g++`` or ``$CXX``); on CUDA it needs Triton. Where that is missing, or compilation fails at the first
call, the networks run eagerly, with one message saying why. Results match eager within float
tolerance (different summation order and fused arithmetic, not different maths).

What is compiled, and why:

* :func:`maybe_compile` wraps one module (e.g. ``G.synthesis``) as a :class:`CompiledCall`: called like
  the module, compiled with ``fullgraph=True`` (a graph break is a failure, never a silent partial
  graph) and ``dynamic=False`` (one specialised graph per input shape: the training loop's shapes
  never change, so nothing recompiles after the first step of each phase).
* :func:`compile_for_training` compiles ``G.mapping``, ``G.synthesis`` and ``D`` for the *main* phases
  (``Gmain``, ``Dmain``). The regularisation phases (``Greg``: path length; ``Dreg``: R1) take a
  gradient with ``create_graph=True`` and back-propagate through it; ``torch.compile``'s autograd
  (AOTAutograd) does not support double backward, so these phases run the same networks eagerly
  (they share parameters and buffers with the compiled ones). They run every 4th (G) and 16th (D)
  step, on half the batch for ``Greg``.
* The augmentation pipe stays eager: which samples each operation touches is decided on the host
  (one synchronisation per call, by design), which a static graph cannot express.

Graphs per compiled callable in training (each compiled once, at the first step that needs it): the
mapping network with and without autograd (``Dmain`` runs G under ``no_grad``) and with
``skip_w_avg_update`` (style mixing); the synthesis network with and without autograd; D with its
own parameters trainable (``Dmain``) or frozen (``Gmain``). All fit within dynamo's default
recompile limit of 8 per callable.

Compilation time is measured as the wall time of the calls that compiled (first call, later
recompiles) and kept in each callable's :class:`CompileReport`.

Limits: a plugin loss term that differentiates twice through a main phase's tensors (``PhaseData``
of ``Gmain``/``Dmain``) meets the same double-backward limit (torch raises at its backward). On CPU
the convolutions dominate and stay oneDNN kernels, so compiling gains little there (measured in
``docs/benchmarks.md``: generation slightly faster, training slower); the compiled path is meant for
CUDA, where upstream fuses the element-wise work in custom kernels.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "CompileReport",
    "CompiledCall",
    "CompiledLoss",
    "compile_for_training",
    "compile_unavailable_reason",
    "maybe_compile",
]

MAIN_PHASES = ("Gmain", "Dmain")
DEFAULT_BACKEND = "inductor"


@dataclass
class CompileReport:
    """What happened to one callable.

    Attributes:
        name: what was compiled (e.g. ``'G.synthesis'``).
        requested: whether compilation was asked for.
        active: whether calls go through the compiled code (False: eager, see ``reason``).
        backend, mode: as passed to ``torch.compile``.
        reason: why it runs eagerly (compilation unavailable or failed), else ``None``.
        compile_seconds: wall time of the calls that compiled (they include one run of the graph).
        compilations: how many graphs were compiled (first call and recompiles).
    """

    name: str
    requested: bool
    active: bool = False
    backend: str | None = None
    mode: str | None = None
    reason: str | None = None
    compile_seconds: float = 0.0
    compilations: int = 0

    def summary(self) -> str:
        """One line for logs."""
        if not self.requested:
            return f"{self.name}: eager (compilation not requested)"
        if not self.active:
            return f"{self.name}: eager ({self.reason})"
        mode = f", mode {self.mode}" if self.mode else ""
        return (
            f"{self.name}: compiled ({self.backend}{mode}); {self.compilations} graph(s), "
            f"{self.compile_seconds:.1f} s compiling"
        )


def _cxx_candidates() -> list[str]:
    from torch._inductor import config

    cxx = config.cpp.cxx
    return [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]


def compile_unavailable_reason(device: torch.device | str, backend: str = DEFAULT_BACKEND) -> str | None:
    """Why ``torch.compile`` cannot work here for ``device`` and ``backend``, or ``None`` if it can.

    Checks what can be checked without compiling: the platform (``torch._dynamo.is_dynamo_supported``),
    for inductor on CPU a C++ compiler on the PATH (``g++``, or ``$CXX``), for inductor on CUDA Triton.
    Compilation may still fail at the first call; :class:`CompiledCall` falls back then too.
    """
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"this PyTorch ({torch.__version__}) has no torch.compile"
    from torch import _dynamo

    if not _dynamo.is_dynamo_supported():
        return (
            f"torch.compile does not support this platform (Python {sys.version.split()[0]} on "
            f"{sys.platform}, PyTorch {torch.__version__})"
        )
    if backend != "inductor":
        return None
    if device.type == "cpu":
        candidates = _cxx_candidates()
        if not any(shutil.which(c) for c in candidates):
            return (
                f"no C++ compiler found (looked for {', '.join(candidates) or 'none configured'}); "
                "inductor's CPU backend builds C++: install g++ or set CXX"
            )
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed; inductor's CUDA backend needs it (pip install triton)"
    return None


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def _backward_compiled_with_forward() -> Iterator[None]:
    """Compile a graph's backward when its forward is compiled (not lazily at the first backward), so
    that every compilation error surfaces in the call :class:`CompiledCall` guards."""
    from torch._functorch import config

    if not hasattr(config, "force_non_lazy_backward_lowering"):
        yield
        return
    with config.patch(force_non_lazy_backward_lowering=True):
        yield


def _compile_errors() -> tuple[type[BaseException], ...]:
    from torch._dynamo import exc as dynamo_exc

    errors: list[type[BaseException]] = [dynamo_exc.TorchDynamoException]
    try:
        from torch._inductor import exc as inductor_exc

        errors += [inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError]
    except ImportError:  # pragma: no cover - inductor is part of every torch with torch.compile
        pass
    return tuple(errors)


def _root_cause(exc: BaseException) -> str:
    """``'Type: first line'`` of the innermost cause (dynamo wraps the backend's own error)."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{exc.__class__.__name__}: {first_line[:300]}".rstrip(": ")


class CompiledCall:
    """A module's forward, compiled; falls back to the eager module for good if compilation fails.

    Call it like the module. Attribute reads go to the eager module (``call.num_ws`` etc.); its
    parameters and buffers are the module's own (nothing is copied). On a compilation error at any
    call, the same call is repeated eagerly: if that raises too, the inputs were at fault and that
    error propagates (compilation stays on); otherwise the error is reported once through ``say`` and
    every later call runs eagerly.
    """

    def __init__(
        self,
        module: nn.Module,
        compiled: Callable[..., Any] | None,
        report: CompileReport,
        say: Callable[[str], None] | None = print,
    ) -> None:
        self.module = module
        self.report = report
        self._compiled = compiled
        self._say = say

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None:
            return self.module(*args, **kwargs)
        before = _graphs_compiled()
        start = time.perf_counter()
        try:
            with _backward_compiled_with_forward():
                out = self._compiled(*args, **kwargs)
        except _compile_errors() as exc:
            out = self.module(*args, **kwargs)  # raises the caller's own error if the inputs are at fault
            self._fall_back(exc)
            return out
        new_graphs = _graphs_compiled() - before
        if new_graphs:
            self.report.compilations += new_graphs
            self.report.compile_seconds += time.perf_counter() - start
        return out

    def _fall_back(self, exc: BaseException) -> None:
        self._compiled = None
        self.report.active = False
        self.report.reason = f"compilation failed, running eagerly: {_root_cause(exc)}"
        if self._say is not None:
            self._say(f"Warning: {self.report.name}: {self.report.reason}")

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper itself.
        if name in ("module", "report", "_compiled", "_say"):
            raise AttributeError(name)
        return getattr(self.module, name)

    def __repr__(self) -> str:
        return f"CompiledCall({self.report.summary()})"


def maybe_compile(
    module: nn.Module,
    *,
    enabled: bool,
    mode: str | None = None,
    dynamic: bool = False,
    backend: str = DEFAULT_BACKEND,
    name: str | None = None,
    device: torch.device | str | None = None,
    say: Callable[[str], None] | None = print,
) -> tuple[CompiledCall, CompileReport]:
    """Wrap ``module`` for compiled calls when ``enabled`` and possible; else eager calls.

    Args:
        module: any ``nn.Module`` (compiled with ``fullgraph=True``).
        enabled: compile at all (``False``: a plain eager wrapper, report says "not requested").
        mode: ``torch.compile`` mode (``None``, ``'reduce-overhead'``, ``'max-autotune'``, ...).
        dynamic: ``False`` specialises on input shapes (what a fixed-shape training loop wants).
        backend: ``torch.compile`` backend (``'inductor'``; ``'aot_eager'`` traces without code
            generation, for debugging).
        name: for messages (default: the module's class name).
        device: where the module runs (default: its first parameter's device), for the availability check.
        say: where the one-line fallback message goes (``None``: silent; the report still says why).
    Returns:
        ``(callable, report)``. The report is updated in place as compilation happens (lazily, at the
        first call) or fails.
    """
    name = name or module.__class__.__name__
    report = CompileReport(name=name, requested=bool(enabled), backend=backend, mode=mode)
    if not enabled:
        return CompiledCall(module, None, report, say), report
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    reason = compile_unavailable_reason(device, backend)
    if reason is not None:
        report.reason = f"compilation unavailable, running eagerly: {reason}"
        if say is not None:
            say(f"Warning: {name}: {report.reason}")
        return CompiledCall(module, None, report, say), report
    compiled = torch.compile(module, fullgraph=True, dynamic=dynamic, mode=mode, backend=backend)
    report.active = True
    return CompiledCall(module, compiled, report, say), report


# -------------------------------------------------------------------------------------------- training


@dataclass
class _GeneratorCalls:
    """What the loss uses of a generator: ``mapping`` and ``synthesis`` callables."""

    mapping: Callable[..., torch.Tensor]
    synthesis: Callable[..., torch.Tensor]


class CompiledLoss:
    """A :class:`~stylegan2_ada.loss.StyleGAN2Loss` whose main phases run compiled networks.

    ``compute(phase, ...)`` runs ``Gmain`` and ``Dmain`` with the compiled ``G.mapping``,
    ``G.synthesis`` and ``D``, and ``Greg`` and ``Dreg`` with the wrapped loss's eager networks (double
    backward; see the module docstring). Same parameters, same results within float tolerance.
    ``pl_mean``, ``state_dict`` / ``load_state_dict`` and ``augment_pipe`` are the wrapped loss's.

    Attributes:
        eager: the wrapped loss (its networks are the modules the optimizers train).
        reports: one :class:`CompileReport` per compiled network.
    """

    def __init__(self, loss: Any, G_calls: _GeneratorCalls, D_call: Callable[..., torch.Tensor], reports):
        self.eager = loss
        self.reports: list[CompileReport] = list(reports)
        # A shallow copy: same settings, same pl_mean tensor, same augment pipe; compiled networks.
        self._main = copy.copy(loss)
        self._main.G = G_calls
        self._main.D = D_call

    def __getattr__(self, name: str) -> Any:
        # Everything else (G, D, r1_gamma, the per-example losses a plugin may call) is the eager loss's.
        if name == "eager":
            raise AttributeError(name)
        return getattr(self.eager, name)

    def compute(self, phase: str, **tensors: Any) -> Any:
        """As :meth:`StyleGAN2Loss.compute`."""
        return (self._main if phase in MAIN_PHASES else self.eager).compute(phase, **tensors)

    @property
    def augment_pipe(self) -> nn.Module | None:
        return self.eager.augment_pipe

    @augment_pipe.setter
    def augment_pipe(self, pipe: nn.Module | None) -> None:
        self.eager.augment_pipe = pipe
        self._main.augment_pipe = pipe

    @property
    def pl_mean(self) -> torch.Tensor:
        return self.eager.pl_mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.eager.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.eager.load_state_dict(state)

    def compile_summary(self) -> str:
        """Lines for the log: one per network."""
        return "\n".join(r.summary() for r in self.reports)


def compile_for_training(
    loss: Any,
    *,
    device: torch.device | str,
    enabled: bool = True,
    mode: str | None = None,
    backend: str = DEFAULT_BACKEND,
    say: Callable[[str], None] | None = print,
) -> CompiledLoss:
    """Compile ``loss.G.mapping``, ``loss.G.synthesis`` and ``loss.D`` for the main phases.

    Args:
        loss: a :class:`~stylegan2_ada.loss.StyleGAN2Loss` (its G, D and augment pipe are used as they are).
        device: the training device (for the availability check).
        enabled, mode, backend, say: as :func:`maybe_compile`. If compilation is unavailable, one
            message is printed and the returned loss runs everything eagerly.
    Returns:
        A :class:`CompiledLoss` to use in place of ``loss`` (``compute``, ``pl_mean``, state).
    """
    device = torch.device(device)
    reason = compile_unavailable_reason(device, backend) if enabled else None
    if reason is not None and say is not None:
        say(f"Warning: --compile: compilation unavailable, training eagerly: {reason}")
    quiet = dict(
        enabled=enabled, mode=mode, backend=backend, device=device, say=say if reason is None else None
    )
    mapping, r_map = maybe_compile(loss.G.mapping, name="G.mapping", **quiet)
    synthesis, r_syn = maybe_compile(loss.G.synthesis, name="G.synthesis", **quiet)
    D, r_d = maybe_compile(loss.D, name="D", **quiet)
    return CompiledLoss(loss, _GeneratorCalls(mapping, synthesis), D, [r_map, r_syn, r_d])
