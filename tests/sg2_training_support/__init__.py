"""Support for the training tests: a test plugin (``sg2_training_support.extra_loss``, named by dotted path)
and tiny datasets (:mod:`sg2_training_support.data`). Nothing here is imported by the product."""
