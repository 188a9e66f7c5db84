"""Why a DICOM file could not be turned into a training image: one exception class per problem.

Every error names the file and the problem in its message (``str(error)``), and carries a short
machine-readable :attr:`DicomInputError.code` that the conversion report writes in its ``reason_code``
column. The hierarchy groups the problems by what the user can do about them::

    DicomInputError (ValueError)
    +-- NotDicomError                    not a DICOM file at all
    +-- UnreadableFileError              the file system refused to read it
    +-- DicomStructureError              a DICOM file, but not an image we can interpret
    |   +-- NoPixelDataError             SR, RT plan, DICOMDIR, ...: nothing to render
    |   +-- MissingTransferSyntaxError   no (0002,0010): the pixel encoding is unknown
    |   +-- MissingPixelTagsError        Rows, Bits Allocated, ... missing
    |   +-- InvalidTagValueError         a pixel-module tag holds a value of the wrong form
    +-- DecodeError                      the pixel data cannot be decoded
    |   +-- MissingCodecError            install the package named in the message
    |   +-- UnsupportedTransferSyntaxError  no decoder exists for this encoding
    |   +-- CorruptPixelDataError        the codestream is damaged
    |       +-- TruncatedPixelDataError  the file ends early / fewer bytes than the header says
    +-- UnsupportedImageError            a valid image of a kind we do not train on (some opt-in)
    |   +-- ColourImageError             RGB / YBR / palette (opt in: allow_colour)
    |   +-- MultiFrameError              more than one frame (opt in: allow_multiframe)
    |   +-- UnsupportedBitDepthError     1-bit, 32-bit, float pixel data
    |   +-- ForProcessingError           raw detector data (opt in: allow_for_processing)
    |   +-- ImageTooLargeError           a header claiming more pixels than any radiograph has
    |   +-- UnsupportedPresentationLUTError
    +-- RenderingError                   the grey-level transform makes no sense
        +-- InvalidWindowError           width < 1, NaN, unknown VOI LUT function, window misses all data
        +-- InvalidModalityLUTError      rescale slope 0 / not finite
        +-- ConstantImageError           every pixel has the same value
"""

from __future__ import annotations

import os
from typing import ClassVar

__all__ = [
    "DicomInputError",
    "NotDicomError",
    "UnreadableFileError",
    "DicomStructureError",
    "NoPixelDataError",
    "MissingTransferSyntaxError",
    "MissingPixelTagsError",
    "InvalidTagValueError",
    "DecodeError",
    "MissingCodecError",
    "UnsupportedTransferSyntaxError",
    "CorruptPixelDataError",
    "TruncatedPixelDataError",
    "UnsupportedImageError",
    "ColourImageError",
    "MultiFrameError",
    "UnsupportedBitDepthError",
    "ForProcessingError",
    "ImageTooLargeError",
    "UnsupportedPresentationLUTError",
    "RenderingError",
    "InvalidWindowError",
    "InvalidModalityLUTError",
    "ConstantImageError",
]


class DicomInputError(ValueError):
    """A DICOM input file that cannot be rendered; ``str(err)`` is ``"<file>: <problem>"``.

    Attributes: ``path`` (the file, as given), ``problem`` (the sentence after the colon), ``code``
    (a short stable identifier such as ``"missing-codec"``).
    """

    code: ClassVar[str] = "dicom-input"

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = os.fspath(path) if path is not None else "<dataset>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NotDicomError(DicomInputError):
    code = "not-dicom"


class UnreadableFileError(DicomInputError):
    code = "unreadable"


class DicomStructureError(DicomInputError):
    code = "dicom-structure"


class NoPixelDataError(DicomStructureError):
    code = "no-pixel-data"


class MissingTransferSyntaxError(DicomStructureError):
    code = "missing-transfer-syntax"


class MissingPixelTagsError(DicomStructureError):
    code = "missing-pixel-tags"


class InvalidTagValueError(DicomStructureError):
    code = "invalid-tag-value"


class DecodeError(DicomInputError):
    code = "decode-failed"


class MissingCodecError(DecodeError):
    """No installed decoder handles the file's transfer syntax; ``package`` says what to ``pip install``."""

    code = "missing-codec"

    def __init__(
        self, path: str | os.PathLike[str] | None, problem: str, *, transfer_syntax: str, package: str
    ) -> None:
        self.transfer_syntax = transfer_syntax
        self.package = package
        super().__init__(path, problem)


class UnsupportedTransferSyntaxError(DecodeError):
    code = "unsupported-transfer-syntax"


class CorruptPixelDataError(DecodeError):
    code = "corrupt-pixel-data"


class TruncatedPixelDataError(CorruptPixelDataError):
    code = "truncated-pixel-data"


class UnsupportedImageError(DicomInputError):
    code = "unsupported-image"


class ColourImageError(UnsupportedImageError):
    code = "colour-image"


class MultiFrameError(UnsupportedImageError):
    code = "multi-frame"


class UnsupportedBitDepthError(UnsupportedImageError):
    code = "unsupported-bit-depth"


class ForProcessingError(UnsupportedImageError):
    code = "for-processing"


class ImageTooLargeError(UnsupportedImageError):
    code = "image-too-large"


class UnsupportedPresentationLUTError(UnsupportedImageError):
    code = "unsupported-presentation-lut"


class RenderingError(DicomInputError):
    code = "rendering"


class InvalidWindowError(RenderingError):
    code = "invalid-window"


class InvalidModalityLUTError(RenderingError):
    code = "invalid-modality-lut"


class ConstantImageError(RenderingError):
    code = "constant-image"
