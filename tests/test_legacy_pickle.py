"""Safe reading of stylegan2-ada-pytorch ``.pkl`` snapshots (stylegan2_ada.legacy_pickle).

Malicious pickles are built in each test; every payload would write a marker file, and each test
asserts the loader refuses the file AND that the marker does not exist. Control cases show that the
same bytes do run their payload under a plain ``pickle.loads``, so the payloads are live.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FIXTURE_NPZ, FIXTURE_PKL, needs_fixture  # noqa: E402

from stylegan2_ada import legacy_pickle as lp
from stylegan2_ada.checkpoint import load_checkpoint

# ---------------------------------------------------------------------------------------------------
# Helpers: stand-ins for upstream's torch_utils.persistence and dnnlib.util, so that pickles are
# written exactly as upstream writes them (same global names, same structure). Like upstream's own
# loader, this stand-in exec()s module_src: plain pickle.loads of these bytes runs the payload.

_FAKE_PERSISTENCE_SRC = """
import types
def _reconstruct_persistent_obj(meta):
    module = types.ModuleType('_imported_module_test')
    exec(meta['module_src'], module.__dict__)   # what upstream's loader does
    return meta['class_name']
"""


class _Persistent:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, as upstream objects do."""

    def __init__(self, reconstruct: Callable, class_name: str, state: dict, module_src: str = "") -> None:
        self.reconstruct = reconstruct
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


@pytest.fixture
def upstream(monkeypatch):
    """Fake ``torch_utils.persistence`` / ``dnnlib.util`` modules for writing upstream-style pickles."""
    torch_utils = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")
    exec(_FAKE_PERSISTENCE_SRC, persistence.__dict__)
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")
    EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = EasyDict
    dnnlib.util = util
    for name, module in [
        ("torch_utils", torch_utils),
        ("torch_utils.persistence", persistence),
        ("dnnlib", dnnlib),
        ("dnnlib.util", util),
    ]:
        monkeypatch.setitem(sys.modules, name, module)

    def persistent(class_name: str, state: dict, module_src: str = "") -> _Persistent:
        return _Persistent(persistence._reconstruct_persistent_obj, class_name, state, module_src)

    return types.SimpleNamespace(persistent=persistent, EasyDict=EasyDict)


def _module_state(params=None, buffers=None, modules=None, init_kwargs=None, **attrs) -> dict:
    """A ``state`` dict shaped like a pickled upstream module's ``__dict__``."""
    return {
        "training": False,
        "_parameters": collections.OrderedDict(params or {}),
        "_buffers": collections.OrderedDict(buffers or {}),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(modules or {}),
        "_forward_hooks": collections.OrderedDict(),
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
        **attrs,
    }


def _writes_marker(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=3)  # no framing, so raw opcodes can be appended in tests


def _glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _ustr(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _load_bytes(data: bytes) -> Any:
    return lp.restricted_load(io.BytesIO(data))


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: Callable, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


# ---------------------------------------------------------------------------------------------------
# The real fixture.


@needs_fixture
def test_fixture_state_dicts_equal_reference_arrays():
    snapshot = lp.read_upstream_snapshot(FIXTURE_PKL)
    ref = np.load(FIXTURE_NPZ)
    assert set(snapshot.networks) == {"G", "D", "G_ema", "augment_pipe"}
    for key in ("G", "G_ema", "D"):
        state = lp.record_state_dict(snapshot.networks[key])
        expected = [name[len(key) + 1 :] for name in ref.files if name.startswith(key + "/")]
        assert list(state) == expected  # same names, same (upstream state_dict) order
        for name in expected:
            tensor = state[name]
            assert tensor.dtype == torch.float32
            np.testing.assert_array_equal(tensor.numpy(), ref[f"{key}/{name}"], err_msg=f"{key}/{name}")
    # G and G_ema really are different networks in the fixture.
    g, g_ema = (lp.record_state_dict(snapshot.networks[k]) for k in ("G", "G_ema"))
    assert not torch.equal(g["mapping.fc0.weight"], g_ema["mapping.fc0.weight"])


@needs_fixture
def test_fixture_constructor_arguments_and_metadata():
    snapshot = lp.read_upstream_snapshot(FIXTURE_PKL)
    g_kwargs = lp.record_init_kwargs(snapshot.networks["G"])
    assert g_kwargs == dict(
        z_dim=64,
        c_dim=2,
        w_dim=64,
        img_resolution=32,
        img_channels=1,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 512, "channel_max": 64, "num_fp16_res": 0, "conv_clamp": 256},
    )
    assert type(g_kwargs["mapping_kwargs"]) is dict  # EasyDict converted to a plain dict
    assert lp.record_init_kwargs(snapshot.networks["G_ema"]) == g_kwargs
    assert lp.record_init_kwargs(snapshot.networks["D"]) == dict(
        c_dim=2,
        img_resolution=32,
        img_channels=1,
        channel_base=512,
        channel_max=64,
        num_fp16_res=0,
        conv_clamp=256,
        block_kwargs={},
        mapping_kwargs={},
        epilogue_kwargs={"mbstd_group_size": 4},
    )
    pipe_kwargs = lp.record_init_kwargs(snapshot.networks["augment_pipe"])
    assert set(pipe_kwargs) == {
        "xflip",
        "rotate90",
        "xint",
        "scale",
        "rotate",
        "aniso",
        "xfrac",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
        "imgfilter",
        "noise",
        "cutout",
    }
    assert all(v == 1 for v in pipe_kwargs.values())
    pipe_state = lp.record_state_dict(snapshot.networks["augment_pipe"])
    assert list(pipe_state) == ["p", "Hz_geom", "Hz_fbank"]
    assert float(pipe_state["p"]) == 0.25
    assert tuple(pipe_state["Hz_fbank"].shape) == (4, 43)
    assert snapshot.training_set_kwargs == {
        "class_name": "training.dataset.ImageFolderDataset",
        "path": "data.zip",
        "use_labels": True,
        "max_size": None,
        "xflip": False,
        "resolution": 32,
    }


@needs_fixture
def test_fixture_truncated_is_a_clear_error_naming_the_file(tmp_path):
    data = FIXTURE_PKL.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(lp.LegacyPickleError) as info:
            lp.read_upstream_snapshot(path)
        assert str(path) in str(info.value)
        assert not isinstance(info.value, lp.UnsafePickleError)


@needs_fixture
@pytest.mark.parametrize("protocol", [3, 4])
def test_freeze_d_snapshot_with_frozen_layers_as_buffers_loads(upstream, tmp_path, protocol):
    """Freeze-D: frozen D layers are stored as buffers under the same names; the walk handles them.

    Protocol 3 is what Python 3.7 (upstream's environment, official 2021 snapshots) writes by default;
    protocol 4 what later Pythons write.
    """
    snapshot = lp.read_upstream_snapshot(FIXTURE_PKL)
    frozen = {"b32.fromrgb", "b32.conv0"}  # freeze_layers=2: layer 0 (fromrgb) and 1 (conv0) of b32

    def convert(value: Any) -> Any:  # our EasyDict stand-in -> the "upstream" EasyDict
        if isinstance(value, lp.EasyDict):
            return upstream.EasyDict({k: convert(v) for k, v in value.items()})
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    def rewrite(record: lp.PersistentRecord, prefix: str) -> _Persistent:
        state = dict(record.state)
        state["_init_kwargs"] = convert(state["_init_kwargs"])
        params = collections.OrderedDict(
            (k, torch.nn.Parameter(v, requires_grad=False)) for k, v in state["_parameters"].items()
        )
        buffers = collections.OrderedDict(state["_buffers"])
        if prefix.rstrip(".") in frozen:  # upstream keeps weight/bias as buffers for frozen layers
            for name in ("weight", "bias"):
                buffers[name] = params.pop(name).detach()
        state["_parameters"], state["_buffers"] = params, buffers
        state["_modules"] = collections.OrderedDict(
            (k, rewrite(v, f"{prefix}{k}.")) for k, v in state["_modules"].items()
        )
        if prefix == "":
            kwargs = dict(state["_init_kwargs"])
            kwargs["block_kwargs"] = upstream.EasyDict(freeze_layers=2)
            state["_init_kwargs"] = kwargs
        return upstream.persistent(record.class_name, state)

    path = tmp_path / "freezed.pkl"
    path.write_bytes(pickle.dumps({"D": rewrite(snapshot.networks["D"], "")}, protocol=protocol))
    reread = lp.read_upstream_snapshot(path)
    original = lp.record_state_dict(snapshot.networks["D"])
    state = lp.record_state_dict(reread.networks["D"])
    assert sorted(state) == sorted(original)  # same names (buffers now come before parameters)
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert lp.record_init_kwargs(reread.networks["D"])["block_kwargs"] == {"freeze_layers": 2}

    D = load_checkpoint(path).networks["D"]
    buffers = dict(D.named_buffers())
    params = dict(D.named_parameters())
    for layer in frozen:
        assert f"{layer}.weight" in buffers and f"{layer}.weight" not in params
    assert "b32.conv1.weight" in params
    loaded = D.state_dict()
    assert all(torch.equal(loaded[k], original[k]) for k in original)


# ---------------------------------------------------------------------------------------------------
# Upstream-style pickles written in the test.


def test_module_src_is_never_executed_and_data_is_read(upstream, tmp_path):
    marker = tmp_path / "module_src_ran"
    weight = torch.randn(3, 4)
    child = upstream.persistent(
        "FullyConnectedLayer",
        _module_state(
            params={"weight": torch.nn.Parameter(weight), "bias": torch.nn.Parameter(torch.zeros(3))},
            init_kwargs={"bias_init": 1},
            weight_gain=np.float64(0.5),
        ),
        module_src=_writes_marker(marker),
    )
    top = upstream.persistent(
        "Generator",
        _module_state(
            buffers={"avg": torch.arange(3.0), "skipped": None},
            modules={"fc": child, "none": None},
            init_kwargs={"z_dim": 4, "mapping_kwargs": upstream.EasyDict(num_layers=2)},
        ),
        module_src=_writes_marker(marker),
    )
    data = pickle.dumps(
        {"training_set_kwargs": upstream.EasyDict(path="x.zip", use_labels=True), "G": top, "D": None},
        protocol=4,
    )
    path = tmp_path / "snap.pkl"
    path.write_bytes(data)

    snapshot = lp.read_upstream_snapshot(path)
    assert not marker.exists()
    assert list(snapshot.networks) == ["G"]
    assert snapshot.training_set_kwargs == {"path": "x.zip", "use_labels": True}
    record = snapshot.networks["G"]
    assert record.class_name == "Generator" and not hasattr(record, "module_src")
    state = lp.record_state_dict(record)
    assert list(state) == ["avg", "fc.weight", "fc.bias"]
    assert torch.equal(state["fc.weight"], weight) and torch.equal(state["avg"], torch.arange(3.0))
    assert lp.record_init_kwargs(record) == {"z_dim": 4, "mapping_kwargs": {"num_layers": 2}}
    assert record.state["_modules"]["fc"].state["weight_gain"] == 0.5

    # Control: a plain pickle.loads (what upstream does) runs the stored source.
    pickle.loads(data)
    assert marker.exists()


def _payloads(upstream, marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes that would write ``marker``, text the refusal must mention)."""
    code = _writes_marker(marker)
    touch = f"touch {marker}"
    evil_blob = io.BytesIO()
    torch.save(_Reduce(exec, code), evil_blob)  # a torch.save blob whose unpickling runs exec
    tensor_pickle = _dumps(torch.zeros(2))[:-1]  # without STOP
    hooks = collections.OrderedDict([(0, collections.OrderedDict)])  # a "hook" that is an allowed callable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation: upstream snapshots pickle typed storages
        typed_storage = torch.zeros(4).storage()
    return {
        "os.system via reduce": (_dumps(_Reduce(os.system, touch)), f"{os.system.__module__}.system"),
        "os.system global": (
            b"\x80\x02" + _glob("os", "system") + _ustr(touch) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP,
            "os.system",
        ),
        "posix.system": (
            b"\x80\x02"
            + _glob("posix", "system")
            + _ustr(touch)
            + pickle.TUPLE1
            + pickle.REDUCE
            + pickle.STOP,
            "posix.system",
        ),
        "builtins.exec": (_dumps(_Reduce(exec, code)), "builtins.exec"),
        "builtins.eval": (_dumps(_Reduce(eval, code)), "builtins.eval"),
        "subprocess.call": (_dumps(_Reduce(subprocess.call, ["touch", str(marker)])), "subprocess.call"),
        "subprocess.Popen": (_dumps(_Reduce(subprocess.Popen, ["touch", str(marker)])), "subprocess.Popen"),
        "smuggled torch.save payload": (
            _dumps(_Reduce(torch.storage._load_from_bytes, evil_blob.getvalue())),
            "weights_only",
        ),
        "nested persistent object with unknown class": (
            pickle.dumps(
                {
                    "G": upstream.persistent(
                        "Generator",
                        _module_state(
                            modules={"evil": upstream.persistent("Evil", _module_state(), module_src=code)}
                        ),
                    )
                },
                protocol=4,
            ),
            "'Evil'",
        ),
        "top-level persistent object with unknown class": (
            pickle.dumps({"G": upstream.persistent("os", _module_state(), module_src=code)}, protocol=4),
            "'os'",
        ),
        "BUILD on EasyDict": (
            b"\x80\x02"
            + _glob("dnnlib.util", "EasyDict")
            + pickle.EMPTY_TUPLE
            + pickle.NEWOBJ
            + pickle.EMPTY_DICT
            + _ustr("__class__")
            + _glob("collections", "OrderedDict")
            + pickle.SETITEM
            + pickle.BUILD
            + pickle.STOP,
            "BUILD",
        ),
        "BUILD slot-state on OrderedDict": (
            b"\x80\x02"
            + _glob("collections", "OrderedDict")
            + pickle.EMPTY_TUPLE
            + pickle.REDUCE
            + pickle.NONE
            + pickle.EMPTY_DICT
            + _ustr("__class__")
            + _glob("dnnlib.util", "EasyDict")
            + pickle.SETITEM
            + pickle.TUPLE2
            + pickle.BUILD
            + pickle.STOP,
            "BUILD",
        ),
        "BUILD on a persistent object": (
            _dumps(upstream.persistent("Generator", {"training": False}, module_src=code))[:-1]
            + pickle.EMPTY_DICT
            + _ustr("class_name")
            + _ustr("Evil")
            + pickle.SETITEM
            + pickle.BUILD
            + pickle.STOP,
            "BUILD",
        ),
        "BUILD (__setstate__) on a tensor": (
            tensor_pickle + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP,
            "BUILD",
        ),
        "tensor with backward hooks": (
            _dumps(_Reduce(torch._utils._rebuild_tensor_v2, typed_storage, 0, (1,), (1,), False, hooks)),
            "backward hooks",
        ),
        "numpy object dtype": (
            b"\x80\x02"
            + _glob("numpy", "dtype")
            + _ustr("O8")
            + pickle.NEWFALSE
            + pickle.NEWTRUE
            + pickle.TUPLE3
            + pickle.REDUCE
            + pickle.STOP,
            "numpy.dtype",
        ),
        "numpy dtype with fields via BUILD": (
            b"\x80\x02"
            + _glob("numpy", "dtype")
            + _ustr("f8")
            + pickle.NEWFALSE
            + pickle.NEWTRUE
            + pickle.TUPLE3
            + pickle.REDUCE
            + pickle.MARK
            + pickle.BININT1
            + b"\x03"
            + _ustr("<")
            + pickle.NONE
            + _ustr("a")
            + pickle.TUPLE1
            + pickle.EMPTY_DICT
            + pickle.BININT1
            + b"\x08"
            + pickle.BININT1
            + b"\x01"
            + pickle.BININT1
            + b"\x10"
            + pickle.TUPLE
            + pickle.BUILD
            + pickle.STOP,
            "numpy.dtype",
        ),
        "numpy array reconstruct": (_dumps(np.zeros(2, dtype=object)), "multiarray._reconstruct"),
        "persistent id (torch.save storage reference)": (
            b"\x80\x02" + _ustr("storage") + pickle.BINPERSID + pickle.STOP,
            "persistent id",
        ),
    }


_PAYLOAD_NAMES = [
    "os.system via reduce",
    "os.system global",
    "posix.system",
    "builtins.exec",
    "builtins.eval",
    "subprocess.call",
    "subprocess.Popen",
    "INST opcode",
    "smuggled torch.save payload",
    "nested persistent object with unknown class",
    "top-level persistent object with unknown class",
    "persistent object of another type",
    "BUILD on EasyDict",
    "BUILD slot-state on OrderedDict",
    "BUILD on a persistent object",
    "BUILD (__setstate__) on a tensor",
    "tensor with backward hooks",
    "numpy object dtype",
    "numpy dtype with fields via BUILD",
    "numpy array reconstruct",
    "persistent id (torch.save storage reference)",
]


def _payload(upstream, marker: Path, name: str) -> tuple[bytes, str]:
    if name == "INST opcode":
        return b"\x80\x02(" + _ustr(f"touch {marker}") + b"ios\nsystem\n" + pickle.STOP, "os.system"
    if name == "persistent object of another type":
        reconstruct = upstream.persistent("x", {}).reconstruct
        meta = dict(
            type="function", version=6, module_src=_writes_marker(marker), class_name="Generator", state={}
        )
        return pickle.dumps({"G": _Reduce(reconstruct, meta)}, protocol=4), "type 'function'"
    return _payloads(upstream, marker)[name]


@pytest.mark.parametrize("name", _PAYLOAD_NAMES)
def test_code_running_pickles_are_refused_and_nothing_runs(upstream, tmp_path, name):
    marker = tmp_path / "side_effect"
    data, mention = _payload(upstream, marker, name)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(lp.UnsafePickleError) as info:
        lp.read_upstream_snapshot(path)
    message = str(info.value)
    assert mention in message
    assert str(path) in message
    assert not marker.exists()
    # The one loader for both formats refuses it too.
    with pytest.raises(lp.UnsafePickleError):
        load_checkpoint(path)
    assert not marker.exists()


def test_refusal_names_the_global_and_says_why(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(_dumps(_Reduce(eval, "1+1")))
    with pytest.raises(lp.UnsafePickleError) as info:
        lp.read_upstream_snapshot(path)
    assert "'builtins.eval'" in str(info.value)
    assert "not on the allow-list" in str(info.value)
    assert "avoid executing code" in str(info.value)


@pytest.mark.parametrize("upstream_payload", ["exec", "os.system"])
def test_payloads_are_live_under_plain_pickle(tmp_path, upstream_payload):
    """Control: the refused bytes really do run code when loaded the unsafe way."""
    marker = tmp_path / "side_effect"
    if upstream_payload == "exec":
        data = _dumps(_Reduce(exec, _writes_marker(marker)))
    else:
        data = _dumps(_Reduce(os.system, f"touch {marker}"))
    pickle.loads(data)
    assert marker.exists()


def test_smuggled_blob_is_live_under_upstreams_load_from_bytes(tmp_path):
    """Control: torch.storage._load_from_bytes (weights_only=False) would run the smuggled payload."""
    marker = tmp_path / "side_effect"
    blob = io.BytesIO()
    torch.save(_Reduce(exec, _writes_marker(marker)), blob)
    torch.storage._load_from_bytes(blob.getvalue())
    assert marker.exists()


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_scalars_under_both_numpy_module_names(module):
    data = _dumps(np.float64(0.125))
    assert b"numpy._core.multiarray\nscalar" in data or b"numpy.core.multiarray\nscalar" in data
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    data = data.replace(b"numpy.core.multiarray\n", module.encode() + b"\n")
    value = _load_bytes(data)
    assert isinstance(value, np.float64) and value == 0.125
    value32 = _load_bytes(
        _dumps(np.float32(-2.5)).replace(b"numpy._core.multiarray\n", module.encode() + b"\n")
    )
    assert isinstance(value32, np.float32) and value32 == -2.5


def test_tensors_and_parameters_round_trip_exactly():
    values = torch.randn(2, 3, 4)
    out = _load_bytes(_dumps({"t": values, "p": torch.nn.Parameter(values[1].clone()), "view": values[:, 1]}))
    assert (
        torch.equal(out["t"], values)
        and torch.equal(out["p"], values[1])
        and torch.equal(out["view"], values[:, 1])
    )
    assert out["t"].dtype == torch.float32 and not out["p"].requires_grad


def test_tensor_larger_than_its_storage_is_refused():
    data = _dumps(torch.zeros(4))
    # The pickled size tuple (4,) is BININT1 4 + TUPLE1; make it claim 1000 elements instead.
    bad = data.replace(
        pickle.BININT1 + b"\x04" + pickle.TUPLE1, pickle.BININT2 + struct.pack("<H", 1000) + pickle.TUPLE1, 1
    )
    assert bad != data
    with pytest.raises(lp.LegacyPickleError, match="storage holds 4"):
        _load_bytes(bad)


def test_not_a_snapshot_errors_are_clear(tmp_path):
    cases = {
        "list.pkl": ([1, 2], "top-level object is a list"),
        "tuple.pkl": ((1, 2, 3), "tuple"),
        "empty.pkl": ({"training_set_kwargs": {}}, "no networks found"),
    }
    for filename, (obj, expected) in cases.items():
        path = tmp_path / filename
        path.write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(lp.LegacyPickleError, match=expected) as info:
            lp.read_upstream_snapshot(path)
        assert str(path) in str(info.value)
    legacy = tmp_path / "legacy_torch_save.pt"
    torch.save({"a": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(lp.LegacyPickleError, match="legacy torch.save"):
        lp.read_upstream_snapshot(legacy)


def test_protocol3_sets_hold_strings_only():
    assert _load_bytes(_dumps({"a": {"x", "y"}})) == {"a": {"x", "y"}}  # builtins.set(["x", "y"])
    with pytest.raises(lp.UnsafePickleError, match="only sets of strings"):
        _load_bytes(_dumps({1, 2}))
