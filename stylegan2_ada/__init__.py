"""A clean-room, pure-PyTorch StyleGAN2-ADA with a pluggy seam for extensions.

The core knows nothing about spines, privacy or DICOM: those live in plugins that use only the hooks
in :mod:`stylegan2_ada.hookspecs`.
"""

__version__ = "0.1.0"
