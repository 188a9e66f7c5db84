"""Helpers for the checkpoint tests: native files with a chosen safetensors header length."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylegan2_ada import checkpoint as ckpt

#: Header lengths whose two low bytes are a pickle signature (0x80, protocol 2..5), as in issue 8's
#: repro (66176 = 0x010280); all multiples of 8, as safetensors pads its header to one.
PICKLE_LOOKING_HEADER_LENGTHS = (0x010280, 0x010380, 0x010480, 0x010580)


def header_length(path: str | os.PathLike[str]) -> int:
    """The little-endian u64 a safetensors file starts with."""
    with open(path, "rb") as file:
        return struct.unpack("<Q", file.read(8))[0]


def save_with_header_length(
    path: Path,
    length: int,
    *,
    networks: Mapping[str, nn.Module],
    tensors: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """``save_checkpoint`` whose header is exactly ``length`` bytes, padded through a metadata entry.

    Deterministic: the header grows byte for byte with the padding (rounded up to 8 by safetensors),
    so a couple of saves find the padding that lands on ``length`` (a multiple of 8).
    """
    assert length % 8 == 0
    pad = 0
    for _ in range(10):
        ckpt.save_checkpoint(
            path, networks=networks, tensors=tensors, metadata={**(metadata or {}), "pad": "x" * pad}
        )
        current = header_length(path)
        if current == length:
            return path
        pad = max(pad + length - current, 0)
    raise AssertionError(f"could not reach a header of {length} bytes (last {current})")
