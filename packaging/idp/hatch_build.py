"""Add the repository's top-level ``idp_app/`` to this distribution's sdist and wheel.

The package is not under this directory (it stays at the top of the repository, beside the
library), and hatchling's static ``force-include`` cannot say "from ``../../idp_app`` when building
in the repository, from ``./idp_app`` when building from the unpacked sdist": a force-included
path that does not exist is an error. This hook says it. Bytecode caches are left out. The
repository's LICENSE goes into the sdist, where hatchling finds it for the wheel built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "idp_app"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-include every file of ``idp_app/`` when it is not already in the project root."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        here = Path(self.root)
        if (here / PACKAGE).is_dir():  # building from the sdist: everything is in place
            return
        repository = (here / ".." / "..").resolve()
        if self.target_name == "sdist":
            build_data["force_include"][str(repository / "LICENSE")] = "LICENSE"
        source = repository / PACKAGE
        if not (source / "__init__.py").is_file():
            raise FileNotFoundError(f"{PACKAGE}/ not found at {source}")
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                build_data["force_include"][str(path)] = f"{PACKAGE}/{path.relative_to(source)}"
