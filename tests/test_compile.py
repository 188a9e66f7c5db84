"""torch.compile path (stylegan2_ada.compile): eager fallback, equality with eager, training steps.

Most tests compile with the ``aot_eager`` backend: it runs dynamo's graph capture and AOTAutograd's
forward/backward graphs (what can break on our code: graph breaks, buffer mutation, backward) without
generating C++, so it is fast and needs no compiler. One test (marked slow) uses inductor, the
backend ``--compile`` uses, where a C++ compiler is available.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylegan2_ada import checkpoint
from stylegan2_ada.compile import (
    CompiledLoss,
    compile_for_training,
    compile_unavailable_reason,
    maybe_compile,
)
from stylegan2_ada.loss import StyleGAN2Loss
from stylegan2_ada.networks import Discriminator, Generator
from stylegan2_ada.training import distributed as dist
from stylegan2_ada.training.loop import Phase, run_phase
from stylegan2_ada.training.stats import StatsCollector
from tests.conftest import tiny_d_kwargs, tiny_g_kwargs

RES = 8
BATCH = 4
INDUCTOR_MISSING = compile_unavailable_reason("cpu", "inductor")


@pytest.fixture(autouse=True)
def fresh_dynamo(one_torch_thread):
    """Each test compiles its own networks: forget earlier graphs (dynamo caches per code object)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _nets(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G = Generator(**tiny_g_kwargs(res=RES)).train().requires_grad_(False)
    D = Discriminator(**tiny_d_kwargs(res=RES)).train().requires_grad_(False)
    return G, D


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.eye(2)[[0, 1, 0, 1]]
    return dict(
        real_img=torch.randn(BATCH, 1, RES, RES, generator=g),
        real_c=c,
        gen_z=torch.randn(BATCH, 16, generator=g),
        gen_c=c,
    )


def _train(loss, G: Generator, D: Discriminator, steps: int, device: str = "cpu") -> None:
    """``steps`` steps of the loop's own phase function: Gmain, Greg (every 2nd), Dmain, Dreg (every 2nd)."""
    # SGD, not Adam: Adam's first steps are about lr * sign(grad), which turns float-rounding differences
    # in near-zero gradients into lr-sized ones; SGD keeps differences in proportion.
    opt_G = torch.optim.SGD(G.parameters(), lr=1e-2)
    opt_D = torch.optim.SGD(D.parameters(), lr=1e-2)
    phases = [Phase("Gmain", G, opt_G, 1), Phase("Greg", G, opt_G, 2), Phase("Dmain", D, opt_D, 1)]
    phases.append(Phase("Dreg", D, opt_D, 2))
    stats = StatsCollector(device)
    for step in range(steps):
        b = {k: v.to(device) for k, v in _batch(seed=step).items()}
        for phase in phases:
            if step % phase.interval == 0:
                torch.manual_seed(100 * step + len(phase.name))  # same style mixing and noise in both runs
                reals = [(b["real_img"], b["real_c"])]
                gens = [(b["gen_z"], b["gen_c"])]
                run_phase(phase, reals, gens, loss, None, None, stats, dist.DistInfo())


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, rtol: float, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


# ------------------------------------------------------------------------------------------- fallback


def test_missing_compiler_falls_back_with_message_and_trains(capsys):
    from torch._inductor import config

    G, D = _nets()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    with config.patch({"cpp.cxx": (None, "no-such-c++-compiler-h13")}):
        assert "no C++ compiler found" in compile_unavailable_reason("cpu", "inductor")
        loss = compile_for_training(StyleGAN2Loss(G, D, None, r1_gamma=1.0), device="cpu")
    out = capsys.readouterr().out
    assert out.count("Warning") == 1 and "no C++ compiler found" in out and "training eagerly" in out
    assert all(not r.active and "no-such-c++-compiler-h13" in r.reason for r in loss.reports)

    _train(loss, G, D, steps=2)
    _train(StyleGAN2Loss(G_ref, D_ref, None, r1_gamma=1.0), G_ref, D_ref, steps=2)
    _assert_same_state(G_ref, G, rtol=0, atol=0)  # eager both ways: identical
    _assert_same_state(D_ref, D, rtol=0, atol=0)
    assert not torch.equal(G.synthesis.b8.conv1.weight, _nets()[0].synthesis.b8.conv1.weight)  # it trained


def test_compile_error_at_first_call_falls_back_once(capsys):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated compiler crash")

    G, _ = _nets()
    ws = G.mapping(_batch()["gen_z"], _batch()["gen_c"])
    synthesis, report = maybe_compile(G.synthesis, enabled=True, backend=broken_backend, name="G.synthesis")
    assert report.active
    img = synthesis(ws, noise_mode="const")
    torch.testing.assert_close(img, G.synthesis(ws, noise_mode="const"), rtol=0, atol=0)
    assert not report.active and "simulated compiler crash" in report.reason
    synthesis(ws, noise_mode="const")  # eager from now on: no second attempt, no second message
    out = capsys.readouterr().out
    assert (
        out.count("Warning: G.synthesis: compilation failed, running eagerly: RuntimeError: simulated") == 1
    )
    assert "eager" in report.summary()


def test_bad_input_raises_its_own_error_and_keeps_compilation():
    G, _ = _nets()
    synthesis, report = maybe_compile(G.synthesis, enabled=True, backend="aot_eager", say=None)
    with pytest.raises(ValueError, match="ws must be"):
        synthesis(torch.zeros(2, 3, 16))
    assert report.active and report.reason is None


def test_not_requested_is_plain_eager():
    G, _ = _nets()
    synthesis, report = maybe_compile(G.synthesis, enabled=False)
    assert not report.requested and not report.active and "not requested" in report.summary()
    assert synthesis.num_ws == G.synthesis.num_ws  # attributes read through to the module
    assert synthesis.module is G.synthesis


# ------------------------------------------------------------------------------------ compiled = eager


def test_compiled_training_equals_eager_and_does_not_recompile():
    """Four phases over several steps through the loop's run_phase: main phases compiled, regularisation
    phases eager (double backward). aot_eager keeps eager's kernels (AOTAutograd decomposes a few ops),
    so the runs agree to float rounding."""
    G, D = _nets()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    loss = compile_for_training(
        StyleGAN2Loss(G, D, None, r1_gamma=1.0), device="cpu", backend="aot_eager", say=None
    )
    assert isinstance(loss, CompiledLoss) and all(r.active for r in loss.reports)
    _train(loss, G, D, steps=2)
    graphs = [r.compilations for r in loss.reports]
    assert all(n >= 1 for n in graphs) and all(r.compile_seconds > 0 for r in loss.reports)
    _train(loss, G, D, steps=2)  # same shapes and modes: no new graphs
    assert [r.compilations for r in loss.reports] == graphs
    ref = StyleGAN2Loss(G_ref, D_ref, None, r1_gamma=1.0)
    _train(ref, G_ref, D_ref, steps=2)
    _train(ref, G_ref, D_ref, steps=2)
    _assert_same_state(G_ref, G, rtol=1e-5, atol=1e-6)  # includes mapping.w_avg, updated in the graph
    _assert_same_state(D_ref, D, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.pl_mean, ref.pl_mean)
    assert loss.pl_mean is loss.eager.pl_mean and loss.pl_mean.item() > 0  # Greg ran eagerly, updated it


def test_compiled_loss_shares_state_with_the_wrapped_loss():
    G, D = _nets()
    eager = StyleGAN2Loss(G, D, None)
    loss = compile_for_training(eager, device="cpu", enabled=False)
    loss.load_state_dict({"pl_mean": torch.tensor(3.0)})
    assert eager.pl_mean.item() == 3.0 and loss.state_dict()["pl_mean"].item() == 3.0
    pipe = torch.nn.Identity()
    loss.augment_pipe = pipe
    assert eager.augment_pipe is pipe and loss.augment_pipe is pipe


@pytest.mark.slow
@pytest.mark.skipif(INDUCTOR_MISSING is not None, reason=f"inductor cannot compile here: {INDUCTOR_MISSING}")
def test_inductor_outputs_and_gradients_match_eager():
    """The backend --compile uses: Gmain and Dmain losses and gradients, and inference images."""
    import torch._inductor.config as inductor_config

    G, D = _nets()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    ref = StyleGAN2Loss(G_ref, D_ref, None)
    with inductor_config.patch(fallback_random=True):  # random ops draw eager's numbers
        loss = compile_for_training(StyleGAN2Loss(G, D, None), device="cpu", say=None)
        for phase, module, module_ref in [("Gmain", G, G_ref), ("Dmain", D, D_ref)]:
            results = []
            for lo, m in [(ref, module_ref), (loss, module)]:
                m.requires_grad_(True)
                torch.manual_seed(7)
                out = lo.compute(phase, **_batch())
                out.loss.backward()
                results.append((out.loss.detach(), {k: p.grad for k, p in m.named_parameters()}))
                m.requires_grad_(False)
            (want, want_grads), (got, got_grads) = results
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            for k in want_grads:
                torch.testing.assert_close(got_grads[k], want_grads[k], rtol=1e-3, atol=1e-5)
        G.eval()
        synthesis, report = maybe_compile(G.synthesis, enabled=True, say=None)
        ws = G.mapping(_batch()["gen_z"], _batch()["gen_c"])
        with torch.no_grad():
            torch.testing.assert_close(
                synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"), rtol=1e-4, atol=1e-5
            )
    assert report.active and report.compilations == 1 and all(r.active for r in loss.reports)


def test_generate_cli_compile_flag_falls_back_and_writes_the_same_images(tmp_path):
    """generate.py --compile where compilation is unavailable: one warning, eager images identical to a
    run without the flag, and the manifest says what ran."""
    from torch._inductor import config

    torch.manual_seed(0)
    G = Generator(**tiny_g_kwargs(res=RES, c_dim=0)).eval()
    network = tmp_path / "g.safetensors"
    checkpoint.save_checkpoint(network, networks={"G_ema": G})
    spec = importlib.util.spec_from_file_location("generate_cli", Path(__file__).parents[1] / "generate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = [
        "--network",
        str(network),
        "--seeds",
        "0-2",
        "--device",
        "cpu",
        "--noise-mode",
        "random",
        "--quiet",
    ]
    with config.patch({"cpp.cxx": (None, "no-such-c++-compiler-h13")}):
        compiled = CliRunner().invoke(cli.main, [*args, "--outdir", str(tmp_path / "a"), "--compile"])
    plain = CliRunner().invoke(cli.main, [*args, "--outdir", str(tmp_path / "b")])
    assert compiled.exit_code == 0 and plain.exit_code == 0, compiled.output + plain.output
    assert compiled.output.count("Warning: G.synthesis: compilation unavailable") == 1
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert "eager" in manifest["compile"] and "no C++ compiler" in manifest["compile"]
    for seed in range(3):
        a, b = (np.asarray(Image.open(tmp_path / d / f"seed{seed:04d}.png")) for d in ("a", "b"))
        np.testing.assert_array_equal(a, b)


CUDA_COMPILE_MISSING = (
    "needs a CUDA device" if not torch.cuda.is_available() else compile_unavailable_reason("cuda", "inductor")
)


@pytest.mark.slow
@pytest.mark.skipif(
    CUDA_COMPILE_MISSING is not None, reason=f"no compiled CUDA path here: {CUDA_COMPILE_MISSING}"
)
def test_cuda_compiled_training_steps_match_eager():
    """Main phases compiled with inductor on CUDA (float16 blocks), regularisation phases eager."""
    import torch._inductor.config as inductor_config

    kw_g = tiny_g_kwargs(res=RES)
    kw_g["synthesis_kwargs"] = {**kw_g["synthesis_kwargs"], "num_fp16_res": 1}
    torch.manual_seed(0)
    G = Generator(**kw_g).train().requires_grad_(False).cuda()
    D = Discriminator(**{**tiny_d_kwargs(res=RES), "num_fp16_res": 1}).train().requires_grad_(False).cuda()
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    with inductor_config.patch(fallback_random=True):
        loss = compile_for_training(StyleGAN2Loss(G, D, None, r1_gamma=1.0), device="cuda", say=None)
        _train(loss, G, D, steps=2, device="cuda")
    _train(StyleGAN2Loss(G_ref, D_ref, None, r1_gamma=1.0), G_ref, D_ref, steps=2, device="cuda")
    assert all(r.active for r in loss.reports)
    _assert_same_state(G_ref, G, rtol=1e-2, atol=1e-4)  # float16 blocks: looser than float32
    _assert_same_state(D_ref, D, rtol=1e-2, atol=1e-4)


def test_train_py_compile_option_trains_and_reports(tmp_path, monkeypatch):
    """``train.py --compile`` runs the loop with the compiled-loss wrapper (or its eager fallback) and
    logs one compile summary line per network; the option is stored in training_options.json."""
    import json

    from stylegan2_ada import compile as compile_mod
    from stylegan2_ada.training import cli

    # No C++ toolchain needed for this test: force the eager fallback path of the same wrapper.
    monkeypatch.setattr(compile_mod, "compile_unavailable_reason", lambda device, backend="inductor": "test")
    args = [
        "--outdir",
        str(tmp_path),
        "--data",
        "demo",
        "--cond",
        "1",
        "--kimg",
        "0.016",
        "--tick",
        "0.008",
        "--snap",
        "10",
        "--cbase",
        "512",
        "--cmax",
        "16",
        "--batch",
        "8",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--aug",
        "noaug",
        "--compile",
    ]
    result = cli.main(args, standalone_mode=False)
    log = (result.run_dir / "log.txt").read_text()
    assert "compilation unavailable, training eagerly: test" in log
    assert "G.synthesis" in log
    assert json.loads((result.run_dir / "training_options.json").read_text())["compile"] is True
