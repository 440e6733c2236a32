"""The import-linter layers contract names every module of the library.

``lint-imports`` only checks the modules a layers contract lists, so a new module left out of it
could import anything, cycles included. This keeps the list complete.
"""

from __future__ import annotations

import configparser
import pkgutil
from pathlib import Path

import flask_rbac_abac

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def test_the_layers_contract_lists_every_library_module() -> None:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    layers = config["importlinter:contract:library-layers"]["layers"]
    listed = {name.strip() for line in layers.split("\n") for name in line.split("|")} - {""}
    modules = {m.name for m in pkgutil.iter_modules(flask_rbac_abac.__path__)}
    assert listed == modules
