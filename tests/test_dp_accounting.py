"""Privacy accounting (plugins.dp.accounting) against the reference values in
../shared/reference/dp-accountant-reference-values.txt (computed with opacus 1.6 and dp-accounting 0.6)."""

from __future__ import annotations

import json
import logging
import math
import warnings

import pytest

from plugins.dp.accounting import (
    PrivacyLedger,
    compute_epsilon,
    delta_warning,
    effective_noise_multiplier,
    noise_for_epsilon,
)

N_SPINE = 3773  # training images of the original work

# name: (sigma, q, steps, delta, rdp epsilon, pld epsilon or None), as in the reference file.
REFERENCE = {
    "SpineGAN-orig 0.02/1.5": (0.02 / 1.5, 1 / N_SPINE, 2_400_000, 1 / N_SPINE, 7.208e9, None),
    "SpineGAN-orig 2.0/1.5": (2.0 / 1.5, 1 / N_SPINE, 2_400_000, 1 / N_SPINE, 1.189, None),
    "GS-WGAN default": (1.07, 1e-3, 640_000, 1e-5, 4.45, 4.118),
    "dpgan-revisit MNIST": (1.0, 0.0021333, 450_000, 1e-5, 9.97, 9.279),
    "spine B=32 ep=50": (0.6961, 32 / N_SPINE, 5895, 1e-5, 10.01, 9.027),
    "spine B=64 ep=100": (0.96, 64 / N_SPINE, 5895, 1e-5, 10.0, 9.226),
    "spine B=256 ep=300": (2.507, 256 / N_SPINE, 4421, 1e-5, 10.0, 9.295),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_rdp_epsilon_matches_reference(name: str) -> None:
    sigma, q, steps, delta, eps_rdp, _ = REFERENCE[name]
    assert compute_epsilon(sigma, q, steps, delta, accountant="rdp") == pytest.approx(eps_rdp, rel=0.01)


@pytest.mark.parametrize("name", [n for n, v in REFERENCE.items() if v[5] is not None])
def test_pld_epsilon_matches_reference(name: str) -> None:
    sigma, q, steps, delta, _, eps_pld = REFERENCE[name]
    assert compute_epsilon(sigma, q, steps, delta, accountant="pld") == pytest.approx(eps_pld, rel=0.01)


def test_rdp_agrees_with_opacus() -> None:
    """An independent implementation (opacus's RDP accountant) on one configuration."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(1.07, 1e-3, 640_000)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = acc.get_epsilon(1e-5)
    assert compute_epsilon(1.07, 1e-3, 640_000, 1e-5) == pytest.approx(theirs, rel=0.002)


@pytest.mark.parametrize("name", ["spine B=32 ep=50", "spine B=64 ep=100", "spine B=256 ep=300"])
def test_noise_for_target_epsilon_matches_reference_sigma(name: str) -> None:
    sigma, q, steps, delta, _, _ = REFERENCE[name]
    found = noise_for_epsilon(10.0, q, steps, delta, accountant="rdp")
    assert found == pytest.approx(sigma, rel=0.01)
    assert compute_epsilon(found, q, steps, delta) <= 10.0 * (1 + 1e-6)


def test_noise_for_target_epsilon_with_pld_is_below_rdp() -> None:
    q, steps = 256 / N_SPINE, 4421
    sigma = noise_for_epsilon(10.0, q, steps, 1e-5, accountant="pld", tol=1e-3)
    assert compute_epsilon(sigma, q, steps, 1e-5, accountant="pld") == pytest.approx(10.0, rel=0.01)
    assert sigma < 2.507  # PLD is tighter than RDP: less noise for the same epsilon


def test_microbatches_are_accounted_with_twice_the_sensitivity() -> None:
    assert effective_noise_multiplier(1.4, 1) == 1.4
    assert effective_noise_multiplier(1.4, 4) == 0.7
    q, steps = 64 / N_SPINE, 2000
    assert compute_epsilon(1.4, q, steps, 1e-5, microbatch=4) == compute_epsilon(0.7, q, steps, 1e-5)
    sigma = noise_for_epsilon(5.0, q, steps, 1e-5, microbatch=4)
    assert sigma == pytest.approx(2 * noise_for_epsilon(5.0, q, steps, 1e-5), rel=1e-3)


def test_edge_cases() -> None:
    assert compute_epsilon(1.0, 0.01, 0, 1e-5) == 0.0
    assert compute_epsilon(0.0, 0.01, 10, 1e-5) == math.inf
    with pytest.raises(ValueError, match="sample rate"):
        compute_epsilon(1.0, 0.0, 10, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        compute_epsilon(1.0, 0.01, 10, 1.0)
    with pytest.raises(ValueError, match="accountant"):
        compute_epsilon(1.0, 0.01, 10, 1e-5, accountant="gdp")


def test_ledger_counts_steps_and_round_trips_through_json() -> None:
    q = 32 / N_SPINE
    ledger = PrivacyLedger("rdp")
    assert ledger.epsilon(1e-5) == 0.0
    ledger.begin(0.6961, q)
    ledger.step(5000)
    ledger.begin(0.6961, q)  # same settings (e.g. after a resume): the same segment goes on
    ledger.step(895)
    assert ledger.steps == 5895 and len(ledger.segments) == 1
    assert ledger.epsilon(1e-5) == pytest.approx(compute_epsilon(0.6961, q, 5895, 1e-5), rel=1e-9)
    restored = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored == ledger
    assert restored.to_dict()["adjacency"] == "add-or-remove-one"
    # Look-ahead for a budget, and a new segment when the settings change.
    ahead = ledger.epsilon_after(100, 1e-5)
    assert ahead == pytest.approx(compute_epsilon(0.6961, q, 5995, 1e-5), rel=1e-9)
    ledger.begin(1.5, q)
    ledger.step(100)
    assert len(ledger.segments) == 2
    assert ledger.epsilon(1e-5) < ahead  # the last 100 steps had more noise


def test_delta_warning() -> None:
    assert delta_warning(1 / N_SPINE, N_SPINE) is not None
    assert "1/N" in delta_warning(1e-3, N_SPINE)
    assert delta_warning(1e-5, N_SPINE) is None


def test_large_sampling_rates_account_quietly_and_stay_an_upper_bound(caplog) -> None:
    caplog.set_level(logging.WARNING)
    rdp = compute_epsilon(0.5, 0.5, 100, 1e-5)  # some Renyi orders fail to converge here and are left out
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
    assert math.isfinite(rdp) and rdp >= compute_epsilon(0.5, 0.5, 100, 1e-5, accountant="pld")
    logging.getLogger("absl").warning("another message")  # only that one kind of message is dropped
    assert [r.getMessage() for r in caplog.records] == ["another message"]
