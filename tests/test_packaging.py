"""What the distributions declare: the library's wheel holds the library alone, the IdP's
distribution requires exactly the library's version, user-facing extras carry no tool pins.

``make dist-check`` builds both distributions and checks the real artifacts; these tests keep
the declarations those builds start from honest, in milliseconds.
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

from packaging.requirements import Requirement
from setuptools import find_packages

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def extra(name: str) -> list[Requirement]:
    lines = setup_cfg()["options.extras_require"][name].strip().splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def idp_project() -> dict[str, object]:
    with open(ROOT / "packaging" / "idp" / "pyproject.toml", "rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def test_the_library_wheel_packages_flask_rbac_abac_alone() -> None:
    include = setup_cfg()["options.packages.find"]["include"].split()
    packages = find_packages(str(ROOT), include=include)
    assert packages == ["flask_rbac_abac"]
    assert (ROOT / "flask_rbac_abac" / "py.typed").is_file()
    assert setup_cfg()["options.package_data"]["flask_rbac_abac"].strip() == "py.typed"


def test_the_idp_distribution_requires_exactly_the_library_version() -> None:
    version = setup_cfg()["metadata"]["version"]
    project = idp_project()
    assert project["name"] == "flask-rbac-abac-idp"
    assert project["version"] == version
    assert [str(Requirement(r)) for r in project["dependencies"]] == [  # type: ignore[attr-defined]
        f"flask-rbac-abac[idp]=={version}"
    ]


def test_every_supported_python_has_a_classifier() -> None:
    classifiers = setup_cfg()["metadata"]["classifiers"].split("\n")
    minors = [
        c.rsplit(".", 1)[1]
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert minors == ["10", "11", "12", "13"]
    assert setup_cfg()["options"]["python_requires"] == ">=3.10"
    assert idp_project()["requires-python"] == ">=3.10"


def test_the_async_extra_brings_flasks_async_support() -> None:
    (requirement,) = extra("async")
    assert (requirement.name, requirement.extras) == ("Flask", {"async"})


def test_user_facing_extras_pin_no_tool_exactly() -> None:
    for name in ("async", "hiredis", "prometheus", "idp", "test", "docs"):
        for requirement in extra(name):
            assert not any(s.operator == "==" for s in requirement.specifier), (name, requirement)
    assert {r.name for r in extra("test")}.isdisjoint({"ruff", "mypy"})
    pins = (ROOT / "requirements" / "dev.txt").read_text().splitlines()
    assert any(line.startswith("ruff==") for line in pins)
    assert any(line.startswith("mypy==") for line in pins)
