"""The ``dp`` plugin in training (its wiring through the core's hooks; the engine has tests/test_dp_*.py):
a short DP run writes privacy.json with the privatised steps taken, --max-epsilon stops cleanly before
the budget with a final snapshot, a DP snapshot cannot be resumed without the plugin, the legacy mode's
update equals a hand computation, and the leaks are closed or refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pytest
import torch
from sg2_training_support.data import make_shapes, tiny_args
from sg2_training_support.detector import TinyDetector, script

from plugins.dp import planned_steps, sample_rate
from plugins.dp.accounting import compute_epsilon, noise_for_epsilon
from stylegan2_ada.checkpoint import load_checkpoint
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.plugin_api import TrainingContext, seeded_generator
from stylegan2_ada.plugins import create_plugin_manager
from stylegan2_ada.training import cli
from stylegan2_ada.training.distributed import DistInfo
from stylegan2_ada.training.loop import Phase, build_networks, run_phase
from stylegan2_ada.training.options import DatasetInfo, resolve_options
from stylegan2_ada.training.stats import StatsCollector

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 16  # training images of the tiny runs
DP = ("--cond=1", "--plugin", "dp", "--clip", "1", "--delta", "1e-3")


def run(tmp_path: Path, *extra: str, outdir: str = "runs", **kw):
    data = make_shapes(tmp_path / "shapes", n=N)
    return cli.main(tiny_args(tmp_path / outdir, data, *DP, *extra, **kw), standalone_mode=False)


def stats_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_dp_run_accounts_every_privatised_step_and_closes_the_leaks(tmp_path: Path) -> None:
    result = run(tmp_path, "--noise", "1.0")  # --batch 4: q = 4/16; --kimg 0.016: about 4 steps
    steps = result.state.batch_idx  # every step has exactly one D phase (Dmain, or Dboth with R1)
    record = json.loads((result.run_dir / "privacy.json").read_text())
    assert record["steps"] == steps > 0 and record["mode"] == "dp" and record["differentially_private"]
    assert (record["noise_multiplier"], record["clip"], record["sample_rate"], record["delta"]) == (
        1.0,
        1.0,
        0.25,
        1e-3,
    )
    assert (record["accountant"], record["adjacency"], record["sampling"], record["microbatch"]) == (
        "rdp",
        "add-or-remove-one",
        "poisson",
        1,
    )
    assert record["epsilon"] == pytest.approx(compute_epsilon(1.0, 0.25, steps, 1e-3), rel=1e-9)
    snapshot = load_checkpoint(result.snapshots[-1])
    assert snapshot.metadata["plugins"]["dp"]["steps"] == steps
    assert snapshot.metadata["plugins"]["dp"]["epsilon"] == record["epsilon"]
    stats = stats_lines(result.run_dir)
    epsilons = [line["Privacy/epsilon"]["mean"] for line in stats]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(record["epsilon"])
    # Leaks closed: no real grid, no statistics of D on reals, options forced and recorded.
    assert not (result.run_dir / "reals.png").exists()
    assert not any(
        k in line for line in stats for k in ("Loss/scores/real", "Loss/signs/real", "Loss/D/loss")
    )
    options = json.loads((result.run_dir / "training_options.json").read_text())
    assert (options["mbstd_group"], options["combine_d_reg"], options["aug"]) == (1, True, "noaug")
    assert set(options["adjusted"]) >= {
        "mbstd_group",
        "combine_d_reg",
        "aug",
        "reals_grid",
        "real_score_stats",
    }
    log = (result.run_dir / "log.txt").read_text()
    assert "dp: DP-SGD on D: noise multiplier 1" in log and f"{N} items" not in log
    # Real images actually shown (Poisson sampled) are what kimg counts.
    assert result.state.cur_nimg >= 16
    assert all(torch.isfinite(p).all() for p in result.D.parameters())


def test_max_epsilon_stops_before_the_budget_and_the_snapshot_needs_the_plugin(tmp_path: Path) -> None:
    sigma, q, delta = 0.8, 4 / N, 1e-3
    budget = (compute_epsilon(sigma, q, 3, delta) + compute_epsilon(sigma, q, 4, delta)) / 2  # 3 steps fit
    result = run(tmp_path, "--noise", str(sigma), "--max-epsilon", str(budget), kimg=1, snap=100)
    assert result.state.batch_idx == 3 and result.stopped_early.startswith("dp: epsilon")
    assert "one more step would exceed --max-epsilon" in result.stopped_early
    record = json.loads((result.run_dir / "privacy.json").read_text())
    assert record["steps"] == 3 and record["epsilon"] <= budget < compute_epsilon(sigma, q, 4, delta)
    final = load_checkpoint(result.snapshots[-1])
    assert final.metadata["plugins"]["dp"]["steps"] == 3
    assert "dp" in final.metadata["required_plugins"]
    assert "Stopped early: dp: epsilon" in (result.run_dir / "log.txt").read_text()

    data, outdir = tmp_path / "shapes", tmp_path / "runs"
    before = sorted(outdir.iterdir())
    with pytest.raises(
        click.UsageError, match="can only be continued with --plugin dp: it holds the privacy ledger"
    ):
        cli.main(
            tiny_args(outdir, data, "--cond=1", "--resume", str(result.snapshots[-1]), kimg=1),
            standalone_mode=False,
        )
    assert sorted(outdir.iterdir()) == before
    # With the plugin the ledger continues, and the budget is still spent: it stops before any step.
    again = cli.main(
        tiny_args(
            outdir,
            data,
            *DP,
            "--noise",
            str(sigma),
            "--max-epsilon",
            str(budget),
            "--resume",
            str(result.snapshots[-1]),
            kimg=1,
        ),
        standalone_mode=False,
    )
    assert again.state.batch_idx == 3 and again.stopped_early is not None
    assert json.loads((again.run_dir / "privacy.json").read_text())["steps"] == 3


@pytest.mark.parametrize(("noise", "clip"), [(0.02, True), (0.02, False), (0.0, True)])
def test_legacy_update_equals_a_hand_computation(noise: float, clip: bool) -> None:
    torch.manual_seed(0)
    raw = dict(
        outdir="o", data="d", batch=4, batch_gpu=2, cbase=256, cmax=32, map_depth=2, device="cpu", cond=True
    )
    o = resolve_options({**raw, "aug": "noaug"}, DatasetInfo("toy", 16, 1, 2, True, N))
    o.z_dim = o.w_dim = 32
    G, D, _, _ = build_networks(o, torch.device("cpu"))
    loss = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0)
    g = torch.Generator().manual_seed(3)
    real, z = torch.rand([4, 1, 16, 16], generator=g) * 2 - 1, torch.randn([4, 32], generator=g)
    c = torch.nn.functional.one_hot(torch.arange(4) % 2, 2).float()
    rounds = list(zip(real.chunk(2), c.chunk(2))), list(zip(z.chunk(2), c.chunk(2)))

    def d_grads(pm) -> dict[str, torch.Tensor]:
        options = {
            **o.context_options(),
            "dp_mode": "legacy",
            "noise": noise,
            "clip": None,
            "no_clip": not clip,
            "microbatch": 1,
            "delta": 1e-5,
            "target_epsilon": None,
            "max_epsilon": None,
            "accountant": "rdp",
            "declare_public": (),
        }
        ctx = TrainingContext(G, D, G, None, None, torch.device("cpu"), None, options, step=7)
        if pm is not None:
            pm.hook.training_setup(context=ctx)
        phase = Phase("Dmain", D, torch.optim.Adam(D.parameters(), lr=0.0), 1)
        run_phase(phase, *rounds, loss, ctx, pm, StatsCollector(), DistInfo())
        return {k: p.grad.clone() for k, p in D.named_parameters()}

    plain = d_grads(None)  # the loop's gradient: the mean over the 2 accumulation rounds
    legacy = d_grads(create_plugin_manager(["dp"]))
    noise_g = seeded_generator(o.seed, 7, "dp-legacy/Dmain")
    expected = {
        k: v * 2 + noise * torch.randn(v.shape, generator=noise_g) for k, v in plain.items()
    }  # summed, noised
    norm = math.sqrt(sum(float(v.square().sum()) for v in expected.values()))
    if clip and norm > 1.5:
        expected = {k: v * (1.5 / (norm + 1e-6)) for k, v in expected.items()}  # clip_grad_norm_'s factor
    if noise:
        assert norm > 1.5  # the noise alone exceeds the clip norm, as in the original
    for k in plain:
        torch.testing.assert_close(legacy[k], expected[k], rtol=1e-5, atol=1e-7)


def dry_run(tmp_path: Path, *extra: str):
    data = make_shapes(tmp_path / "shapes", n=N)
    return cli.main(tiny_args(tmp_path / "runs", data, "-n", *extra), standalone_mode=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--noise", "1", "--no-clip"), "--no-clip voids the guarantee"),
        (("--noise", "1", "--target-epsilon", "3"), "exactly one of --noise SIGMA and --target-epsilon"),
        (("--noise", "0"), "--noise 0 gives no privacy"),
        (("--noise", "1", "--mirror=1"), "--mirror"),
        (("--noise", "1", "--batch", "32"), "more than the 16 training images"),
        (
            ("--noise", "1", "--plugin", "sg2_training_support.extra_loss"),
            "--declare-public sg2_training_support.extra_loss",
        ),
        (("--noise", "1", "--declare-public", "nope"), "--declare-public nope: no such plugin is enabled"),
        (("--dp-mode", "legacy", "--max-epsilon", "3"), "--max-epsilon applies to --dp-mode dp only"),
    ],
)
def test_unsafe_combinations_are_refused_before_anything_is_written(tmp_path: Path, extra, message) -> None:
    with pytest.raises(click.UsageError) as info:
        dry_run(tmp_path, *DP, *extra)
    assert message in str(info.value) and not (tmp_path / "runs").exists()


def test_declared_public_plugins_pass_and_warnings_are_printed(tmp_path: Path, capsys) -> None:
    extra = "sg2_training_support.extra_loss"
    o = dry_run(tmp_path, *DP, "--noise", "1", "--delta", "0.1", "--plugin", extra, "--declare-public", extra)
    assert o.mbstd_group == 1 and o.aug == "noaug" and not o.real_score_stats
    assert "delta=0.1 is not below 1/N" in capsys.readouterr().err
    legacy = dry_run(tmp_path, "--plugin", "dp", "--dp-mode", "legacy", "--no-clip")
    assert legacy.mbstd_group != 1 and legacy.adjusted == {}  # the original's training, unchanged
    assert "NOT differentially private" in capsys.readouterr().err


def test_metrics_read_the_private_images_and_need_an_explicit_flag(tmp_path: Path) -> None:
    metrics = ("--metrics", "kid50k_full", "--detector", str(script(TinyDetector(), tmp_path / "det.pt")))
    with pytest.raises(click.UsageError, match="--allow-metrics") as info:
        dry_run(tmp_path, *DP, "--noise", "1", *metrics)
    assert "guarantee does not cover" in str(info.value) and not (tmp_path / "runs").exists()
    allowed = dry_run(tmp_path, *DP, "--noise", "1", *metrics, "--allow-metrics")
    assert allowed.metrics == ["kid50k_full"] and allowed.plugin_options["allow_metrics"]
    legacy = dry_run(tmp_path, "--plugin", "dp", "--dp-mode", "legacy", *metrics)  # no guarantee to void
    assert legacy.metrics == ["kid50k_full"]


def test_target_epsilon_gives_the_noise_for_the_planned_steps_and_is_the_budget() -> None:
    from plugins.dp import PrivacyLedger, PrivateRun, Settings, noise_multiplier

    options = {
        "dp_mode": "dp", "noise": None, "clip": 1.0, "no_clip": False, "microbatch": 1, "delta": 1e-5,
        "target_epsilon": 5.0, "max_epsilon": None, "accountant": "rdp", "declare_public": (),
        "batch": 32, "dataset_size": 3200, "kimg": 64,
    }  # fmt: skip
    assert (sample_rate(options), planned_steps(options)) == (0.01, 2000)
    sigma = noise_multiplier(Settings.of(options), options)
    assert sigma == pytest.approx(noise_for_epsilon(5.0, 0.01, 2000, 1e-5), rel=1e-6)
    assert compute_epsilon(sigma, 0.01, 2000, 1e-5) == pytest.approx(5.0, rel=1e-2)
    # Poisson batches vary, so showing --kimg images may take more steps than planned: the run stops
    # before the step that would spend more than the target (no --max-epsilon given).
    settings = Settings.of(options)
    assert settings.budget == (5.0, "--target-epsilon")
    run = PrivateRun(s=settings, sigma=sigma, q=0.01, dataset_size=3200, ledger=PrivacyLedger(), planned=2000)
    run.begin()
    assert abs(run.allowed - 2000) <= 20
    assert (
        run.ledger.epsilon_after(run.allowed, 1e-5) <= 5.0 < run.ledger.epsilon_after(run.allowed + 1, 1e-5)
    )
    assert Settings.of({**options, "max_epsilon": 3.0}).budget == (3.0, "--max-epsilon")


def test_legacy_run_is_labelled_not_private_and_changes_nothing_else(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=N)
    result = cli.main(
        tiny_args(tmp_path / "runs", data, "--cond=1", "--plugin", "dp", "--dp-mode", "legacy", kimg=0.008),
        standalone_mode=False,
    )
    record = json.loads((result.run_dir / "privacy.json").read_text())
    assert record["differentially_private"] is False and record["mode"] == "legacy"
    assert (record["noise_std"], record["max_norm"], record["rounds"]) == (0.02, 1.5, 1)
    assert "NOT differentially private" in (result.run_dir / "log.txt").read_text()
    assert (result.run_dir / "reals.png").exists()  # the original's outputs, unchanged
    options = json.loads((result.run_dir / "training_options.json").read_text())
    assert options["adjusted"] == {} and options["mbstd_group"] == 4
    assert load_checkpoint(result.snapshots[-1]).metadata["required_plugins"] == {}
