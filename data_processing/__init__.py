"""DICOM radiographs -> training images: rendering, geometry, labels, conversion and reports.

The one rendering function is :func:`data_processing.render.render_dicom`; everything else (the
``python -m data_processing convert`` command, the ``dicom`` training plugin and the legacy
``image_main.py`` / ``scale_png.py`` scripts) goes through it. See ``docs/dicom.md``.
"""

from data_processing.errors import DicomInputError
from data_processing.render import RenderOptions, RenderResult, render_dicom

__all__ = ["DicomInputError", "RenderOptions", "RenderResult", "render_dicom"]
