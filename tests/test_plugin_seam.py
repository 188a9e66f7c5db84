"""The seam a plugin needs to take over D's gradients (generic: see hookspecs.py and docs/plugins.md).

Each piece is used by the toy third-party plugin ``sg2_training_support.takeover`` (and ``.adjuster``):
taking over a phase's gradients (sum over ranks, then the plugin's ``finish``, then the NaN guard), the
combined ``Dboth`` phase, a real-batch sampler with varying and empty batches, option changes before the
run, G's label sampler, the real-data outputs, per-step information and a stop request, the end hook,
snapshots that need the plugin to resume, and the random generator shared by all ranks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from sg2_training_support import takeover
from sg2_training_support.data import make_shapes, tiny_args

from stylegan2_ada.checkpoint import load_checkpoint
from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.plugin_api import PhaseGradients, TrainingContext, seeded_generator
from stylegan2_ada.plugins import InvalidPluginError, create_plugin_manager
from stylegan2_ada.training import cli
from stylegan2_ada.training.data import PoissonSampler, StepChunks, plugin_sampler, rank_share
from stylegan2_ada.training.distributed import DistInfo
from stylegan2_ada.training.loop import Phase, build_networks, build_phases, run_phase
from stylegan2_ada.training.options import (
    DatasetInfo,
    OptionsError,
    apply_adjustment,
    resolve_options,
)
from stylegan2_ada.training.stats import StatsCollector

TAKEOVER = "sg2_training_support.takeover"
ADJUSTER = "sg2_training_support.adjuster"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ unit pieces


def tiny_options(**over):
    raw = dict(
        outdir="unused", data="unused", batch=4, cbase=256, cmax=32, map_depth=2, device="cpu", cond=True
    )
    raw.update(over)
    o = resolve_options(raw, DatasetInfo("toy", 16, 1, 2, True, 16))
    o.z_dim = o.w_dim = 32
    return o


def parts(**over):
    torch.manual_seed(0)
    o = tiny_options(aug="noaug", mbstd_group=1, **over)
    G, D, _, _ = build_networks(o, torch.device("cpu"))
    loss = StyleGAN2Loss(G, D, None, r1_gamma=1.0, style_mixing_prob=0.0)
    return o, G, D, loss


def batch(n: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.one_hot(torch.arange(n) % 2, 2).float()
    return torch.rand([n, 1, 16, 16], generator=g) * 2 - 1, c, torch.randn([n, 32], generator=g), c.flip(0)


def context(o, G, D, **options) -> TrainingContext:
    opts = {**o.context_options(), "toy_takeover": "Dmain,Dboth", "toy_noise": 0.0, "toy_class": -1}
    opts.update(options)
    return TrainingContext(G, D, G, None, None, torch.device("cpu"), None, opts, step=5)


def d_grads(name: str, rounds: int, pm=None, **options) -> tuple[dict, dict, TrainingContext]:
    """D's gradient after one ``name`` phase on 4 examples in ``rounds`` rounds (lr 0: weights stay)."""
    o, G, D, loss = parts()
    real, real_c, z, gen_c = batch(4)
    ctx = context(o, G, D, **options)
    if pm is not None:
        pm.hook.training_setup(context=ctx)
    phase = Phase("Dmain", D, torch.optim.Adam(D.parameters(), lr=0.0), 1, reg_interval=16)
    stats = StatsCollector()
    reals = list(zip(real.chunk(rounds), real_c.chunk(rounds)))
    gens = list(zip(z.chunk(rounds), gen_c.chunk(rounds)))
    run_phase(phase, reals, gens, loss, ctx, pm, stats, DistInfo(), name=name)
    return {k: p.grad.clone() for k, p in D.named_parameters()}, stats.reduce(), ctx


@pytest.mark.parametrize("name", ["Dmain", "Dboth"])
def test_a_plugin_that_takes_over_gets_the_core_update_and_the_core_skips_its_own(name: str) -> None:
    core, core_stats, _ = d_grads(name, rounds=2)
    pm = create_plugin_manager([TAKEOVER])
    taken, taken_stats, ctx = d_grads(name, rounds=2, pm=pm)
    # The plugin's per-rank sum divided by the expected batch (its finish) is the core's mean: had the
    # core also run its backward, every gradient would be doubled.
    for k in core:
        torch.testing.assert_close(taken[k], core[k], rtol=1e-4, atol=1e-6)
    ((step, phase, n, expected, reg_gain),) = ctx.extras["takeover"]["taken"]
    assert (step, phase, n, expected, reg_gain) == (5, name, 4, 4.0, 16.0 if name == "Dboth" else 0.0)
    assert taken_stats["Loss/D/loss"]["num"] == core_stats["Loss/D/loss"]["num"] == 4
    assert ("Loss/r1_penalty" in taken_stats) == (name == "Dboth")


def test_finish_runs_after_the_sum_with_the_shared_generator() -> None:
    noise = 0.5
    clean, _, _ = d_grads("Dmain", rounds=1, pm=create_plugin_manager([TAKEOVER]))
    noisy, _, ctx = d_grads("Dmain", rounds=1, pm=create_plugin_manager([TAKEOVER]), toy_noise=noise)
    g = seeded_generator(ctx.options["seed"], 5, "takeover/Dmain")
    for k, value in clean.items():  # parameters in order, one draw each, divided by the expected batch
        expected = value + noise * torch.randn(value.shape, generator=g) / 4
        torch.testing.assert_close(noisy[k], expected, rtol=1e-5, atol=1e-6)


def test_nan_from_a_plugin_is_scrubbed_after_its_finish() -> None:
    o, G, D, loss = parts()
    ctx = context(o, G, D)

    class Broken:
        @staticmethod
        def finish(module):
            next(module.parameters()).grad[0] = float("nan")  # after the sum: the guard must still see it

        @hookimpl
        def phase_gradients(self, phase, batch):
            return PhaseGradients({}, finish=self.finish)

    pm = create_plugin_manager([])
    pm.register(Broken(), name="broken")
    stats = StatsCollector()
    real, real_c, z, gen_c = batch(2)
    phase = Phase("Dmain", D, torch.optim.Adam(D.parameters(), lr=0.0), 1)
    run_phase(phase, [(real, real_c)], [(z, gen_c)], loss, ctx, pm, stats, DistInfo())
    first = next(D.parameters()).grad
    assert torch.isfinite(first).all() and first.abs().sum() == 0  # zeros: the plugin returned no grads
    assert stats.reduce()["Progress/nonfinite_grads"]["mean"] == first[0].numel()


def test_bad_phase_gradients_are_rejected() -> None:
    o, G, D, loss = parts()
    real, real_c, z, gen_c = batch(2)

    class Wrong:
        def __init__(self, grads):
            self.grads = grads

        @hookimpl
        def phase_gradients(self):
            return PhaseGradients(self.grads)

    phase = Phase("Dmain", D, torch.optim.Adam(D.parameters(), lr=0.0), 1)
    name, p = next(iter(D.named_parameters()))
    for grads, message in [
        ({"nope": torch.zeros(1)}, "'nope', which is not a parameter"),
        ({name: torch.zeros(3)}, f"the gradient of {name!r} must be a tensor of shape {list(p.shape)}"),
    ]:
        pm = create_plugin_manager([])
        pm.register(Wrong(grads), name="wrong")
        with pytest.raises(InvalidPluginError, match=re.escape(message)):
            run_phase(
                phase,
                [(real, real_c)],
                [(z, gen_c)],
                loss,
                context(o, G, D),
                pm,
                StatsCollector(),
                DistInfo(),
            )
    pm = create_plugin_manager([])
    pm.register(Wrong({}), name="one")
    pm.register(Wrong({}), name="two")
    with pytest.raises(InvalidPluginError, match="both answer phase_gradients"):
        run_phase(
            phase, [(real, real_c)], [(z, gen_c)], loss, context(o, G, D), pm, StatsCollector(), DistInfo()
        )


def test_dboth_is_dmain_plus_gain_times_dreg_on_the_same_examples() -> None:
    o, G, D, loss = parts()
    real, real_c, z, gen_c = batch(4)
    D.requires_grad_(True)

    def grads(phase: str, **kw) -> list[torch.Tensor]:
        torch.manual_seed(1)
        out = loss.compute(phase, real_img=real, real_c=real_c, gen_z=z, gen_c=gen_c, **kw)
        return torch.autograd.grad(out.loss, list(D.parameters()), allow_unused=True)

    both = grads("Dboth", r1_gain=16.0)
    for b, m, r in zip(both, grads("Dmain"), grads("Dreg")):
        expected = (m if m is not None else 0) + 16 * (r if r is not None else 0)
        torch.testing.assert_close(b, expected, rtol=1e-4, atol=1e-6)


def test_combined_d_phase_runs_r1_when_due_without_lr_scaling() -> None:
    o = tiny_options()
    o.combine_d_reg = True
    G, D, _, _ = build_networks(o, torch.device("cpu"))
    phases = build_phases(o, G, D)
    names = [[n for p in phases if (n := p.name_at(step)) is not None] for step in (0, 1, 4, 16)]
    assert names == [["Gmain", "Greg", "Dboth"], ["Gmain", "Dmain"], ["Gmain", "Greg", "Dmain"], names[0]]
    d_opt = phases[-1].opt
    assert d_opt.param_groups[0]["lr"] == pytest.approx(o.dlr)  # one optimizer step per step
    assert phases[0].opt.param_groups[0]["lr"] == pytest.approx(o.glr * 4 / 5)  # G keeps lazy Greg


def test_shared_generator_is_the_same_on_every_rank_and_differs_by_step_and_purpose() -> None:
    o, G, D, _ = parts()
    a, b = context(o, G, D), context(o, G, D)
    b.rank, b.world_size, a.world_size = 1, 2, 2
    draw = lambda ctx, purpose="p": torch.randn(1000, generator=ctx.shared_generator(purpose))  # noqa: E731
    assert torch.equal(draw(a), draw(b))
    assert not torch.equal(draw(a), draw(a, "q"))
    b.step += 1
    assert not torch.equal(draw(a), draw(b))
    assert draw(a).std().item() == pytest.approx(1.0, abs=0.1)


def test_poisson_sampler_varies_includes_empty_batches_and_shards_across_ranks() -> None:
    sampler = PoissonSampler(8, rate=0.25, seed=3)
    assert sampler.expected_batch == 2
    sizes = [len(sampler.indices(s)) for s in range(4000)]
    assert np.mean(sizes) == pytest.approx(2.0, abs=0.05)
    assert np.var(sizes) == pytest.approx(8 * 0.25 * 0.75, rel=0.1)  # binomial
    assert 0 in sizes and max(sizes) > 4
    assert np.array_equal(sampler.indices(17), PoissonSampler(8, 0.25, seed=3).indices(17))  # pure
    idx = sampler.indices(int(np.argmax(sizes)))
    shares = [rank_share(idx, r, 2) for r in range(2)]
    assert sorted(np.concatenate(shares).tolist()) == sorted(idx.tolist())
    with pytest.raises(ValueError, match="rate"):
        PoissonSampler(8, rate=0)
    # The loader's batch sampler: one empty chunk for an empty share, chunks of at most batch_gpu.
    chunks = StepChunks(takeover.ScriptedSampler([5, 0, 1], 100), rank=1, world_size=2, batch_gpu=1)
    assert [c for c, _ in zip(iter(chunks), range(4))] == [[1], [3], [], []]
    assert [chunks.chunks_in(rank_share(chunks.sampler.indices(s), 1, 2)) for s in range(3)] == [2, 1, 1]


# ----------------------------------------------------------------------------- options changed by plugins


def dry_run(tmp_path: Path, *extra: str):
    data = make_shapes(tmp_path / "shapes", n=4)
    return cli.main(tiny_args(tmp_path / "runs", data, "--cond=1", "-n", *extra), standalone_mode=False)


def test_adjusted_options_show_in_dry_run_with_who_changed_what(tmp_path: Path, capsys) -> None:
    o = dry_run(tmp_path, "--plugin", TAKEOVER)
    out = capsys.readouterr()
    printed = json.loads(out.out)
    assert o.mbstd_group == printed["mbstd_group"] == 1 and o.combine_d_reg and not o.reals_grid
    assert printed["adjusted"]["mbstd_group"] == {"plugin": TAKEOVER, "from": 4, "to": 1}
    assert "phase_gradients" in printed["plugin_hooks"][TAKEOVER]  # what each plugin implements
    assert list(printed["plugin_hooks"]) == [TAKEOVER]
    assert f"Plugin {TAKEOVER!r} set mbstd_group = 1 (was 4)" in out.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": "x"}, "cannot change the option 'data'"),
        ({"mbstd_group": 0}, "sets mbstd_group = 0: --mbstd-group must be at least 1"),
        ({"combine_d_reg": "yes"}, "must be of type bool"),
        ({"batch": 6}, "--batch=6 must be divisible by --batch-gpu=4"),
        ({"aug": "fixed"}, "--aug=fixed needs --p"),
        ({"mbstd_group": 2}, f"plugins {TAKEOVER!r} and {ADJUSTER!r} set mbstd_group to different values"),
    ],
)
def test_bad_option_changes_are_usage_errors_naming_the_plugin(tmp_path: Path, changes, message) -> None:
    with pytest.raises(click.UsageError, match=message) as info:
        dry_run(tmp_path, "--plugin", TAKEOVER, "--plugin", ADJUSTER, "--adjust", json.dumps(changes))
    assert ADJUSTER in str(info.value) and not (tmp_path / "runs").exists()


def test_adjustment_of_the_same_value_by_two_plugins_is_fine() -> None:
    o = apply_adjustment(tiny_options(), "a", {"mbstd_group": 1, "aug": "fixed", "p": 0.3})
    o = apply_adjustment(o, "b", {"mbstd_group": 1})
    assert o.adjusted == {
        "mbstd_group": {"plugin": "a", "from": 4, "to": 1},
        "aug": {"plugin": "a", "from": "ada", "to": "fixed"},
        "p": {"plugin": "a", "from": None, "to": 0.3},
    }
    with pytest.raises(OptionsError, match="plugins 'a' and 'c' set aug to different values"):
        apply_adjustment(o, "c", {"aug": "noaug"})
    with pytest.raises(
        OptionsError, match="plugin 'c': --p=0.3 can only be given with --aug=fixed, not --aug=ada"
    ):
        apply_adjustment(tiny_options(), "c", {"p": 0.3})


def test_a_sampler_needs_minibatch_std_group_one() -> None:
    pm = create_plugin_manager([TAKEOVER])
    o = tiny_options(mbstd_group=2)
    o.plugin_options = {"toy_sizes": "1,2"}
    expected = f"plugin {TAKEOVER!r} samples batches of varying size, which needs --mbstd-group 1 \\(got 2\\)"
    with pytest.raises(OptionsError, match=expected):
        plugin_sampler(pm, o, list(range(8)))
    o.mbstd_group = 1
    assert plugin_sampler(pm, o, list(range(8))).expected_batch == 1.5
    o.plugin_options = {"toy_sizes": ""}
    assert plugin_sampler(pm, o, list(range(8))) is None


# ------------------------------------------------------------------------------------------- in a run


def test_run_with_varying_and_empty_batches_a_takeover_labels_and_no_real_outputs(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    # Steps show 3, 0, 1, 4, 3, 0, ... examples: 8 per 4 steps, expected 2; kimg 0.016 -> 16 reals.
    args = (
        "--cond=1",
        "--plugin",
        TAKEOVER,
        "--toy-sizes",
        "3,0,1,4",
        "--toy-class",
        "1",
        "--toy-takeover",
        "Dmain",
    )
    result = cli.main(tiny_args(tmp_path / "runs", data, *args), standalone_mode=False)
    seen, run_dir = takeover.SEEN, result.run_dir
    steps = seen["steps"]
    assert [s.real_batch for s in steps] == [3, 0, 1, 4] * 2 and result.state.cur_nimg == 16
    assert all(s.real_batch_total == s.real_batch and s.expected_batch == 2 for s in steps)
    assert [s.phases for s in steps[:2]] == [("Gmain", "Greg", "Dboth"), ("Gmain", "Dmain")]
    # Dboth (step 0) ran in the core; the plugin took over Dmain, on empty steps too.
    assert [(t[0], t[2], t[3]) for t in seen["taken"]] == [(s, [3, 0, 1, 4][s % 4], 2.0) for s in range(1, 8)]
    assert all((c == torch.tensor([0.0, 1.0])).all() for c in seen["gen_c"])  # G's labels: all class 1
    assert 256 in seen["label_counts"]  # the fakes grid (16 x 16) asked for its labels too
    assert seen["end"] == [(None, 16)]
    names = {p.name for p in run_dir.iterdir()}
    assert "reals.png" not in names and "fakes_init.png" in names
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert not any(k in line for line in stats for k in ("Loss/scores/real", "Loss/signs/real"))
    assert "Loss/scores/fake" in stats[-1] and "Loss/D/loss" in stats[-1]
    log = (run_dir / "log.txt").read_text()
    assert f"Plugin {TAKEOVER!r} set combine_d_reg = True (was False)" in log and "8 items" not in log
    assert "a plugin's sampler, 2 expected" in log
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["adjusted"]["real_score_stats"] == {"plugin": TAKEOVER, "from": True, "to": False}
    assert options["mbstd_group"] == 1 and options["combine_d_reg"] is True


def test_stop_request_ends_cleanly_and_the_snapshot_needs_the_plugin(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    outdir = tmp_path / "runs"
    args = ("--cond=1", "--plugin", TAKEOVER, "--toy-sizes", "2", "--toy-stop-after", "3")
    result = cli.main(tiny_args(outdir, data, *args, snap=100), standalone_mode=False)
    assert result.stopped_early == "takeover: stop after 3 steps"
    assert result.state.batch_idx == 3 and result.state.cur_nimg == 6  # well before --kimg 0.016
    assert takeover.SEEN["end"] == [("takeover: stop after 3 steps", 6)]
    snapshot = result.snapshots[-1]  # the final tick's
    ckpt = load_checkpoint(snapshot)
    assert ckpt.metadata["training_state"]["cur_nimg"] == 6
    assert ckpt.metadata["required_plugins"] == {TAKEOVER: "its step count would be lost"}
    assert "Stopped early: takeover: stop after 3 steps" in (result.run_dir / "log.txt").read_text()

    before = sorted(outdir.iterdir())
    with pytest.raises(click.UsageError, match=f"can only be continued with --plugin {TAKEOVER}: its step"):
        cli.main(tiny_args(outdir, data, "--cond=1", "--resume", str(snapshot)), standalone_mode=False)
    assert sorted(outdir.iterdir()) == before  # refused before any run folder
    resumed = cli.main(
        tiny_args(outdir, data, *args[:-1], "0", "--resume", str(snapshot), kimg=0.008), standalone_mode=False
    )
    assert takeover.SEEN["restored"] == 3 and resumed.state.cur_nimg == 8 and resumed.stopped_early is None
    assert [s.step for s in takeover.SEEN["steps"]] == [3]  # the sampler continues at step 3


def test_a_stop_requested_during_setup_trains_no_step(tmp_path: Path) -> None:
    class StopAtOnce:
        @hookimpl
        def training_setup(self, context):
            context.request_stop("nothing to do")

    from stylegan2_ada.training.loop import training_loop

    data = make_shapes(tmp_path / "shapes", n=4)
    opts = cli.main(tiny_args(tmp_path / "runs", data, "-n"), standalone_mode=False)
    opts.dry_run = False
    pm = create_plugin_manager([])
    pm.register(StopAtOnce(), name="stop")
    result = training_loop(opts, pm=pm)
    assert result.stopped_early == "nothing to do" and result.state.batch_idx == 0
    assert len(result.snapshots) == 1
