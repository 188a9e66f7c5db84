"""Which pixel-data decoders are installed, which one to use, and what to install when one is missing.

pydicom decodes uncompressed, deflated and RLE data by itself; compressed transfer syntaxes need a
plugin. We use pydicom's own plugin registry (``pydicom.pixels.get_decoder``) and pick, per transfer
syntax, the first available plugin in :data:`PLUGIN_PREFERENCE`. Pillow is deliberately never used:
it mis-decodes 12/16-bit JPEG and JPEG 2000 medical data, so an encoding that only Pillow could
decode counts as *missing*, and :class:`~data_processing.errors.MissingCodecError` names the exact
``pip install`` command.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import uid as _uid
from pydicom.pixels import get_decoder

from data_processing.errors import MissingCodecError, UnsupportedTransferSyntaxError

__all__ = [
    "NATIVE",
    "PLUGIN_PREFERENCE",
    "DecoderStatus",
    "install_hint",
    "choose_decoding_plugin",
    "decoder_status",
    "format_decoder_report",
    "format_decoder_summary",
    "LOSSY_TRANSFER_SYNTAXES",
]

#: Pseudo plugin name for uncompressed (native) pixel data, which pydicom reads without a plugin.
NATIVE = "native"
#: pydicom decoding plugins we use, best first ("pydicom" is its built-in native/RLE decoder).
PLUGIN_PREFERENCE: tuple[str, ...] = ("pylibjpeg", "gdcm", "pyjpegls", "pydicom")
_LIBJPEG = "pip install pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pip install pylibjpeg pylibjpeg-openjpeg"
_RLE = "pip install pylibjpeg pylibjpeg-rle"
_INSTALL_HINTS: dict[str, str] = {
    _uid.JPEGBaseline8Bit: _LIBJPEG,
    _uid.JPEGExtended12Bit: _LIBJPEG,
    _uid.JPEGLossless: _LIBJPEG,
    _uid.JPEGLosslessSV1: _LIBJPEG,
    _uid.JPEGLSLossless: _LIBJPEG,
    _uid.JPEGLSNearLossless: _LIBJPEG,
    _uid.JPEG2000Lossless: _OPENJPEG,
    _uid.JPEG2000: _OPENJPEG,
    _uid.HTJ2KLossless: _OPENJPEG,
    _uid.HTJ2KLosslessRPCL: _OPENJPEG,
    _uid.HTJ2K: _OPENJPEG,
    _uid.RLELossless: _RLE,
}
#: Transfer syntaxes whose encoding discards information (the report warns about them).
LOSSY_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {_uid.JPEGBaseline8Bit, _uid.JPEGExtended12Bit, _uid.JPEGLSNearLossless, _uid.JPEG2000, _uid.HTJ2K}
)
#: The transfer syntaxes the start-up check lists (native ones first, then the compressed ones).
CHECKED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    _uid.ImplicitVRLittleEndian,
    _uid.ExplicitVRLittleEndian,
    _uid.DeflatedExplicitVRLittleEndian,
    _uid.ExplicitVRBigEndian,
    _uid.RLELossless,
    *(u for u in _INSTALL_HINTS if u != _uid.RLELossless),
)


@dataclass(frozen=True)
class DecoderStatus:
    """Whether one transfer syntax can be decoded here."""

    uid: str
    name: str
    plugins: tuple[str, ...]  # usable plugins, best first (empty: cannot decode)
    install: str  # pip command that adds a decoder ("" for encodings pydicom decodes itself)

    @property
    def available(self) -> bool:
        return bool(self.plugins)


def install_hint(transfer_syntax: str) -> str:
    """The ``pip install ...`` command that provides a decoder for ``transfer_syntax`` ("" if none is needed)."""
    return _INSTALL_HINTS.get(str(transfer_syntax), "")


def _usable_plugins(transfer_syntax: str) -> tuple[str, ...] | None:
    """Usable plugin names, best first; ``None`` when pydicom has no decoder at all for the syntax."""
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        return None
    if decoder.is_native:
        return (NATIVE,)
    available = set(decoder.available_plugins)
    ordered = [p for p in PLUGIN_PREFERENCE if p in available]
    ordered += sorted(p for p in available if p not in PLUGIN_PREFERENCE and p != "pillow")
    return tuple(ordered)


def decoder_status() -> list[DecoderStatus]:
    """The decoding capability of this installation for every transfer syntax we check."""
    result = []
    for ts in CHECKED_TRANSFER_SYNTAXES:
        plugins = _usable_plugins(ts) or ()
        result.append(
            DecoderStatus(uid=str(ts), name=_uid.UID(ts).name, plugins=plugins, install=install_hint(ts))
        )
    return result


def format_decoder_report(statuses: list[DecoderStatus] | None = None) -> str:
    """A human-readable table of :func:`decoder_status`, one line per transfer syntax."""
    statuses = decoder_status() if statuses is None else statuses
    lines = ["DICOM pixel-data decoders (Pillow is never used for medical images):"]
    for s in statuses:
        if s.available:
            lines.append(f"  ok       {s.name} ({s.uid}): {', '.join(s.plugins)}")
        else:
            lines.append(f"  MISSING  {s.name} ({s.uid}): {s.install}")
    return "\n".join(lines)


_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "uncompressed",
        (
            _uid.ImplicitVRLittleEndian,
            _uid.ExplicitVRLittleEndian,
            _uid.DeflatedExplicitVRLittleEndian,
            _uid.ExplicitVRBigEndian,
        ),
    ),
    ("RLE", (_uid.RLELossless,)),
    ("JPEG", (_uid.JPEGBaseline8Bit, _uid.JPEGExtended12Bit, _uid.JPEGLossless, _uid.JPEGLosslessSV1)),
    ("JPEG-LS", (_uid.JPEGLSLossless, _uid.JPEGLSNearLossless)),
    ("JPEG 2000", (_uid.JPEG2000Lossless, _uid.JPEG2000)),
    ("HTJ2K", (_uid.HTJ2KLossless, _uid.HTJ2KLosslessRPCL, _uid.HTJ2K)),
)


def format_decoder_summary(statuses: list[DecoderStatus] | None = None) -> str:
    """One line for start-up: each encoding family with its decoders, or MISSING and the pip command."""
    by_uid = {s.uid: s for s in (decoder_status() if statuses is None else statuses)}
    parts = []
    for family, uids in _FAMILIES:
        members = [by_uid[u] for u in uids if u in by_uid]
        missing = [m for m in members if not m.available]
        if missing:
            hints = sorted({m.install for m in missing if m.install})
            what = family if len(missing) == len(members) else ", ".join(m.name for m in missing)
            parts.append(f"{what} MISSING ({' ; '.join(hints) or 'no decoder'})")
        else:
            plugins = list(dict.fromkeys(p for m in members for p in m.plugins))
            parts.append(f"{family}: {'/'.join(plugins)}")
    return "DICOM decoders: " + "; ".join(parts)


def choose_decoding_plugin(transfer_syntax: str, path: str | None = None) -> str:
    """The pydicom plugin name to decode ``transfer_syntax`` with (:data:`NATIVE` for uncompressed data).

    Raises :class:`MissingCodecError` (with the ``pip install`` command) when no usable plugin is
    installed, and :class:`UnsupportedTransferSyntaxError` when pydicom has no decoder for it at all.
    """
    plugins = _usable_plugins(transfer_syntax)
    name = _uid.UID(transfer_syntax).name
    if plugins is None:
        raise UnsupportedTransferSyntaxError(
            path,
            f"no decoder exists for transfer syntax {name} ({transfer_syntax}); convert the file to an "
            "uncompressed or JPEG 2000 transfer syntax first (e.g. with dcmtk's dcmconv or gdcmconv)",
        )
    if not plugins:
        hint = install_hint(transfer_syntax)
        raise MissingCodecError(
            path,
            f"no decoder installed for transfer syntax {name} ({transfer_syntax}); install one with: {hint}",
            transfer_syntax=str(transfer_syntax),
            package=hint,
        )
    return plugins[0]
