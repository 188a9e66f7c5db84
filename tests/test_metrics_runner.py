"""compute_metrics on tiny generators and datasets: the real-feature cache and its key, conditional (per
class, class-balanced) and single-class evaluation, reproducible generated sets, and the JSON lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_g_kwargs
from PIL import Image
from sg2_training_support.data import make_shapes

from stylegan2_ada.dataset import open_image_dataset
from stylegan2_ada.metrics import MetricError, append_metric_jsonl, compute_metrics, parse_metric_list
from stylegan2_ada.metrics.extractors import InputSpec, ModuleExtractor
from stylegan2_ada.metrics.features import FakeLabels, dataset_fingerprint, generated_features, real_features
from stylegan2_ada.networks import Generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Pool(torch.nn.Module):
    """A tiny, fixed feature network: the means of a 4 x 4 grid of image cells -> 16 features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _extractor(tag: str = "a") -> ModuleExtractor:
    return ModuleExtractor(
        _Pool(),
        InputSpec(input_channels=1, input_range="0-1"),
        name="pool",
        kind="test",
        path="<memory>",
        file_sha256=tag,
        device=torch.device("cpu"),
    )


def _generator(c_dim: int = 2) -> Generator:
    torch.manual_seed(0)
    return Generator(**tiny_g_kwargs(16, c_dim, 1)).eval()


def _quiet(message: str) -> None:
    pass


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_shapes(tmp_path / "shapes", n=20, res=16)


def test_parse_metric_list() -> None:
    assert parse_metric_list("fid50k_full, kid50k_full,fid50k_full") == ["fid50k_full", "kid50k_full"]
    assert parse_metric_list("none") == []
    with pytest.raises(MetricError, match="unknown metric fid1k.*known: fid50k_full"):
        parse_metric_list("fid1k")


def test_real_features_are_cached_and_a_changed_dataset_is_recomputed(shapes: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    extractor = _extractor()
    ds = open_image_dataset(shapes, use_labels=True)
    first, meta = real_features(ds, extractor, cache_dir=cache, progress=False, log=_quiet)
    assert not meta["cached"] and Path(meta["cache_file"]).is_file()
    again, meta2 = real_features(ds, extractor, cache_dir=cache, progress=False, log=_quiet)
    assert meta2["cached"] and meta2["cache_file"] == meta["cache_file"]
    torch.testing.assert_close(again.features, first.features)
    torch.testing.assert_close(again.labels, first.labels)

    # Same size, new pixels and a new modification time: never served the old features.
    img = shapes / "img0003.png"
    Image.fromarray(np.full((16, 16), 77, np.uint8), "L").save(img)
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed, meta3 = real_features(
        open_image_dataset(shapes, use_labels=True), extractor, cache_dir=cache, progress=False, log=_quiet
    )
    assert not meta3["cached"] and meta3["cache_file"] != meta["cache_file"]
    assert not torch.equal(changed.features[3], first.features[3])
    torch.testing.assert_close(changed.features[4:], first.features[4:])

    # Another extractor, or other dataset options, get their own entries.
    _, meta4 = real_features(ds, _extractor("b"), cache_dir=cache, progress=False, log=_quiet)
    _, meta5 = real_features(
        open_image_dataset(shapes, use_labels=True, xflip=True),
        extractor,
        cache_dir=cache,
        progress=False,
        log=_quiet,
    )
    assert len({meta["cache_file"], meta3["cache_file"], meta4["cache_file"], meta5["cache_file"]}) == 4
    assert not meta4["cached"] and not meta5["cached"]


def test_a_damaged_cache_file_is_recomputed(shapes: Path, tmp_path: Path) -> None:
    ds = open_image_dataset(shapes)
    first, meta = real_features(ds, _extractor(), cache_dir=tmp_path, progress=False, log=_quiet)
    Path(meta["cache_file"]).write_bytes(b"garbage")
    again, meta2 = real_features(ds, _extractor(), cache_dir=tmp_path, progress=False, log=_quiet)
    assert not meta2["cached"]
    torch.testing.assert_close(again.features, first.features)


def test_zip_fingerprint_follows_member_contents(shapes: Path, tmp_path: Path) -> None:
    import zipfile

    def pack(path: Path, replace: bytes | None = None) -> Path:
        with zipfile.ZipFile(path, "w") as z:
            for f in sorted(shapes.iterdir()):
                data = f.read_bytes()
                if replace is not None and f.name == "img0000.png":
                    data = replace
                z.writestr(f.name, data)
        return path

    a = dataset_fingerprint(open_image_dataset(pack(tmp_path / "a.zip")))
    b = dataset_fingerprint(open_image_dataset(pack(tmp_path / "b.zip")))  # a copy: same content
    other = (shapes / "img0002.png").read_bytes()
    c = dataset_fingerprint(open_image_dataset(pack(tmp_path / "c.zip", replace=other)))
    assert a == b and a != c


def test_datasets_without_a_file_listing_are_fingerprinted_by_content() -> None:
    class Items:
        def __init__(self, value: int) -> None:
            self.items = [(np.full((1, 4, 4), i, np.uint8), np.zeros(0, np.float32)) for i in range(3)]
            self.items[1] = (np.full((1, 4, 4), value, np.uint8), np.zeros(0, np.float32))

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int):
            return self.items[i]

    assert dataset_fingerprint(Items(1)) == dataset_fingerprint(Items(1)) != dataset_fingerprint(Items(9))


def test_generated_features_do_not_depend_on_the_batch_size() -> None:
    G, extractor = _generator(), _extractor()
    labels = FakeLabels(2, balanced_classes=(0, 1))
    a = generated_features(G, extractor, num=10, labels=labels, batch_size=3, progress=False)
    b = generated_features(G, extractor, num=10, labels=labels, batch_size=10, progress=False)
    torch.testing.assert_close(a.features, b.features, rtol=1e-4, atol=1e-5)
    assert a.classes().tolist() == [0, 1] * 5
    c = generated_features(G, extractor, num=10, labels=labels, seed=1, progress=False)
    assert not torch.allclose(a.features, c.features)


def test_conditional_metrics_per_class_and_class_balanced(shapes: Path, tmp_path: Path) -> None:
    G, ds = _generator(), open_image_dataset(shapes, use_labels=True)
    out = compute_metrics(
        ["fid50k_full", "kid50k_full", "pr50k3_full"],
        G,
        ds,
        _extractor(),
        num_gen=24,
        device="cpu",
        cache_dir=tmp_path,
        progress=False,
        log=_quiet,
    )
    fid = out["fid50k_full"]["results"]
    assert set(fid) == {"fid50k_full", "fid50k_full_class0", "fid50k_full_class1"}
    assert fid["fid50k_full"] == pytest.approx((fid["fid50k_full_class0"] + fid["fid50k_full_class1"]) / 2)
    pr = out["pr50k3_full"]["results"]
    assert {"pr50k3_full_precision", "pr50k3_full_recall", "pr50k3_full_recall_class1"} <= set(pr)
    assert all(0 <= v <= 1 for v in pr.values())
    assert out["kid50k_full"]["num_gen"] == 24 and out["fid50k_full"]["num_real"] == 20
    assert out["fid50k_full"]["classes"] == [0, 1] and out["fid50k_full"]["real_features"]["cached"] is False
    again = compute_metrics(
        ["fid50k_full"],
        G,
        ds,
        _extractor(),
        num_gen=24,
        device="cpu",
        cache_dir=tmp_path,
        progress=False,
        log=_quiet,
    )
    assert again["fid50k_full"]["results"] == fid  # same latents, noise and cached reals
    assert again["fid50k_full"]["real_features"]["cached"] is True


def test_one_class_and_an_unconditional_generator(shapes: Path) -> None:
    ds = open_image_dataset(shapes, use_labels=True)
    one = compute_metrics(
        ["fid50k_full"],
        _generator(),
        ds,
        _extractor(),
        num_gen=12,
        class_idx=1,
        device="cpu",
        cache_dir=None,
        progress=False,
        log=_quiet,
    )
    assert set(one["fid50k_full"]["results"]) == {"fid50k_full"}
    assert one["fid50k_full"]["class"] == 1 and one["fid50k_full"]["num_real"] == 10
    uncond = compute_metrics(
        ["kid50k_full"],
        _generator(0),
        open_image_dataset(shapes),
        _extractor(),
        num_gen=12,
        device="cpu",
        cache_dir=None,
        progress=False,
        log=_quiet,
    )
    assert set(uncond["kid50k_full"]["results"]) == {"kid50k_full"}
    with pytest.raises(MetricError, match="unconditional"):
        compute_metrics(
            ["fid50k_full"],
            _generator(0),
            ds,
            _extractor(),
            num_gen=12,
            class_idx=0,
            device="cpu",
            progress=False,
            log=_quiet,
        )
    with pytest.raises(MetricError, match="class 5 has no images"):
        compute_metrics(
            ["fid50k_full"],
            _generator(),
            ds,
            _extractor(),
            num_gen=12,
            class_idx=5,
            device="cpu",
            progress=False,
            log=_quiet,
        )


def test_clear_errors_for_mismatched_data_and_too_few_images(shapes: Path, tmp_path: Path) -> None:
    ds = open_image_dataset(shapes, use_labels=True)
    with pytest.raises(MetricError, match="needs the labelled dataset"):
        compute_metrics(
            ["fid50k_full"],
            _generator(),
            open_image_dataset(shapes),
            _extractor(),
            num_gen=8,
            device="cpu",
            progress=False,
            log=_quiet,
        )
    with pytest.raises(MetricError, match=r"\[1, 32, 32\]"):
        compute_metrics(
            ["fid50k_full"],
            Generator(**tiny_g_kwargs(32, 2, 1)),
            ds,
            _extractor(),
            num_gen=8,
            device="cpu",
            progress=False,
            log=_quiet,
        )
    with pytest.raises(MetricError, match="pr50k3_full: class 0: .*at least 4 fake"):
        compute_metrics(
            ["pr50k3_full"],
            _generator(),
            ds,
            _extractor(),
            num_gen=6,
            device="cpu",
            progress=False,
            log=_quiet,
        )


def test_append_metric_jsonl_adds_whole_lines(tmp_path: Path) -> None:
    result = {"results": {"fid50k_full": 1.5}, "metric": "fid50k_full", "total_time": 2.0}
    path = append_metric_jsonl(
        tmp_path, "fid50k_full", result, "/x/network-snapshot-000040.safetensors", kimg=40.0
    )
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a file whose last line lost its newline
    append_metric_jsonl(tmp_path, "fid50k_full", {**result, "results": {"fid50k_full": 1.2}}, None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["results"]["fid50k_full"] for r in lines] == [1.5, 1.2]
    assert lines[0]["snapshot_pkl"] == "network-snapshot-000040.safetensors" and lines[0]["kimg"] == 40.0
    assert {"timestamp", "metric", "total_time"} <= set(lines[1])


def _distributed_worker(rank: int, port: int, data: str, cache: str, out: str) -> None:
    import torch.distributed as tdist

    from stylegan2_ada.metrics import features

    torch.set_num_threads(1)
    features.BLOCK = 4  # several blocks per rank with a tiny dataset
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = compute_metrics(
            ["fid50k_full", "pr50k3_full"],
            _generator(),
            open_image_dataset(data, use_labels=True),
            _extractor(),
            num_gen=18,
            device="cpu",
            cache_dir=cache,
            rank=rank,
            world_size=2,
            progress=False,
            log=_quiet,
        )
    finally:
        tdist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.skipif(
    "fork" not in torch.multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_two_processes_give_the_single_process_result(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    import socket

    import torch.multiprocessing as mp

    from stylegan2_ada.metrics import features

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children inherit the imported modules instead of importing torch again (seconds each)
    mp.start_processes(
        _distributed_worker,
        args=(port, str(shapes), str(tmp_path / "cache"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert json.loads((tmp_path / "rank1.json").read_text()) == {}
    monkeypatch.setattr(features, "BLOCK", 4)
    single = compute_metrics(
        ["fid50k_full", "pr50k3_full"],
        _generator(),
        open_image_dataset(shapes, use_labels=True),
        _extractor(),
        num_gen=18,
        device="cpu",
        cache_dir=None,
        progress=False,
        log=_quiet,
    )
    for name in single:
        assert rank0[name]["results"] == pytest.approx(single[name]["results"], rel=1e-6)
        assert rank0[name]["num_gpus"] == 2
    assert Path(rank0["fid50k_full"]["real_features"]["cache_file"]).is_file()  # written by rank 0
