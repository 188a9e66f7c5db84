"""Support for the training tests: a test plugin (``sg2_training_support.extra_loss``, named by dotted path),
tiny datasets (:mod:`sg2_training_support.data`) and a tiny TorchScript detector for ``--metrics``
(:mod:`sg2_training_support.detector`). Nothing here is imported by the product."""
