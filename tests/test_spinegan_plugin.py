"""Tests of the ``spinegan`` plugin (plugins/spinegan): the frozen classifier's loss on the fakes.

What is checked: the term equals a hand computation (BCE-with-logits / cross-entropy on known logits, and
through a real classifier); the classifier sees exactly its own eval transform of the fakes; its gradient
reaches G and never the classifier, whose weights stay bit-identical through real ``train.py`` steps;
mismatched classifiers and runs are refused before a run folder exists; the entry point is declared.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from classification_helpers import shape_images, write_dataset
from sg2_training_support.data import tiny_args

from classification.model_file import Classifier, ClassifierMeta, load_classifier, save_classifier
from classification.models import build_network
from plugins.spinegan import EXTRAS_KEY, INFO_FILE
from plugins.spinegan.domain import autocast_dtype, domain_loss, hits
from stylegan2_ada.hookspecs import hookimpl
from stylegan2_ada.plugin_api import PhaseData, TrainingContext
from stylegan2_ada.plugins import call_loss_terms, collect_tick_statistics, create_plugin_manager
from stylegan2_ada.training import cli
from stylegan2_ada.training.distributed import DistInfo, init_distributed, shutdown_distributed

REPO = Path(__file__).resolve().parents[1]
NAMES = ("normal", "abnormal")


def make_classifier(
    path: Path,
    class_names=NAMES,
    *,
    input_size: int = 20,
    in_channels: int = 3,
    mean=(0.3, 0.4, 0.5),
    std=(0.2, 0.25, 0.3),
    seed: int = 0,
) -> Path:
    """A randomly initialised ``small`` classifier saved in our format (what the plugin loads)."""
    mean, std = tuple(mean[:in_channels]), tuple(std[:in_channels])
    meta = ClassifierMeta(
        "small", input_size, in_channels, mean, std, tuple(class_names), arch_kwargs={"width": 4}
    )
    torch.manual_seed(seed)
    net = build_network("small", meta.num_outputs, in_channels, input_size, {"width": 4})
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval mode matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_classifier(path, Classifier(meta, net))
    return path


def labelled_set(folder: Path, class_names=NAMES, n_per_class: int = 8, res: int = 16) -> Path:
    images, labels = shape_images(n_per_class, res, seed=1)
    return write_dataset(
        folder, images, labels, class_names=None if class_names is None else list(class_names)
    )


def context(clf_path: Path, weight: float = 0.1, G: torch.nn.Module | None = None) -> TrainingContext:
    G = G if G is not None else torch.nn.Linear(4, 2 * 16 * 16)
    return TrainingContext(
        G=G,
        D=torch.nn.Linear(4, 1),
        G_ema=G,
        augment_pipe=None,
        dataset=None,
        device=torch.device("cpu"),
        run_dir=None,
        options={"classifier": str(clf_path), "domain_weight": weight, "fp32": False},
    )


def gmain(img: torch.Tensor, classes: torch.Tensor, k: int = 2) -> PhaseData:
    return PhaseData("Gmain", gen_img=img, gen_c=F.one_hot(classes, k).float())


# ------------------------------------------------------------------------------------------ the term


def test_losses_equal_hand_computations_on_known_logits():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    c = F.one_hot(torch.tensor([1, 0, 0, 1]), 2).float()
    # BCE with logits: -log sigmoid(l) for the positive class, -log(1 - sigmoid(l)) for the negative.
    expected = [
        math.log1p(math.exp(-2.0)),
        math.log1p(math.exp(-1.0)),
        math.log1p(math.exp(0.5)),
        3.048587351573742,
    ]
    assert domain_loss(logits, c).tolist() == pytest.approx(expected, rel=1e-6)
    assert hits(logits, c).tolist() == [1.0, 1.0, 0.0, 0.0]
    logits3 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    c3 = F.one_hot(torch.tensor([2, 1]), 3).float()
    lse = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    assert domain_loss(logits3, c3).tolist() == pytest.approx([lse - 3.0, math.log(3.0)], rel=1e-6)
    assert hits(logits3, c3).tolist() == [1.0, 0.0]  # a tie goes to the first class


def test_term_is_the_weighted_bce_of_the_classifiers_logits(tmp_path):
    clf_path = make_classifier(tmp_path / "clf.safetensors")
    pm = create_plugin_manager(["spinegan"])
    ctx = context(clf_path, weight=0.25)
    pm.hook.training_setup(context=ctx)
    torch.manual_seed(1)
    img = torch.rand(6, 1, 16, 16) * 2 - 1
    classes = torch.tensor([0, 1, 1, 0, 1, 0])
    terms = call_loss_terms(pm, "Gmain", ctx, gmain(img, classes))
    assert set(terms) == {"Loss/spinegan/domain"}
    logit = load_classifier(clf_path).logits(img)[:, 0].double()  # [N]
    y = classes.double()
    hand = (y * torch.log1p(torch.exp(-logit)) + (1 - y) * torch.log1p(torch.exp(logit))).mean() * 0.25
    assert float(terms["Loss/spinegan/domain"]) == pytest.approx(float(hand), rel=1e-5)
    for phase in ("Greg", "Dmain", "Dreg"):  # Gmain only
        assert call_loss_terms(pm, phase, ctx, PhaseData(phase, gen_img=img)) == {}
    # The tick's statistics: the unweighted mean loss and the agreement, over every Gmain call.
    call_loss_terms(pm, "Gmain", ctx, gmain(img, classes))
    stats = collect_tick_statistics(pm, ctx)
    assert stats["Domain/loss"] == pytest.approx(float(hand) / 0.25, rel=1e-5)
    agree = float(((logit > 0).long() == classes).double().mean())
    assert stats["Domain/agreement"] == pytest.approx(agree)
    assert collect_tick_statistics(pm, ctx) == {}  # reset at each tick; nothing since


def test_multiclass_term_is_cross_entropy_against_the_class(tmp_path):
    names = ("a", "b", "c")
    clf_path = make_classifier(tmp_path / "clf3.safetensors", names, in_channels=1)
    pm = create_plugin_manager(["spinegan"])
    ctx = context(clf_path, weight=1.0)
    pm.hook.training_setup(context=ctx)
    img = torch.rand(5, 1, 16, 16) * 2 - 1
    classes = torch.tensor([0, 1, 2, 2, 1])
    term = call_loss_terms(pm, "Gmain", ctx, gmain(img, classes, 3))["Loss/spinegan/domain"]
    logits = load_classifier(clf_path).logits(img)
    assert logits.shape == (5, 3)
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(5), classes].mean()
    assert float(term) == pytest.approx(float(expected), rel=1e-5)


def test_classifier_sees_exactly_its_own_eval_transform(tmp_path):
    """The network's input during the plugin's call equals the transform computed here by hand
    ((x+1)/2, antialiased bilinear resize, 1 -> 3 channels, (x - mean) / std), and the classifier's own
    ``transform`` (what its training and evaluation apply) on the same images."""
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    clf_path = make_classifier(tmp_path / "clf.safetensors", input_size=20, in_channels=3, mean=mean, std=std)
    pm = create_plugin_manager(["spinegan"])
    ctx = context(clf_path)
    pm.hook.training_setup(context=ctx)
    clf = ctx.extras[EXTRAS_KEY].term.classifier
    seen: list[torch.Tensor] = []
    handle = clf.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    img = torch.rand(3, 1, 32, 32) * 2 - 1
    call_loss_terms(pm, "Gmain", ctx, gmain(img, torch.tensor([0, 1, 0])))
    handle.remove()
    (x,) = seen
    unit = (img + 1) / 2
    resized = F.interpolate(unit, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    by_hand = (resized.repeat(1, 3, 1, 1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(x, by_hand, rtol=0, atol=1e-6)
    own = load_classifier(clf_path).meta.eval_transform
    assert torch.equal(x, own(img))
    assert torch.equal(x, own.from_unit(unit))  # what training applies after its augmentation


def test_gradient_reaches_the_images_and_G_but_not_the_classifier(tmp_path):
    clf_path = make_classifier(tmp_path / "clf.safetensors")
    pm = create_plugin_manager(["spinegan"])
    G = torch.nn.Linear(4, 16 * 16)
    ctx = context(clf_path, G=G)
    pm.hook.training_setup(context=ctx)
    clf = ctx.extras[EXTRAS_KEY].term.classifier
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    img = torch.tanh(G(torch.randn(4, 4))).view(4, 1, 16, 16)
    term = call_loss_terms(pm, "Gmain", ctx, gmain(img, torch.tensor([0, 1, 0, 1])))["Loss/spinegan/domain"]
    term.backward()
    assert G.weight.grad is not None and G.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.net.parameters())


def test_autocast_only_on_cuda_with_mixed_precision():
    assert autocast_dtype(torch.device("cpu"), True) is None
    assert autocast_dtype(torch.device("cuda"), False) is None


# ------------------------------------------------------------------------------ real training steps


class _Spy:
    """Keeps the run's context (registered after the plugin, so its training_setup has run)."""

    context: TrainingContext | None = None

    @hookimpl(trylast=True)
    def training_setup(self, context: TrainingContext) -> None:
        self.context = context


def _train(args: list[str]) -> tuple[object, _Spy]:
    names = ["spinegan"]
    pm = create_plugin_manager(names)
    spy = _Spy()
    pm.register(spy, name="spy")
    return cli.build_command(pm, names).main(args=args, standalone_mode=False), spy


def test_real_training_steps_leave_the_classifier_bit_identical(tmp_path):
    """Two steps of ``train.py`` with the plugin (a large weight, so that its gradient dominates G's)."""
    data = labelled_set(tmp_path / "data")
    clf_path = make_classifier(tmp_path / "clf.safetensors", in_channels=1)
    before = load_classifier(clf_path).net.state_dict()
    args = ["--cond", "1", "--plugin", "spinegan", "--classifier", str(clf_path), "--domain-weight", "5"]
    result, spy = _train(tiny_args(tmp_path / "runs", data, *args, kimg=0.008, tick=0.008, snap=100))

    clf = spy.context.extras[EXTRAS_KEY].term.classifier
    after = clf.net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not clf.net.training and not any(p.requires_grad for p in clf.net.parameters())
    optimised = {
        id(p) for opt in (spy.context.G_opt, spy.context.D_opt) for g in opt.param_groups for p in g["params"]
    }
    assert optimised and not any(id(p) in optimised for p in clf.net.parameters())
    stats = (Path(result.run_dir) / "stats.jsonl").read_text()
    assert '"Loss/spinegan/domain"' in stats and '"Domain/agreement"' in stats
    info = json.loads((Path(result.run_dir) / INFO_FILE).read_text())
    assert info["domain_weight"] == 5 and info["classifier"]["class_names"] == list(NAMES)


# ------------------------------------------------------------------------ refusals before the run folder


def _refused(tmp_path: Path, data: Path, *extra: str) -> str:
    outdir = tmp_path / "runs"
    with pytest.raises(click.UsageError) as err:
        cli.main(tiny_args(outdir, data, "--plugin", "spinegan", *extra), standalone_mode=False)
    assert not outdir.exists(), "a refused run must leave no run folder behind"
    return str(err.value)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unconditional", "needs a conditional run"),
        ("class_count", "has 3 classes"),
        ("class_names", "are not the dataset's"),
        ("class_order", "are not the dataset's"),
        ("count_without_names", "but the dataset's labels have 2"),
        ("no_classifier", "needs --classifier"),
        ("negative_weight", "--domain-weight must be"),
        ("not_a_model", "--classifier"),
        ("pickled_model", "--trust-pickle"),
    ],
)
def test_mismatched_runs_are_refused_before_a_run_folder_exists(tmp_path, case, needle):
    data = labelled_set(tmp_path / "data", None if case == "count_without_names" else NAMES)
    clf = {
        "class_count": lambda p: make_classifier(p, ("normal", "abnormal", "other"), in_channels=1),
        "class_names": lambda p: make_classifier(p, ("healthy", "lesion"), in_channels=1),
        "class_order": lambda p: make_classifier(p, ("abnormal", "normal"), in_channels=1),
        "count_without_names": lambda p: make_classifier(p, ("a", "b", "c"), in_channels=1),
    }.get(case, lambda p: make_classifier(p, in_channels=1))(tmp_path / "clf.safetensors")
    if case == "not_a_model":
        clf.write_bytes(b"this is not a model\n" * 10)
    if case == "pickled_model":  # what the original project saved: a whole pickled nn.Module
        clf = tmp_path / "whole.pt"
        torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Sigmoid()), clf)
    extra = ["--cond", "0" if case == "unconditional" else "1"]
    if case != "no_classifier":
        extra += ["--classifier", str(clf)]
    if case == "negative_weight":
        extra += ["--domain-weight", "-0.1"]
    assert needle in _refused(tmp_path, data, *extra)


def test_train_py_prints_one_error_line_and_exits_2(tmp_path):
    data = labelled_set(tmp_path / "data")
    clf = make_classifier(tmp_path / "clf.safetensors", ("healthy", "lesion"), in_channels=1)
    outdir = tmp_path / "runs"
    args = tiny_args(outdir, data, "--cond", "1", "--plugin", "spinegan", "--classifier", str(clf))
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "['healthy', 'lesion'] are not the dataset's ['normal', 'abnormal']" in proc.stderr
    assert not outdir.exists()


def test_spinegan_is_declared_as_an_entry_point():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; we support 3.10)
    section = text.split('[project.entry-points."stylegan2_ada.plugins"]', 1)[1].split("\n[", 1)[0]
    assert 'spinegan = "plugins.spinegan"' in section.splitlines()


def _tick_worker(rank: int, port: int, clf_path: str, out: str) -> None:
    """One of two gloo processes: its own fakes through the plugin, then the tick's statistics."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    info = DistInfo(rank=rank, world_size=2, local_rank=rank)
    init_distributed(info, "cpu")
    pm = create_plugin_manager(["spinegan"])
    ctx = context(Path(clf_path))
    ctx.rank, ctx.world_size = rank, 2
    pm.hook.training_setup(context=ctx)
    g = torch.Generator().manual_seed(100 + rank)  # different fakes on each rank
    img = torch.rand(3 + rank, 1, 16, 16, generator=g) * 2 - 1
    classes = torch.arange(3 + rank) % 2
    call_loss_terms(pm, "Gmain", ctx, gmain(img, classes))
    logits = ctx.extras[EXTRAS_KEY].term.classifier.logits(img).detach()
    stats = collect_tick_statistics(pm, ctx)
    shutdown_distributed(info)
    torch.save({"logits": logits, "classes": classes, "stats": stats}, os.path.join(out, f"tick{rank}.pt"))


def test_tick_statistics_are_pooled_over_processes(tmp_path):
    """Two processes with 3 and 4 fakes: both report the mean over all 7 (loss and agreement)."""
    clf_path = make_classifier(tmp_path / "clf.safetensors", in_channels=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_tick_worker, args=(port, str(clf_path), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"tick{r}.pt", weights_only=True) for r in range(2)]
    logits = torch.cat([r["logits"] for r in ranks])[:, 0].double()  # [7]
    y = torch.cat([r["classes"] for r in ranks]).double()
    loss = y * torch.log1p(torch.exp(-logits)) + (1 - y) * torch.log1p(torch.exp(logits))
    agree = ((logits > 0).double() == y).double().mean()
    for r in ranks:
        assert r["stats"]["Domain/loss"] == pytest.approx(float(loss.mean()), rel=1e-5)
        assert r["stats"]["Domain/agreement"] == pytest.approx(float(agree))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_mixed_precision_term_and_gradient_match_float32(tmp_path):
    clf_path = make_classifier(tmp_path / "clf.safetensors")
    pm = create_plugin_manager(["spinegan"])
    device = torch.device("cuda")
    grads, values = {}, {}
    for fp32 in (True, False):
        ctx = context(clf_path)
        ctx.device, ctx.options["fp32"] = device, fp32
        pm.hook.training_setup(context=ctx)
        torch.manual_seed(0)
        img = (torch.rand(8, 1, 16, 16, device=device) * 2 - 1).requires_grad_(True)
        term = call_loss_terms(pm, "Gmain", ctx, gmain(img, torch.arange(8, device=device) % 2))
        term = term["Loss/spinegan/domain"]
        assert term.dtype == torch.float32
        (grads[fp32],) = torch.autograd.grad(term, img)
        values[fp32] = float(term)
    assert values[False] == pytest.approx(values[True], rel=2e-2)
    cos = F.cosine_similarity(grads[False].flatten(), grads[True].flatten(), dim=0)
    assert float(cos) > 0.98 and grads[False].abs().sum() > 0
