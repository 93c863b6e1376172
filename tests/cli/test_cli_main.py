"""Every subcommand has --help with the common options; ``python -m mixq`` runs the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixq import __version__
from mixq.cli.main import main

COMMANDS = [
    "demo",
    "sensitivity",
    "allocate",
    "quantize",
    "train",
    "eval",
    "export",
    "report",
    "cost",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_common_options(command: str, capsys: pytest.CaptureFixture) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"usage: mixq {command}" in text
    for option in ("--output DIR", "--quiet", "--verbose"):
        assert option in text


def test_quiet_and_verbose_exclude_each_other(capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "-q", "-v"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_python_dash_m_mixq_runs_the_cli() -> None:
    source = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-m", "mixq", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(source)},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mixq {__version__}"
