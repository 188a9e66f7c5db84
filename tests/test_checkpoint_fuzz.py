"""Native-header fuzzing (issue 8): random mutations of a real small snapshot either load bit-identically
or raise one of our clear error types naming the file; never another exception, never a silent success
on changed tensor bytes or metadata."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import torch
from conftest import tiny_d_kwargs, tiny_g_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stylegan2_ada import checkpoint as ckpt
from stylegan2_ada import legacy_pickle
from stylegan2_ada.augment import AugmentPipe
from stylegan2_ada.networks import Discriminator, Generator

#: What loading an unusable file may raise: our checkpoint errors, or the .pkl reader's when a mutated
#: length prefix makes the file look like a pickle.
CLEAR_ERRORS = (ckpt.CheckpointError, legacy_pickle.LegacyPickleError)
FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@functools.cache
def original() -> tuple[bytes, ckpt.Checkpoint]:
    """A real 16 px snapshot (G, D, G_ema, augment pipe, free tensors, metadata): its bytes and load."""
    torch.manual_seed(0)
    networks = {
        "G": Generator(**tiny_g_kwargs()),
        "D": Discriminator(**tiny_d_kwargs()),
        "G_ema": Generator(**tiny_g_kwargs()),
        "augment_pipe": AugmentPipe(xflip=1, rotate90=1),
    }
    tensors = {"optimizer/G/0/exp_avg": torch.randn(7, 3), "rng/0/torch": torch.get_rng_state()}
    metadata = {"training_state": {"cur_nimg": 1234}, "class_names": ["normal", "abnormal"], "gamma": 0.5}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "snap.safetensors"
        ckpt.save_checkpoint(path, networks=networks, tensors=tensors, metadata=metadata)
        return path.read_bytes(), ckpt.load_checkpoint(path)


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_identical(loaded: ckpt.Checkpoint, reference: ckpt.Checkpoint) -> None:
    assert loaded.metadata == reference.metadata
    assert list(loaded.networks) == list(reference.networks)
    for name, module in reference.networks.items():
        a, b = module.state_dict(), loaded.networks[name].state_dict()
        assert list(a) == list(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (name, key)
            assert _raw(a[key]) == _raw(b[key]), (name, key)
    assert list(loaded.tensors) == list(reference.tensors)
    for key, tensor in reference.tensors.items():
        assert tensor.dtype == loaded.tensors[key].dtype and _raw(tensor) == _raw(loaded.tensors[key]), key


def _header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


# A mutation is (kind, position as a fraction of its region, value).
MUTATION = st.tuples(
    st.sampled_from(["flip-header", "flip-data", "truncate", "extend", "length"]),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    st.integers(min_value=1, max_value=2**64 - 1),
)


def _mutate(data: bytes, kind: str, where: float, value: int) -> bytes:
    header_end = _header_end(data) if len(data) >= 8 else len(data)
    if kind == "flip-header" and header_end > 0:
        i = int(where * min(header_end, len(data)))
        return data[:i] + bytes([data[i] ^ (value % 255 + 1)]) + data[i + 1 :]
    if kind == "flip-data" and len(data) > header_end:
        i = header_end + int(where * (len(data) - header_end))
        return data[:i] + bytes([data[i] ^ (value % 255 + 1)]) + data[i + 1 :]
    if kind == "truncate":
        return data[: int(where * len(data))]
    if kind == "extend":
        return data + value.to_bytes(8, "little")[: 1 + value % 8]
    if kind == "length" and len(data) >= 8:
        # Around the real length (the likeliest damage) or anywhere in the u64 range.
        (length,) = struct.unpack("<Q", data[:8])
        new = length + (value % 33) - 16 if where < 0.5 else value
        return struct.pack("<Q", new % 2**64) + data[8:]
    return data


@FUZZ_SETTINGS
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_snapshot_loads_identically_or_fails_clearly(mutations):
    data, reference = original()
    for mutation in mutations:
        data = _mutate(data, *mutation)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.safetensors"
        path.write_bytes(data)
        try:
            loaded = ckpt.load_checkpoint(path)
        except CLEAR_ERRORS as exc:
            assert str(path) in str(exc)
            return
    # It loaded: only possible when the mutations changed nothing that matters (e.g. header padding).
    _assert_identical(loaded, reference)


@FUZZ_SETTINGS
@given(where=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_in_tensor_data_is_refused(where, bit):
    data, _ = original()
    start = _header_end(data)
    i = start + int(where * (len(data) - start))
    damaged = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.safetensors"
        path.write_bytes(damaged)
        try:
            ckpt.load_checkpoint(path)
        except ckpt.CheckpointError as exc:
            assert "content hash mismatch" in str(exc) and str(path) in str(exc)
        else:
            raise AssertionError(f"a flipped bit at byte {i} of {len(data)} loaded silently")
