"""Native checkpoints (safetensors + JSON) and the one loader for native and upstream .pkl files."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import socket
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from checkpoint_helpers import PICKLE_LOOKING_HEADER_LENGTHS, header_length, save_with_header_length
from conftest import FIXTURE_NPZ, FIXTURE_PKL, needs_fixture  # noqa: E402
from torch import nn

from stylegan2_ada import checkpoint as ckpt
from stylegan2_ada import legacy_pickle as lp

networks_mod = pytest.importorskip(
    "stylegan2_ada.networks", reason="stylegan2_ada/networks.py not written yet"
)
augment_mod = pytest.importorskip("stylegan2_ada.augment", reason="stylegan2_ada/augment.py not written yet")


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and float buffer random values, so each one matters in comparisons."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return module


@pytest.fixture
def tiny_networks() -> dict[str, nn.Module]:
    g_kwargs = dict(
        z_dim=8,
        c_dim=3,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    G = _perturb(networks_mod.Generator(**g_kwargs), 1)
    G_ema = _perturb(networks_mod.Generator(**g_kwargs), 2)
    D = _perturb(
        networks_mod.Discriminator(
            c_dim=3,
            img_resolution=8,
            img_channels=3,
            channel_base=64,
            channel_max=8,
            block_kwargs={"freeze_layers": 1},
        ),
        3,
    )
    pipe = augment_mod.AugmentPipe(xflip=1, rotate90=1, brightness=0.5)
    pipe.p.copy_(torch.tensor(0.375))
    return {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": pipe}


def _raw(tensor: torch.Tensor) -> bytes:
    """The tensor's bytes, for bitwise comparison (NaN-safe; -0.0 and 0.0 differ)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_same_module(a: nn.Module, b: nn.Module) -> None:
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert sa[key].shape == sb[key].shape, key
        assert _raw(sa[key]) == _raw(sb[key]), key
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
    assert a.init_kwargs == b.init_kwargs


def test_native_round_trip_is_exact(tmp_path, tiny_networks):
    tensors = {
        "optimizer/G/step": torch.tensor(1234, dtype=torch.int64),
        "optimizer/G/exp_avg": torch.randn(5, 7),
        "rng/torch": torch.randint(0, 255, (32,), dtype=torch.uint8),
        "half": torch.randn(3).half(),
        "flags": torch.tensor([True, False]),
        "special": torch.tensor([float("nan"), float("inf"), -0.0, 1e-45]),
        "transposed": torch.randn(4, 6).t(),  # a non-contiguous view
    }
    metadata = {
        "cur_nimg": 123456,
        "cur_tick": 7,
        "class_names": ["normal", "scoliosis", "fracture"],
        "options": {"gamma": 0.8192, "augpipe": "bgc", "resume": None, "nested": [1, 2.5, "x", True]},
    }
    path = tmp_path / "network-snapshot-000123.safetensors"
    ckpt.save_checkpoint(path, networks=tiny_networks, tensors=tensors, metadata=metadata)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary files left behind

    rng_state = torch.get_rng_state()
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), rng_state)  # loading does not disturb the caller's RNG
    assert loaded.format == "native"
    assert loaded.path == str(path)
    assert list(loaded.networks) == list(tiny_networks)
    for name, module in tiny_networks.items():
        _assert_same_module(module, loaded.networks[name])
        assert not loaded.networks[name].training
        assert not any(p.requires_grad for p in loaded.networks[name].parameters())
    assert loaded.metadata == metadata
    assert list(loaded.tensors) == list(tensors)
    for name, tensor in tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype and loaded.tensors[name].shape == tensor.shape
        assert _raw(loaded.tensors[name]) == _raw(tensor), name
    assert float(loaded.networks["augment_pipe"].p) == 0.375
    assert loaded.provenance["torch"] == torch.__version__ and loaded.provenance["numpy"] == np.__version__
    assert set(loaded.provenance) == {"created", "stylegan2_ada", "torch", "numpy", "python"}

    # Nothing in the header names this machine or its user (the file may be shared).
    header_text = path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")].decode()
    assert socket.gethostname() not in header_text and str(tmp_path) not in header_text

    # The header really is safetensors + one JSON document, readable without our code.
    with safetensors.safe_open(str(path), framework="pt") as file:
        document = json.loads(file.metadata()[ckpt.METADATA_KEY])
        keys = set(file.keys())
    assert document["format"] == ckpt.FORMAT_NAME and document["format_version"] == ckpt.FORMAT_VERSION
    assert document["networks"]["G"] == {
        "class_name": "Generator",
        "init_kwargs": tiny_networks["G"].init_kwargs,
    }
    assert "G/synthesis.b4.const" in keys and "extra/optimizer/G/exp_avg" in keys

    # Same outputs from the rebuilt generator (const noise).
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    G, G2 = tiny_networks["G_ema"].eval(), loaded.networks["G_ema"]
    assert torch.equal(G(z, c, noise_mode="const"), G2(z, c, noise_mode="const"))
    assert ckpt.load_network(path).keys() == tiny_networks.keys()


def test_save_is_atomic_and_failures_leave_the_old_file(tmp_path, tiny_networks, monkeypatch):
    path = tmp_path / "snap.safetensors"
    ckpt.save_checkpoint(path, networks={"G": tiny_networks["G"]}, metadata={"version": 1})
    before = path.read_bytes()

    # Metadata that is not JSON: refused before anything is written.
    with pytest.raises(ckpt.CheckpointError, match="JSON"):
        ckpt.save_checkpoint(path, networks={"G": tiny_networks["G"]}, metadata={"bad": object()})
    # A crash half-way through writing: the old file is intact and the partial temp file is removed.
    real_save = safetensors.torch.save_file

    def crash(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as file:
            file.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(ckpt.CheckpointError, match="No space left"):
        ckpt.save_checkpoint(path, networks={"G": tiny_networks["G_ema"]}, metadata={"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    assert ckpt.load_checkpoint(path).metadata == {"version": 1}

    # A successful overwrite replaces it.
    ckpt.save_checkpoint(path, networks={"G": tiny_networks["G_ema"]}, metadata={"version": 3})
    assert ckpt.load_checkpoint(path).metadata == {"version": 3}
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_save_refuses_what_could_not_be_rebuilt(tmp_path, tiny_networks):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ckpt.CheckpointError, match="Linear"):
        ckpt.save_checkpoint(path, networks={"G": nn.Linear(2, 2)})
    with pytest.raises(ckpt.CheckpointError, match="invalid network name"):
        ckpt.save_checkpoint(path, networks={"a/b": tiny_networks["G"]})
    with pytest.raises(ckpt.CheckpointError, match="invalid network name"):
        ckpt.save_checkpoint(path, networks={"extra": tiny_networks["G"]})
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.save_checkpoint(tmp_path / "missing" / "x.safetensors", networks={"G": tiny_networks["G"]})
    assert not path.exists()


def test_format_is_detected_by_content_not_extension(tmp_path, tiny_networks):
    native_named_pkl = tmp_path / "looks-like.pkl"
    ckpt.save_checkpoint(native_named_pkl, networks={"G": tiny_networks["G"]})
    assert ckpt.detect_format(native_named_pkl) == "native"
    assert ckpt.load_checkpoint(native_named_pkl).format == "native"


@needs_fixture
def test_upstream_pickle_is_detected_by_content_not_extension(tmp_path):
    pkl_named_safetensors = tmp_path / "looks-like.safetensors"
    shutil.copyfile(FIXTURE_PKL, pkl_named_safetensors)
    assert ckpt.detect_format(pkl_named_safetensors) == "upstream-pkl"
    assert ckpt.load_checkpoint(pkl_named_safetensors).format == "upstream-pkl"


def _write_native(path: Path, tensors: dict, document: dict | None) -> None:
    """A safetensors file with ``document`` as our metadata and a matching content hash (as a careless
    or hostile writer that knows the format would produce), so the checks after the hash are reached."""
    if document is not None and ckpt.HASH_KEY in document:
        document = dict(document, **{ckpt.HASH_KEY: ckpt.content_sha256(tensors, document)})
    header = None if document is None else {ckpt.METADATA_KEY: json.dumps(document)}
    safetensors.torch.save_file(tensors, str(path), metadata=header)


def test_load_errors_name_the_file_and_the_problem(tmp_path, tiny_networks):
    good = tmp_path / "good.safetensors"
    ckpt.save_checkpoint(good, networks={"G": tiny_networks["G"]})
    data = good.read_bytes()
    document = json.loads(safetensors.safe_open(str(good), "pt").metadata()[ckpt.METADATA_KEY])
    g_tensors = safetensors.torch.load_file(str(good))

    cases: list[tuple[Path, str]] = []

    def case(name: str, content: bytes | None, expected: str) -> None:
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        cases.append((path, expected))

    case("missing.safetensors", None, "not found")
    case("empty.safetensors", b"", "empty")
    case("short.bin", b"\x01\x02", "too short")
    case("truncated.safetensors", data[: len(data) // 2], "truncated")
    case("truncated-header.safetensors", data[:40], "truncated")
    case("random.bin", os.urandom(4096).replace(b"\x80", b"\x00"), "unrecognised")
    zbuf = tmp_path / "z.zip"
    with zipfile.ZipFile(zbuf, "w") as archive:
        archive.writestr("a.txt", "x")
    case("archive.pt", zbuf.read_bytes(), "zip archive")

    plain = tmp_path / "plain.safetensors"
    _write_native(plain, {"w": torch.zeros(2)}, None)
    cases.append((plain, "without our"))
    evil_doc = copy.deepcopy(document)
    evil_doc["networks"]["G"]["class_name"] = "os.system"
    evil = tmp_path / "evil-class.safetensors"
    _write_native(evil, g_tensors, evil_doc)
    cases.append((evil, "not one we can rebuild"))
    unknown_kwarg = copy.deepcopy(document)
    unknown_kwarg["networks"]["G"]["init_kwargs"]["exec_this"] = "import os"
    bad_kwargs = tmp_path / "bad-kwargs.safetensors"
    _write_native(bad_kwargs, g_tensors, unknown_kwarg)
    cases.append((bad_kwargs, "unknown constructor argument(s) exec_this"))
    newer = dict(document, format_version=ckpt.FORMAT_VERSION + 1)
    newer_path = tmp_path / "newer.safetensors"
    _write_native(newer_path, g_tensors, newer)
    cases.append((newer_path, "format version"))
    stray = tmp_path / "stray.safetensors"
    _write_native(stray, dict(g_tensors, **{"H/w": torch.zeros(1)}), document)
    cases.append((stray, "belongs to no network"))
    missing_weight = tmp_path / "missing-weight.safetensors"
    _write_native(
        missing_weight, {k: v for k, v in g_tensors.items() if k != "G/synthesis.b4.const"}, document
    )
    cases.append((missing_weight, "do not fit"))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    cases.append((folder, "folder"))

    for path, expected in cases:
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load_checkpoint(path)
        assert expected in str(info.value), (path.name, str(info.value))
        assert str(path) in str(info.value), (path.name, str(info.value))
    with pytest.raises(FileNotFoundError):
        ckpt.load_checkpoint(tmp_path / "missing.safetensors")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    payload = os.urandom(3 * 1024 + 5)
    path.write_bytes(payload)
    assert ckpt.sha256_file(path, chunk_size=1000) == hashlib.sha256(payload).hexdigest()


@needs_fixture
def test_upstream_pkl_loads_into_our_classes_and_reproduces_reference_outputs():
    loaded = ckpt.load_checkpoint(FIXTURE_PKL)
    ref = np.load(FIXTURE_NPZ)
    assert loaded.format == "upstream-pkl"
    assert list(loaded.networks) == ["G", "D", "G_ema", "augment_pipe"]
    assert isinstance(loaded.networks["G_ema"], networks_mod.Generator)
    assert isinstance(loaded.networks["D"], networks_mod.Discriminator)
    assert isinstance(loaded.networks["augment_pipe"], augment_mod.AugmentPipe)
    assert loaded.metadata["augment_p"] == 0.25
    assert loaded.metadata["training_set_kwargs"]["use_labels"] is True
    assert loaded.tensors == {}
    for key in ("G", "G_ema", "D"):
        state = loaded.networks[key].state_dict()
        for name in (n for n in ref.files if n.startswith(key + "/")):
            np.testing.assert_array_equal(state[name[len(key) + 1 :]].numpy(), ref[name])
    z, c = torch.from_numpy(ref["in/z"]), torch.from_numpy(ref["in/c"])
    G_ema, D = loaded.networks["G_ema"], loaded.networks["D"]
    with torch.no_grad():
        img = G_ema(z, c, truncation_psi=0.7, noise_mode="const")
        logits = D(torch.from_numpy(ref["in/real"]), c)
    np.testing.assert_allclose(img.numpy(), ref["out/img_const_psi0.7"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits.numpy(), ref["out/D_logits_real"], atol=1e-4, rtol=0)


@needs_fixture
def test_upstream_pkl_converts_to_native_exactly(tmp_path):
    upstream = ckpt.load_checkpoint(FIXTURE_PKL)
    path = tmp_path / "converted.safetensors"
    ckpt.save_checkpoint(path, networks=upstream.networks, metadata=upstream.metadata)
    native = ckpt.load_checkpoint(path)
    assert native.metadata == upstream.metadata
    for name in upstream.networks:
        _assert_same_module(upstream.networks[name], native.networks[name])


@needs_fixture
def test_upstream_pkl_with_unknown_constructor_argument_is_refused(tmp_path, monkeypatch):
    """A snapshot from a fork with extra Generator options: refused with the option named."""
    snapshot = lp.read_upstream_snapshot(FIXTURE_PKL)
    record = snapshot.networks["G_ema"]
    record.state["_init_kwargs"]["fancy_new_option"] = 3
    monkeypatch.setattr(lp, "read_upstream_snapshot", lambda path: snapshot)
    with pytest.raises(ckpt.CheckpointError, match="fancy_new_option"):
        ckpt.load_checkpoint(FIXTURE_PKL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_to_cuda(tmp_path, tiny_networks):
    path = tmp_path / "snap.safetensors"
    ckpt.save_checkpoint(path, networks=tiny_networks, tensors={"t": torch.ones(2)})
    loaded = ckpt.load_checkpoint(path, device="cuda")
    for module in loaded.networks.values():
        assert all(t.device.type == "cuda" for t in module.state_dict().values())
    assert loaded.tensors["t"].device.type == "cuda"


# --------------------------------------------------------------------------------------------------
# Issue 8: format detection that a header length cannot fool; the content hash.


@pytest.mark.parametrize("length", PICKLE_LOOKING_HEADER_LENGTHS)
def test_header_length_that_starts_like_a_pickle_is_still_native(tmp_path, tiny_networks, length):
    """Issue 8 defect 1, deterministically: a header of 66176 (0x010280) bytes made the file start
    with 0x80 0x02, which was taken for a pickle ('not a readable pickle ... KeyError(1)')."""
    path = save_with_header_length(
        tmp_path / "network-snapshot-000000.056.safetensors", length, networks=tiny_networks
    )
    assert header_length(path) == length
    assert path.read_bytes()[0] == 0x80 and 2 <= path.read_bytes()[1] <= 5
    assert ckpt.detect_format(path) == "native"
    loaded = ckpt.load_checkpoint(path)
    for name, module in tiny_networks.items():
        _assert_same_module(module, loaded.networks[name])


def test_pickles_are_detected_by_signature_and_stop_byte(tmp_path):
    whole = tmp_path / "whole.pkl"
    whole.write_bytes(pickle.dumps({"G": None}, protocol=4))
    assert ckpt.detect_format(whole) == "upstream-pkl"
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps({"G": list(range(100))}, protocol=4)[:-7])
    with pytest.raises(ckpt.CheckpointError, match="STOP") as info:
        ckpt.load_checkpoint(cut)
    assert str(cut) in str(info.value)


def _header_and_data(path: Path) -> tuple[int, bytes]:
    data = path.read_bytes()
    return 8 + header_length(path), data


def test_flipped_tensor_bytes_are_refused_with_the_file_named(tmp_path, tiny_networks):
    path = tmp_path / "snap.safetensors"
    ckpt.save_checkpoint(path, networks=tiny_networks, tensors={"t": torch.arange(10.0)})
    start, data = _header_and_data(path)
    for offset in (start, start + (len(data) - start) // 2, len(data) - 1):
        damaged = tmp_path / f"damaged-{offset}.safetensors"
        damaged.write_bytes(data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :])
        with pytest.raises(ckpt.CheckpointError, match="content hash mismatch") as info:
            ckpt.load_checkpoint(damaged)
        assert str(damaged) in str(info.value)


def test_changed_metadata_that_is_still_valid_json_is_refused(tmp_path, tiny_networks):
    path = tmp_path / "snap.safetensors"
    ckpt.save_checkpoint(
        path, networks={"G": tiny_networks["G"]}, metadata={"class_names": ["normal", "abnormal"]}
    )
    data = path.read_bytes()
    assert data.count(b"abnormal") == 1
    path.write_bytes(data.replace(b"abnormal", b"abnormam"))
    with pytest.raises(ckpt.CheckpointError, match="content hash mismatch"):
        ckpt.load_checkpoint(path)


def test_hash_covers_tensor_names_dtypes_and_shapes():
    doc = {"format": ckpt.FORMAT_NAME, "metadata": {}}
    base = ckpt.content_sha256({"a": torch.zeros(4), "b": torch.ones(2)}, doc)
    assert base == ckpt.content_sha256({"b": torch.ones(2), "a": torch.zeros(4)}, doc)  # order-free
    assert base == ckpt.content_sha256({"a": torch.zeros(4), "b": torch.ones(2)}, {**doc, ckpt.HASH_KEY: "x"})
    for other in (
        {"c": torch.zeros(4), "b": torch.ones(2)},  # renamed
        {"a": torch.zeros(4, dtype=torch.int32), "b": torch.ones(2)},  # same bytes, other dtype
        {"a": torch.zeros(2, 2), "b": torch.ones(2)},  # same bytes, other shape
        {"a": torch.zeros(4), "b": torch.tensor([1.0, -1.0])},  # other bytes
    ):
        assert ckpt.content_sha256(other, doc) != base
    assert (
        ckpt.content_sha256({"a": torch.zeros(4), "b": torch.ones(2)}, {**doc, "metadata": {"k": 1}}) != base
    )


def test_format_version_1_files_without_hash_still_load(tmp_path, tiny_networks):
    """Snapshots written before the hash existed (format version 1, with a host name) load unverified."""
    good = tmp_path / "good.safetensors"
    ckpt.save_checkpoint(good, networks={"G": tiny_networks["G"]}, metadata={"cur_nimg": 5})
    document = json.loads(safetensors.safe_open(str(good), "pt").metadata()[ckpt.METADATA_KEY])
    tensors = safetensors.torch.load_file(str(good))
    old = {k: v for k, v in document.items() if k != ckpt.HASH_KEY}
    old["format_version"] = 1
    old["provenance"] = dict(old["provenance"], host="old-workstation")
    v1 = tmp_path / "v1.safetensors"
    _write_native(v1, tensors, old)
    loaded = ckpt.load_checkpoint(v1)
    assert loaded.metadata == {"cur_nimg": 5} and loaded.provenance["host"] == "old-workstation"
    _assert_same_module(tiny_networks["G"], loaded.networks["G"])

    unhashed_v2 = tmp_path / "v2-without-hash.safetensors"
    _write_native(unhashed_v2, tensors, dict(old, format_version=2))
    with pytest.raises(ckpt.CheckpointError, match="content hash .* missing") as info:
        ckpt.load_checkpoint(unhashed_v2)
    assert str(unhashed_v2) in str(info.value)


def test_damaged_headers_and_sizes_give_clear_errors(tmp_path, tiny_networks):
    path = tmp_path / "snap.safetensors"
    ckpt.save_checkpoint(path, networks={"G": tiny_networks["G"]})
    start, data = _header_and_data(path)
    cases = {
        "extended": (data + b"\0" * 3, "3 unexpected bytes"),
        "truncated": (data[:-1], "truncated"),
        "bad-json": (data[:9] + b"\xff" + data[10:], "damaged safetensors header"),
        "length-too-long": (struct.pack("<Q", start - 8 + 1) + data[8:], "damaged safetensors header"),
    }
    for name, (content, expected) in cases.items():
        damaged = tmp_path / f"{name}.safetensors"
        damaged.write_bytes(content)
        with pytest.raises(ckpt.CheckpointError, match=expected) as info:
            ckpt.load_checkpoint(damaged)
        assert str(damaged) in str(info.value)
