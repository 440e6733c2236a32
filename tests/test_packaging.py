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


def _imported_distributions(package: str) -> set[str]:
    """The distributions whose modules ``package`` imports at module level (not under
    ``TYPE_CHECKING``, not inside a ``try`` that tolerates their absence)."""
    import ast
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level only: optional imports live in functions
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in {"flask_rbac_abac", package}:
                    continue
                found.update(d.lower() for d in owners.get(top, [top]))
    return found


def _declared(*extras: str) -> set[str]:
    from importlib.metadata import requires

    declared: set[str] = set()
    for line in requires("flask-rbac-abac") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            declared.add(req.name.lower())
            # PyJWT[crypto] brings cryptography; Flask brings Werkzeug, Jinja2, click.
            if req.name.lower() == "pyjwt" and "crypto" in req.extras:
                declared.add("cryptography")
            if req.name.lower() == "flask":
                declared.update({"werkzeug", "jinja2", "click", "itsdangerous", "markupsafe"})
            if req.name.lower() == "flask-sqlalchemy":
                declared.add("sqlalchemy")
            if req.name.lower() == "flask-migrate":
                declared.add("alembic")
    return declared


def test_every_module_the_library_imports_is_a_declared_dependency() -> None:
    missing = _imported_distributions("flask_rbac_abac") - _declared()
    assert missing == set(), f"imported by flask_rbac_abac but not in install_requires: {missing}"


def test_every_module_the_idp_imports_is_in_the_library_or_its_idp_extra() -> None:
    # ``make demo`` installs exactly these (no test extra): a missing one fails the demo.
    missing = _imported_distributions("idp_app") - _declared("idp")
    assert missing == set(), f"imported by idp_app but not in the idp extra: {missing}"
