"""The console scripts setup.cfg declares: each resolves to its module's main().

Tests run the commands as `python -m <module>` (an environment installed before an entry point
was added lacks its script until `make` reinstalls); this pins that the names users type lead
to those same functions."""

from __future__ import annotations

import configparser
import importlib

import pytest
from helpers import REPO


def console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


EXPECTED = {
    "s2s-train": "s2s.cli.train:main",
    "s2s-decode": "s2s.cli.decode:main",
    "s2s-score": "s2s.cli.score:main",
    "s2s-recipe": "s2s.cli.recipe:main",
    "s2s-validate-data": "s2s.cli.validate_data:main",
    "s2s-pack": "s2s.cli.pack:main",
    "s2s-export": "s2s.cli.export:main",
}


def test_the_documented_commands_are_declared() -> None:
    assert EXPECTED.items() <= console_scripts().items()


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_entry_point_resolves(name: str) -> None:
    module, func = console_scripts()[name].split(":")
    assert callable(getattr(importlib.import_module(module), func))
