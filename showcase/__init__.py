"""The end-to-end demo behind ``python demo.py``: phantom DICOM cohort -> conversion -> split by patient
-> classifier -> standard and SpineGAN conditional GANs -> metrics -> samples -> the synthetic-learning
experiment -> ``report.html`` (see docs/demo.md).

* :mod:`showcase.presets`: the ``ci``, ``full`` and ``gpu`` sizes of every stage.
* :mod:`showcase.stages`: the stages and the runner (markers, resuming).
* :mod:`showcase.report`: the HTML report.
* :mod:`showcase.cli`: the command line of ``demo.py``.
"""
