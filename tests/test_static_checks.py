"""Static security checks (ruff's ``S`` rules, flake8-bandit) hold over the shipped code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["flask_rbac_abac", "idp_app", "example_service", "scripts"]
NOQA_S = re.compile(r"#\s*noqa:\s*(S\d+(?:\s*,\s*S\d+)*)(.*)$")


def test_security_rules_find_nothing() -> None:
    """Run with ``--select S`` so the check holds even if someone drops ``S`` from ruff.toml."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "S"]
        + [str(ROOT / part) for part in SHIPPED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_security_noqa_says_why() -> None:
    """A silenced finding carries its reason on the same line: ``# noqa: S110 - why``."""
    found = 0
    for part in SHIPPED:
        for path in sorted((ROOT / part).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = NOQA_S.search(line)
                if match:
                    found += 1
                    reason = match.group(2).strip(" -")
                    assert len(reason) >= 10, f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
    assert found >= 1
