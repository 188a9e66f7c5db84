"""The built-in plugins of SpineGAN, one subpackage each: ``dicom`` (DICOM folders as training data),
``dp`` (differentially private training of D) and ``spinegan`` (a frozen classifier's loss on the fakes).

Each is an ordinary plugin of the StyleGAN2-ADA core: it uses only the hooks in
:mod:`stylegan2_ada.hookspecs`, is declared as an entry point in the group ``stylegan2_ada.plugins`` and is
enabled with ``train.py --plugin NAME`` (see ``docs/plugins.md``).
"""
