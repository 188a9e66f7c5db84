"""``python -m classification``: the command group, including commands registered lazily from other modules
(``evaluate`` lives in classification/evaluate.py)."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from classification import cli

probe = click.Command("probe", callback=lambda: click.echo("probe ran"), help="A lazily registered command.")


def test_lazy_commands_are_listed_and_run(monkeypatch):
    monkeypatch.setattr(cli, "_LAZY_COMMANDS", {"probe": f"{__name__}:probe"})
    help_text = CliRunner().invoke(cli.main, ["--help"]).output
    assert "probe" in help_text
    for name in ("train", "import", "info"):
        assert name in help_text
    assert CliRunner().invoke(cli.main, ["probe"]).output == "probe ran\n"


def test_every_lazy_command_imports():
    for name in cli._LAZY_COMMANDS:
        assert isinstance(cli.main.get_command(None, name), click.Command), name


def test_python_dash_m_classification_runs():
    result = subprocess.run(
        [sys.executable, "-m", "classification", "import", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--trust-pickle" in result.stdout and "RUNS CODE" in result.stdout
