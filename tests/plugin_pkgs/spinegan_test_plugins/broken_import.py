"""A broken plugin: it exists but one of its own imports does not."""

import spinegan_test_plugins_missing_dependency  # noqa: F401
