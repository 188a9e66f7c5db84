"""The upstream-fixture policy of tests/conftest.py: skip with a reason locally, fail in CI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, in_ci, require_files  # noqa: E402


def test_missing_fixture_skips_with_its_name_locally_and_fails_in_ci(tmp_path: Path) -> None:
    missing = tmp_path / "upstream-missing.pkl"
    with pytest.raises(pytest.skip.Exception, match="upstream-missing.pkl") as skipped:
        require_files(missing, environ={})
    assert str(FIXTURES) in str(skipped.value)
    for ci in ("true", "1", "yes"):
        with pytest.raises(pytest.fail.Exception, match="CI is set, so a missing fixture is an error"):
            require_files(missing, environ={"CI": ci})
    with pytest.raises(pytest.skip.Exception):
        require_files(missing, environ={"CI": "false"})


def test_present_files_pass_in_ci_too() -> None:
    require_files(Path(__file__), environ={"CI": "true"})  # returns: nothing to skip or fail


def test_ci_detection() -> None:
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and in_ci({"CI": "TRUE"})
    assert not in_ci({}) and not in_ci({"CI": ""}) and not in_ci({"CI": "0"}) and not in_ci({"CI": "false"})
