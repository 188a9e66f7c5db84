"""Tests of the training loop (stylegan2_ada.training): a tiny end-to-end run, phases, accumulation,
NaN guard, EMA, sampler, grids, statistics, presets and ADA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sg2_training_support.data import make_shapes, tiny_args

from stylegan2_ada.checkpoint import load_checkpoint
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.plugin_api import TrainingContext
from stylegan2_ada.plugins import create_plugin_manager
from stylegan2_ada.training import cli
from stylegan2_ada.training.data import InfiniteSampler
from stylegan2_ada.training.distributed import DistInfo
from stylegan2_ada.training.ema import ema_beta, update_ema
from stylegan2_ada.training.grids import grid_shape, images_to_grid, select_grid
from stylegan2_ada.training.loop import Phase, build_networks, reduce_and_guard_gradients, run_phase
from stylegan2_ada.training.options import DatasetInfo, preset, resolve_options
from stylegan2_ada.training.stats import StatsCollector

PLUGIN = "sg2_training_support.extra_loss"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ end to end

UPSTREAM_NAMES = [
    "Loss/G/loss",
    "Loss/D/loss",
    "Loss/r1_penalty",
    "Loss/pl_penalty",
    "Loss/scores/real",
    "Loss/scores/fake",
    "Loss/signs/real",
    "Loss/signs/fake",
    "Loss/G/reg",
    "Loss/D/reg",
    "Progress/tick",
    "Progress/kimg",
    "Progress/augment",
    "Timing/total_sec",
    "Timing/sec_per_tick",
    "Timing/sec_per_kimg",
    "Timing/maintenance_sec",
    "Resources/cpu_mem_gb",
    "Resources/peak_mem",
]


def test_tiny_conditional_run_writes_every_file(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", n=8)
    # 16 images = 4 steps of 4; tick 0 after the first step, then one every 8 images: 3 ticks, 3 snapshots.
    result = cli.main(
        tiny_args(tmp_path / "runs", data, "--cond=1", "--plugin", PLUGIN, "--extra-weight", "0.2"),
        standalone_mode=False,
    )
    run_dir = result.run_dir
    assert (
        run_dir.parent == tmp_path / "runs"
        and run_dir.name == "00000-shapes-cond-auto1-kimg0.016-batch4-extra_loss"
    )
    assert result.state.cur_nimg == 16 and result.state.batch_idx == 4
    names = {p.name for p in run_dir.iterdir()}
    for f in [
        "reals.png",
        "fakes_init.png",
        "fakes000000.004.png",
        "fakes000000.012.png",
        "fakes000000.016.png",
        "network-snapshot-000000.004.safetensors",
        "network-snapshot-000000.016.safetensors",
        "stats.jsonl",
        "training_options.json",
        "log.txt",
    ]:
        assert f in names, f
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]

    # 1-channel grids are 'L' PNGs; one row per class (class 0 discs first), 16x16 tiles capped at 16x16.
    reals = Image.open(run_dir / "reals.png")
    assert reals.mode == "L" and reals.size == (16 * 16, 16 * 16)
    arr = np.asarray(reals).reshape(16, 16, 16, 16).transpose(0, 2, 1, 3)  # [row, col, H, W]
    # Squares fill more of their bounding box than discs; compare rows of class 0 and class 1.
    box_fill = []
    for row in range(2):
        tile = arr[row, 0] > 127
        ys, xs = np.nonzero(tile)
        box_fill.append(tile.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    assert box_fill[0] < 0.9 < box_fill[1]  # disc ~ pi/4, square ~ 1
    fakes = Image.open(run_dir / "fakes000000.016.png")
    assert fakes.mode == "L" and fakes.size == reals.size

    stats = read_stats(run_dir)
    assert len(stats) == 3
    lazy = {"Loss/r1_penalty", "Loss/pl_penalty", "Loss/G/reg", "Loss/D/reg"}  # only on ticks with a reg step
    for i, line in enumerate(stats):
        assert isinstance(line["timestamp"], float)
        for name in UPSTREAM_NAMES + [
            f"Loss/{PLUGIN}/img_mean",
            f"Loss/{PLUGIN}/logit_square",
            "ExtraLoss/calls",
        ]:
            if name in lazy and i > 0:
                continue
            assert name in line, name
            assert set(line[name]) == {"num", "mean", "std"} and math.isfinite(line[name]["mean"])
    assert [s["Progress/kimg"]["mean"] for s in stats] == [0.004, 0.012, 0.016]
    assert stats[0]["Loss/scores/real"]["num"] == 4  # one step of 4 reals
    assert stats[-1]["ExtraLoss/calls"]["mean"] == 8  # Gmain + Dmain per step

    opts = json.loads((run_dir / "training_options.json").read_text())
    assert opts["cond"] is True and opts["c_dim"] == 2 and opts["batch"] == 4 and opts["plugins"] == [PLUGIN]
    assert opts["plugin_options"] == {"extra_weight": 0.2}
    log = (run_dir / "log.txt").read_text()
    assert "tick 0" in log and "sec/kimg" in log and "augment" in log and "Saved network-snapshot" in log

    ckpt = load_checkpoint(run_dir / "network-snapshot-000000.016.safetensors")
    assert set(ckpt.networks) == {"G", "D", "G_ema", "augment_pipe"}
    assert ckpt.metadata["training_state"]["cur_nimg"] == 16
    assert ckpt.metadata["plugins"] == {PLUGIN: {"calls": 8}}
    assert any(k.startswith("optimizer/G/") for k in ckpt.tensors)


# -------------------------------------------------------------------------------------------- phases


def tiny_options(**over):
    raw = dict(
        outdir="unused", data="unused", batch=4, cbase=256, cmax=32, map_depth=2, device="cpu", cond=True
    )
    raw.update(over)
    o = resolve_options(raw, DatasetInfo("toy", 16, 1, 2, True, 16))
    o.z_dim = o.w_dim = 32
    return o


def make_run_parts(seed: int = 0, **over):
    torch.manual_seed(seed)
    o = tiny_options(**over)
    G, D, G_ema, pipe = build_networks(o, torch.device("cpu"))
    return o, G, D, G_ema, pipe


def _batch(n: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.one_hot(torch.arange(n) % 2, 2).float()
    return torch.rand([n, 1, 16, 16], generator=g) * 2 - 1, c, torch.randn([n, 32], generator=g), c.flip(0)


def test_plugin_loss_term_changes_gradients_by_its_own_gradient() -> None:
    pm = create_plugin_manager([PLUGIN])
    real, real_c, z, gen_c = _batch(4)

    def gmain_grads(with_plugin: bool) -> tuple[dict, list]:
        o, G, D, G_ema, pipe = make_run_parts(aug="noaug")
        loss = StyleGAN2Loss(G, D, None)
        opt = torch.optim.Adam(G.parameters(), lr=0.0)
        ctx = TrainingContext(
            G=G,
            D=D,
            G_ema=G_ema,
            augment_pipe=None,
            dataset=None,
            device=torch.device("cpu"),
            run_dir=None,
            options={**o.context_options(), "extra_weight": 0.5},
        )
        if with_plugin:
            pm.hook.training_setup(context=ctx)
        torch.manual_seed(11)
        stats = StatsCollector()
        run_phase(
            Phase("Gmain", G, opt, 1),
            [(real, real_c)],
            [(z, gen_c)],
            loss,
            ctx,
            pm if with_plugin else None,
            stats,
            DistInfo(),
        )
        reported = stats.reduce()
        return {k: p.grad.clone() for k, p in G.named_parameters()}, reported, ctx

    without, stats_without, _ = gmain_grads(False)
    with_, stats_with, ctx = gmain_grads(True)
    assert f"Loss/{PLUGIN}/img_mean" in stats_with and f"Loss/{PLUGIN}/img_mean" not in stats_without
    assert ctx.extras["extra_loss"]["transforms"] == {"Gmain": 1}  # gradient_transforms ran once
    # Expected difference: the gradient of 0.5 * mean(G(z, c)) with the same random draws.
    o, G, D, _, _ = make_run_parts(aug="noaug")
    G.requires_grad_(True)
    torch.manual_seed(11)
    img, _ = StyleGAN2Loss(G, D, None).run_G(z, gen_c)
    (0.5 * img.mean()).backward()
    changed = 0
    for k, p in G.named_parameters():
        torch.testing.assert_close(with_[k] - without[k], p.grad, rtol=1e-3, atol=1e-6)
        changed += int((with_[k] - without[k]).abs().max() > 0)
    assert changed > 0


def test_gradient_accumulation_over_rounds_equals_one_round() -> None:
    real, real_c, _, _ = _batch(4)

    def dreg_grads(rounds: int) -> dict:
        o, G, D, G_ema, pipe = make_run_parts(aug="noaug", mbstd_group=1)
        loss = StyleGAN2Loss(G, D, None, r1_gamma=1.0)
        opt = torch.optim.Adam(D.parameters(), lr=0.0)
        chunks = list(zip(real.chunk(rounds), real_c.chunk(rounds)))
        gens = [(None, None)] * rounds
        run_phase(Phase("Dreg", D, opt, 16), chunks, gens, loss, None, None, StatsCollector(), DistInfo())
        return {k: p.grad.clone() for k, p in D.named_parameters() if p.grad is not None}

    one, two = dreg_grads(1), dreg_grads(2)
    assert one.keys() == two.keys() and one
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("flat_buffer", [False, True])
def test_nan_and_inf_gradients_are_scrubbed_and_counted(flat_buffer: bool) -> None:
    m = torch.nn.Linear(3, 2)
    m.weight.grad = torch.tensor([[float("nan"), 1.0, float("inf")], [-float("inf"), 2.0, 3.0]])
    m.bias.grad = torch.tensor([0.5, float("nan")])
    stats = StatsCollector()
    reduce_and_guard_gradients(m, DistInfo(), stats, flat_buffer=flat_buffer)
    torch.testing.assert_close(m.weight.grad, torch.tensor([[0.0, 1.0, 1e5], [-1e5, 2.0, 3.0]]))
    torch.testing.assert_close(m.bias.grad, torch.tensor([0.5, 0.0]))
    assert stats.reduce()["Progress/nonfinite_grads"]["mean"] == 4
    ok = torch.nn.Linear(3, 2)
    ok.weight.grad, ok.bias.grad = torch.full([2, 3], 1e30), torch.zeros(2)  # finite (its norm overflows)
    reduce_and_guard_gradients(ok, DistInfo(), stats, flat_buffer=flat_buffer)
    torch.testing.assert_close(ok.weight.grad, torch.full([2, 3], 1e30))
    assert stats.reduce()["Progress/nonfinite_grads"]["mean"] == 0


def test_ema_beta_ramp_and_update() -> None:
    assert ema_beta(16, 0, ema_kimg=5, ema_rampup=0.05) == 0.0  # first step: G_ema = G
    assert ema_beta(16, 10**7, 5, 0.05) == pytest.approx(0.5 ** (16 / 5000))
    assert ema_beta(16, 1000, 5, 0.05) == pytest.approx(0.5 ** (16 / 50))
    assert ema_beta(16, 0, 5, None) == pytest.approx(0.5 ** (16 / 5000))
    a, b = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
        b.running_mean.fill_(7.0)
    update_ema(a, b, beta=0.25)
    torch.testing.assert_close(a.weight, torch.full([2], 0.25 * 1 + 0.75 * 3))
    torch.testing.assert_close(a.running_mean, torch.full([2], 7.0))  # buffers copied


# ---------------------------------------------------------------------------------------- pieces


def test_infinite_sampler_shards_ranks_and_resumes() -> None:
    n, world = 10, 2
    streams = [InfiniteSampler(n, rank=r, world_size=world, seed=5) for r in range(world)]
    first = [[x for _, x in zip(range(5), iter(s))] for s in streams]
    assert sorted(first[0] + first[1]) == list(range(n))  # one epoch split across the ranks, no overlap
    it = iter(InfiniteSampler(n, rank=1, world_size=world, seed=5))
    seq = [next(it) for _ in range(23)]
    resumed = iter(InfiniteSampler(n, rank=1, world_size=world, seed=5, start=7))
    assert [next(resumed) for _ in range(16)] == seq[7:]


def test_grid_shape_and_png_conversion() -> None:
    assert grid_shape(256) == (30, 16)  # upstream's clip(7680 // 256, 7, 32) x clip(4320 // 256, 4, 32)
    assert grid_shape(1024) == (7, 4)
    assert grid_shape(32) == (16, 16)  # capped for small images
    assert grid_shape(32, num_classes=3) == (16, 15)
    imgs = torch.linspace(-1, 1, 6 * 2 * 2).reshape(6, 1, 2, 2)
    g = images_to_grid(imgs, (3, 2))
    assert g.shape == (4, 6) and g.dtype == np.uint8 and g.min() == 0 and g.max() == 255
    rgb = images_to_grid(torch.zeros(2, 3, 4, 4), (2, 1))
    assert rgb.shape == (4, 8, 3)
    labels = np.eye(3, dtype=np.float32)[[2, 0, 1, 0, 2, 1, 1]]
    (gw, gh), idx, grid_labels = select_grid(list(range(7)), labels, 32, seed=0)
    assert (gw, gh) == (16, 15)
    rows = np.asarray(grid_labels).argmax(1).reshape(gh, gw)
    assert (rows == np.arange(gh)[:, None] % 3).all()  # one class per row, in class order


def test_stats_collector_moments() -> None:
    s = StatsCollector()
    s.report("a", torch.tensor([1.0, 2.0, 3.0]))
    s.report("a", 4.0)
    s.report("b", torch.tensor([[2.0], [2.0]]))
    out = s.reduce()
    assert out["a"]["num"] == 4 and out["a"]["mean"] == pytest.approx(2.5)
    assert out["a"]["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert out["b"] == {"num": 2, "mean": 2.0, "std": 0.0}
    assert s.reduce() == {}


def test_presets_follow_upstream() -> None:
    p = preset("auto", 256, 1)
    assert (p.mb, p.mbstd, p.fmaps, p.lrate, p.ema, p.map) == (16, 4, 0.5, 0.0025, 5.0, 2)
    assert p.gamma == pytest.approx(0.8192)
    o = resolve_options(dict(outdir="o", data="d"), DatasetInfo("d", 256, 1, 0, False, 10), device="cpu")
    assert (o.batch, o.batch_gpu, o.cbase, o.cmax, o.map_depth, o.mbstd_group, o.glr) == (
        16,
        16,
        16384,
        512,
        2,
        4,
        0.0025,
    )
    assert (o.ema_kimg, o.ema_rampup, o.num_fp16_res, o.conv_clamp, o.ada_kimg) == (5.0, 0.05, 4, 256, 500)
    o = resolve_options(
        dict(outdir="o", data="d", cfg="paper256"), DatasetInfo("d", 256, 1, 0, False, 10), device="cpu"
    )
    assert (o.batch, o.batch_gpu, o.mbstd_group, o.gamma, o.ema_kimg, o.ema_rampup, o.map_depth) == (
        64,
        8,
        8,
        1,
        20,
        None,
        8,
    )
    o = resolve_options(
        dict(outdir="o", data="d", cfg="cifar", cbase=1024, glr=0.001, fp32=True),
        DatasetInfo("d", 32, 3, 0, False, 10),
        device="cpu",
    )
    assert (o.pl_weight, o.style_mixing, o.d_architecture, o.cbase, o.glr, o.dlr) == (
        0,
        0,
        "orig",
        1024,
        0.001,
        0.0025,
    )
    assert (o.num_fp16_res, o.conv_clamp) == (0, None)


def test_freeze_d_turns_the_first_layers_into_buffers() -> None:
    _, _, D0, _, _ = make_run_parts(aug="noaug")
    _, _, D2, _, _ = make_run_parts(aug="noaug", freezed=2)
    n0 = sum(p.numel() for p in D0.parameters())
    n2 = sum(p.numel() for p in D2.parameters())
    assert n2 < n0
    assert D0.state_dict().keys() == D2.state_dict().keys()  # same names: frozen weights are buffers


# ------------------------------------------------------------------------------------------------ ADA


def test_ada_p_rises_when_d_overfits_a_tiny_dataset(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "two", n=2)
    result = cli.main(
        tiny_args(
            tmp_path / "runs",
            data,
            "--aug",
            "ada",
            "--ada-kimg",
            "0.5",
            "--target",
            "0.3",
            "--dlr",
            "0.01",
            "--glr",
            "0.0005",
            "--gamma",
            "0",
            kimg=0.16,
            tick=0.04,
            snap=100,
        ),
        standalone_mode=False,
    )
    stats = read_stats(result.run_dir)
    p = [s["Progress/augment"]["mean"] for s in stats]
    signs = [s["Loss/signs/real"]["mean"] for s in stats]
    assert max(signs[1:]) > 0.3  # D separates the two reals from the fakes ...
    assert p[-1] > 0.1 and p == sorted(p)  # ... and ADA raises p (by 4*4/500 per update)
    assert all(0.0 <= x <= 1.0 for x in p)
    assert float(result.augment_pipe.p) == pytest.approx(p[-1])
