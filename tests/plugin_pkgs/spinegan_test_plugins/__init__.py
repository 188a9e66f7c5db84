"""Plugin modules for tests/test_plugins.py, named by dotted path (``spinegan_test_plugins.<module>``)."""
