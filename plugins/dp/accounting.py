"""Privacy accounting for DP-SGD with Poisson sampling, by Google's ``dp-accounting`` library.

One privatised step = Poisson sampling of the training set with rate ``q`` (each example independently),
a sum of clipped per-example gradients (sensitivity C under add/remove-one adjacency) and Gaussian noise
of standard deviation ``sigma * C``: a Poisson-subsampled Gaussian mechanism with noise multiplier sigma.
Steps compose; every privatised step counts (R1 steps too: they are ordinary D steps whose loss
includes R1). Accountants:

* ``"rdp"``: Renyi DP (``dp_accounting.rdp.RdpAccountant``), the classic moments-accountant bound;
* ``"pld"``: privacy loss distributions (``dp_accounting.pld.PLDAccountant``), numerically tight
  (typically 7-11 % below RDP).

Adjacency is add/remove-one example (what Poisson-sampled DP-SGD analyses assume). Microbatches of
m > 1 examples have sensitivity 2C (see :mod:`plugins.dp.mechanism`): they are accounted as the same
mechanism with the *effective* noise multiplier ``sigma / 2`` (:func:`effective_noise_multiplier`).

:class:`PrivacyLedger` keeps the steps taken (segments of constant sigma and q, e.g. across a resume
with other settings) and reports epsilon; it round-trips through JSON (``privacy.json``, snapshots).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dp_accounting
from dp_accounting import pld, rdp

ACCOUNTANTS = ("rdp", "pld")
ADJACENCY = "add-or-remove-one"
PLD_DISCRETIZATION = 1e-4  # dp-accounting's default value_discretization_interval


class _SkippedOrderFilter(logging.Filter):
    """Drop the RDP accountant's "failed to converge ... Excluding this order" warnings.

    At large sampling rates (q >= ~0.3, small sigma) the library cannot evaluate some Renyi orders and
    leaves them out of the minimum over orders, logging one warning per order and per call (hundreds in a
    ``--target-epsilon`` search). Leaving an order out can only make the reported epsilon larger, never
    smaller, so the bound stays valid; the messages say nothing the user can act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("failed to converge" in message and "Excluding this order" in message)


logging.getLogger("absl").addFilter(_SkippedOrderFilter())


def effective_noise_multiplier(noise_multiplier: float, microbatch: int = 1) -> float:
    """The noise multiplier relative to the sensitivity: sigma for microbatch 1, sigma / 2 for m > 1
    (a microbatch's clipped sum can change by 2C when one of its examples is added or removed)."""
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1; got {microbatch}")
    return noise_multiplier if microbatch == 1 else noise_multiplier / 2


def _accountant(name: str) -> dp_accounting.PrivacyAccountant:
    relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    if name == "rdp":
        return rdp.RdpAccountant(neighboring_relation=relation)
    if name == "pld":
        return pld.PLDAccountant(
            neighboring_relation=relation, value_discretization_interval=PLD_DISCRETIZATION
        )
    raise ValueError(f"unknown accountant {name!r}; expected one of {ACCOUNTANTS}")


def _check(sample_rate: float, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample rate q must be in (0, 1]; got {sample_rate}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta}")


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> dp_accounting.DpEvent:
    if noise_multiplier <= 0:
        return dp_accounting.NonPrivateDpEvent()
    step = dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, int(steps))


def compute_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
    microbatch: int = 1,
) -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps at ``delta`` (``inf`` for sigma 0, 0 for 0 steps)."""
    _check(sample_rate, delta)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if steps == 0:
        return 0.0
    sigma = effective_noise_multiplier(noise_multiplier, microbatch)
    if sigma <= 0:
        return math.inf
    acc = _accountant(accountant)
    acc.compose(_event(sigma, sample_rate, steps))
    return float(acc.get_epsilon(delta))


def noise_for_epsilon(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
    microbatch: int = 1,
    tol: float = 1e-4,
) -> float:
    """The smallest noise multiplier sigma (within ``tol``) whose ``steps`` steps stay within
    ``target_epsilon`` at ``delta`` (``dp_accounting.calibrate_dp_mechanism``). With microbatches the
    returned sigma is the one to pass to the mechanism (twice the effective one)."""
    _check(sample_rate, delta)
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be positive; got {target_epsilon}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    ratio = effective_noise_multiplier(1.0, microbatch)  # effective sigma per unit of applied sigma
    return _calibrate(target_epsilon, sample_rate, steps, delta, accountant, tol * ratio) / ratio


def _calibrate(
    target_epsilon: float, q: float, steps: int, delta: float, accountant: str, tol: float
) -> float:
    """The effective noise multiplier for ``target_epsilon``. RDP brackets from sigma = 0.01 upwards;
    PLD (whose cost and memory grow steeply as sigma shrinks) searches just below the RDP solution,
    which bounds it from above because RDP over-estimates epsilon."""

    def gap(sigma: float) -> float:
        return compute_epsilon(sigma, q, steps, delta, accountant=accountant) - target_epsilon

    if accountant == "pld":
        upper = _calibrate(target_epsilon, q, steps, delta, "rdp", tol)
        lower = 0.8 * upper
        while gap(lower) <= 0:
            upper, lower = lower, 0.8 * lower
        bracket = dp_accounting.ExplicitBracketInterval(lower, upper)
    else:
        bracket = dp_accounting.LowerEndpointAndGuess(0.01, 1.0)
    try:
        sigma = dp_accounting.calibrate_dp_mechanism(
            lambda: _accountant(accountant),
            lambda s: _event(s, q, steps),
            target_epsilon,
            delta,
            bracket_interval=bracket,
            tol=tol,
        )
    except (dp_accounting.mechanism_calibration.NoBracketIntervalFoundError, ValueError) as exc:
        raise ValueError(
            f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} with q={q} over {steps} steps"
        ) from exc
    return float(sigma)


def delta_warning(delta: float, dataset_size: int) -> str | None:
    """A warning when delta >= 1/N: such a delta allows releasing one example outright."""
    if dataset_size > 0 and delta >= 1.0 / dataset_size:
        return (
            f"delta={delta:g} is not below 1/N = {1.0 / dataset_size:.3g} for N={dataset_size} training "
            f"images: a mechanism that publishes one random image in full meets such a delta; use delta << 1/N"
        )
    return None


@dataclass
class Segment:
    """``steps`` privatised steps with noise multiplier ``noise_multiplier`` (as applied, before the
    microbatch adjustment) and Poisson sample rate ``sample_rate``."""

    noise_multiplier: float
    sample_rate: float
    microbatch: int = 1
    steps: int = 0


@dataclass
class PrivacyLedger:
    """The privatised steps of one training run, and their epsilon.

    ``step()`` once per privatised D step; ``epsilon(delta)`` at any time; ``epsilon_after(n)`` to stop
    before a budget would be exceeded. ``to_dict``/``from_dict`` for ``privacy.json`` and snapshots.
    """

    accountant: str = "rdp"
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}; expected one of {ACCOUNTANTS}")

    def begin(self, noise_multiplier: float, sample_rate: float, microbatch: int = 1) -> None:
        """Start counting steps with these settings (continues the last segment when they are equal)."""
        _check(sample_rate, 0.5)
        new = Segment(float(noise_multiplier), float(sample_rate), int(microbatch))
        last = self.segments[-1] if self.segments else None
        if last is None or (last.noise_multiplier, last.sample_rate, last.microbatch) != (
            new.noise_multiplier,
            new.sample_rate,
            new.microbatch,
        ):
            self.segments.append(new)

    def step(self, count: int = 1) -> None:
        if not self.segments:
            raise RuntimeError("PrivacyLedger.step before begin()")
        self.segments[-1].steps += int(count)

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.segments)

    def _epsilon(self, delta: float, extra_steps: int) -> float:
        events = []
        for i, s in enumerate(self.segments):
            n = s.steps + (extra_steps if i == len(self.segments) - 1 else 0)
            if n == 0:
                continue
            sigma = effective_noise_multiplier(s.noise_multiplier, s.microbatch)
            if sigma <= 0:
                return math.inf
            events.append(_event(sigma, s.sample_rate, n))
        if not events:
            return 0.0
        _check(0.5, delta)
        acc = _accountant(self.accountant)
        acc.compose(dp_accounting.ComposedDpEvent(events))
        return float(acc.get_epsilon(delta))

    def epsilon(self, delta: float) -> float:
        """Epsilon of the steps taken so far at ``delta``."""
        return self._epsilon(delta, 0)

    def epsilon_after(self, extra_steps: int, delta: float) -> float:
        """Epsilon if ``extra_steps`` more steps were taken with the current settings."""
        if not self.segments:
            raise RuntimeError("PrivacyLedger.epsilon_after before begin()")
        return self._epsilon(delta, extra_steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accountant": self.accountant,
            "adjacency": ADJACENCY,
            "sampling": "poisson",
            "segments": [asdict(s) for s in self.segments],
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrivacyLedger:
        if d.get("adjacency", ADJACENCY) != ADJACENCY:
            raise ValueError(f"privacy ledger adjacency {d.get('adjacency')!r} is not {ADJACENCY!r}")
        return cls(d["accountant"], [Segment(**s) for s in d.get("segments", [])])
