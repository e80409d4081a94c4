"""Helpers several test files share: run the CLI in-process, read the commands a message
advises, move a panel's control as a user would."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from moit_explore import cli


def run_cli(capsys, *argv):
    """``python -m moit_explore *argv`` in this process: (exit status, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def hints(text: str) -> list[list[str]]:
    """The commands a message advises, as argv lists (without ``python -m moit_explore``)."""
    return [shlex.split(c)[3:] for c in re.findall(r"`(python -m moit_explore [^`]+)`", text)]


def move_control(panel: Any, name: str, value: Any) -> None:
    """Build the panel's ipywidgets UI and set control ``name`` to ``value`` (skips the test
    where ipywidgets is not installed)."""
    pytest.importorskip("ipywidgets")
    panel.widget()
    panel.controls[name].value = value
