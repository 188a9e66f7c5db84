"""Abnormality classifiers for SpineGAN: training, the model file, loading the files users bring.

* :mod:`classification.model_file`: the API (``Classifier``, ``ClassifierMeta``, ``load_classifier``,
  ``save_classifier``, ``ClassifierFileError``, ``images_uint8_to_float``); see
  ``docs/classification.md``.
* :mod:`classification.models`: the allow-list of architectures.
* :mod:`classification.transform`: the eval transform and the training augmentation.
* :mod:`classification.data`, :mod:`classification.train`: training data and the training loop.
* :mod:`classification.importer`: converting other files (the only place that may unpickle, on request).
* :mod:`classification.cli`: ``python -m classification ...``.
"""
