"""Mutation testing of the Lua compare-and-set: mutmut does not mutate string contents.

Each mutant of ``store._STORE_IF_NEWER`` swaps one operator, constant or result of the script;
the behaviour tests of tests/test_store.py then run against it on fakeredis, and at least one
must fail. A mutant that no test can kill is listed in ``EQUIVALENT`` with the reason.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Iterator

import fakeredis
import pytest

from flask_rbac_abac import store

from . import test_store

#: (pattern, replacement): every match of a pattern is one mutant (one place changed at a time).
SWAPS = [
    (r"(?<![<>~=])<(?!=)", "<="),
    (r"(?<![<>~=])>(?!=)", ">="),
    (r"(?<![<>~=])<(?!=)", ">"),
    (r"(?<![<>~=])>(?!=)", "<"),
    (r"==", "~="),
    (r"~=", "=="),
    (r"\bor\b", "and"),
    (r"\band\b", "or"),
    (r"result = 2", "result = 1"),
    (r"local result = 1", "local result = 2"),
    (r"return 0", "return 1"),
    (r"9007199254740991", "9007199254740992"),
    (r"ARGV\[3\]", "ARGV[4]"),
    (r"ARGV\[4\] ~= ''", "ARGV[4] == ''"),
    (r"'EX', ARGV\[2\]", "'PX', ARGV[2]"),
]

#: Mutants no test can tell from the script, by label, with the reason.
EQUIVALENT: dict[str, str] = {
    "line 13: '<' -> '<='": (
        "PTTL is 0 only within the key's last millisecond, when it is expiring anyway: "
        "overwriting it then (REPAIRED) or as an older version (WRITTEN) leaves the same value"
    ),
}


def mutants(script: str) -> Iterator[tuple[str, str]]:
    for pattern, replacement in SWAPS:
        for match in re.finditer(pattern, script):
            line = script[: match.start()].count("\n")
            label = f"line {line}: {match.group(0)!r} -> {replacement!r}"
            yield label, script[: match.start()] + replacement + script[match.end() :]


def checks() -> list[Callable[..., None]]:
    """The behaviour tests of test_store.py that take a Redis client and a key prefix only."""
    found = []
    for name, function in vars(test_store).items():
        if name.startswith("test_") and callable(function):
            params = set(inspect.signature(function).parameters)
            if {"backend", "key_prefix"} <= params:
                found.append(function)
    return found


def killed(script: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(store, "_STORE_IF_NEWER", script)
    for check in checks():
        backend = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        try:
            check(backend=backend, key_prefix=f"lua-{uuid.uuid4().hex[:8]}")
        except Exception:  # an assertion, or a script Redis refuses: either way, noticed
            return True
    return False


ALL = list(mutants(store._STORE_IF_NEWER))
CANDIDATES = [(label, script) for label, script in ALL if label not in EQUIVALENT]


def test_the_mutation_pass_changes_the_script() -> None:
    assert len(ALL) >= 25
    assert all(script != store._STORE_IF_NEWER for _, script in ALL)
    assert set(EQUIVALENT) <= {label for label, _ in ALL}  # the list names real mutants


@pytest.mark.parametrize(("label", "script"), CANDIDATES, ids=[label for label, _ in CANDIDATES])
def test_every_mutant_of_the_lua_script_is_killed(
    label: str, script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert killed(script, monkeypatch), f"the Lua mutant {label} survives test_store.py"
