"""Mutation testing of the modules that hold the promise, with mutmut (configured in setup.cfg).

``python scripts/mutation.py full`` runs every mutant and prints the score per module;
``python scripts/mutation.py sample`` runs a fixed sample (a seed picks ``--count`` mutants)
for ``make test``. ``sample`` fails when a sampled mutant survives that ``tests/MUTANTS.md``
does not list; ``full`` fails when the score is under ``--minimum`` percent, or when an entry
of ``tests/MUTANTS.md`` no longer names a surviving mutant (stale after mutmut renumbered).

Why a driver: mutmut prints progress, not a verdict, and knows nothing of the mutants we have
shown to be equivalent; this script turns its results into a score and an exit status.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
EQUIVALENT_LIST = ROOT / "tests" / "MUTANTS.md"
#: mutmut's statuses that mean a test noticed the mutant.
KILLED = {"killed", "timeout"}
#: The client's lookup path: the methods of ``RedisAttributeClient`` scored (mutmut generates
#: mutants of its other methods too, but they are not run or counted).
CLIENT_LOOKUP = [
    "_key",
    "key",
    "get_user_attributes",
    "_read_l2",
    "_read_l2_timed",
    "_redis_failed",
    "_put",
    "_servable",
    "_on_due",
    "_refresh",
    "_call_idp",
    "_stale",
    "_on_invalidation",
    "_refresh_once",
]
#: The extension's decision path: the methods of ``RBACABAC`` scored (its configuration, route
#: guard installation and operations are not). ``_refusing``, the route guard's refusal wrapper,
#: has no mutant: mutmut leaves a decorated function alone (``refused_view``, under
#: ``functools.wraps``), and the rest of ``_refusing`` holds nothing to mutate.
EXTENSION_DECISION = [
    "guard",
    "_decide",
    "_refuse",
    "load_identity",
    "_load_identity",
    "load_current_attributes",
    "_load_attributes",
    "authorize",
    "deny_for_error",
    "_record",
]
#: The module functions of the extension's decision path (the HTTP refusals).
EXTENSION_FUNCTIONS = ["_abort", "_invalid_identity"]
#: The mutants scored: every function of the modules setup.cfg names but client.py and
#: extension.py (hotpath.py included), the client's lookup path and the extension's decision
#: path.
SCOPE = [
    "flask_rbac_abac.rules.*",
    "flask_rbac_abac.identity.*",
    "flask_rbac_abac.local_cache.*",
    "flask_rbac_abac.store.*",
    "flask_rbac_abac.enforcement.*",
    "flask_rbac_abac.keys.*",
    "flask_rbac_abac.model.*",
    "flask_rbac_abac.hotpath.*",
    *(
        f"flask_rbac_abac.client.x\u01c1RedisAttributeClient\u01c1{name}__mutmut_*"
        for name in CLIENT_LOOKUP
    ),
    *(
        f"flask_rbac_abac.extension.x\u01c1RBACABAC\u01c1{name}__mutmut_*"
        for name in EXTENSION_DECISION
    ),
    *(f"flask_rbac_abac.extension.x_{name}__mutmut_*" for name in EXTENSION_FUNCTIONS),
]


#: How many times a fresh run may start over when mutmut's stats pass (every selected test run
#: once, unmutated, to map tests to functions) fails: under mutmut a ContextVar is now and then
#: found unset at a context's exit (a ``LookupError``, about one pass in four, on a different
#: test each time), which no run without mutmut shows, and the pass has crashed outright (a
#: segfault in mutmut's own process, twice in a row on one day). A test that really fails fails
#: each time.
STATS_ATTEMPTS = 3


def mutmut(*args: str, attempts: int = 1) -> str:
    """Run mutmut in the project root with the mutation-run environment; its stdout. With
    ``attempts``, a failed stats pass starts the run over from a clean ``mutants/``."""
    env = {**os.environ, "MUTATION_RUN": "1", "CI": ""}
    for attempt in range(1, attempts + 1):
        result = subprocess.run(  # noqa: S603 - our own interpreter and mutmut, fixed arguments
            [*MUTMUT, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        out = result.stdout + result.stderr
        # A failed pass says so; a crashed one (a signal, as a segfault) left a traceback there.
        crashed = result.returncode < 0 and "collect_stats" in out
        stats_failed = "failed to collect stats" in out or crashed
        if result.returncode == 0 or not stats_failed or attempt == attempts:
            break
        print(f"mutmut's stats pass failed (attempt {attempt} of {attempts}); starting over")
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"mutmut {args[0]} failed with exit status {result.returncode}")
    return result.stdout


def statuses() -> dict[str, str]:
    """Every generated mutant's name and mutmut's status for it."""
    found = {}
    for line in mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatchcase(name, pattern) for pattern in SCOPE):
            found[name] = status
    return found


def equivalent() -> set[str]:
    """The mutants tests/MUTANTS.md lists as equivalent (a backquoted name opening a bullet)."""
    text = EQUIVALENT_LIST.read_text(encoding="utf-8")
    return set(re.findall(r"^- `([^`]+__mutmut_\d+)`", text, flags=re.MULTILINE))


def known_open() -> set[str]:
    """Survivors tests/MUTANTS.md lists as open work (not equivalent: still counted)."""
    text = EQUIVALENT_LIST.read_text(encoding="utf-8")
    return set(re.findall(r"^- (flask_rbac_abac\S+__mutmut_\d+)$", text, flags=re.MULTILINE))


def module(name: str) -> str:
    return name.split(".x", 1)[0]


def report(results: dict[str, str], equivalents: set[str]) -> tuple[float, list[str]]:
    """Print the score per module; return the overall score and the unexplained survivors."""
    counted = {name: status for name, status in results.items() if name not in equivalents}
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in counted.items():
        per_module[module(name)]["killed" if status in KILLED else "alive"] += 1
    for name in sorted(per_module):
        tally = per_module[name]
        total = tally["killed"] + tally["alive"]
        print(f"{name:40} {tally['killed']:4}/{total:<4} {100 * tally['killed'] / total:6.1f} %")
    killed = sum(status in KILLED for status in counted.values())
    score = 100 * killed / len(counted) if counted else 100.0
    survivors = sorted(name for name, status in counted.items() if status not in KILLED)
    total = f"{killed:4}/{len(counted):<4} {score:6.1f} %"
    print(f"{'all':40} {total}  ({len(equivalents)} equivalent, not counted)")
    return score, survivors


def full(minimum: float, children: int) -> int:
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    mutmut("run", "--max-children", str(children), *SCOPE, attempts=STATS_ATTEMPTS)
    results, equivalents = statuses(), equivalent()
    score, survivors = report(results, equivalents)
    for name in survivors:
        print(f"survived: {name}   (mutmut show {name})")
    # An entry that no longer names a surviving mutant is stale (the code moved and mutmut
    # renumbered): it could hide the mutant that now carries its name.
    stale = sorted(name for name in equivalents if results.get(name) != "survived")
    for name in stale:
        print(f"stale entry in tests/MUTANTS.md: {name} ({results.get(name, 'not generated')})")
    print(f"mutation score: {score:.1f} % (minimum {minimum} %)")
    return 0 if score >= minimum and not stale else 1


def sample(count: int, seed: int, children: int) -> int:
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # One small module's first mutant generates every mutant and the test map; then the sample.
    mutmut(
        "run",
        "--max-children",
        str(children),
        "flask_rbac_abac.keys.*__mutmut_1",
        attempts=STATS_ATTEMPTS,
    )
    names = sorted(set(statuses()) - equivalent())
    sampler = random.Random(seed)  # noqa: S311 - a fixed, reproducible sample, not a secret
    chosen = sorted(sampler.sample(names, min(count, len(names))))
    mutmut("run", "--max-children", str(children), *chosen)
    results = statuses()
    survivors = [name for name in chosen if results.get(name) not in KILLED]
    # A survivor listed as open work is known; any other one is a regression of the tests.
    regressions = [name for name in survivors if name not in known_open()]
    for name in survivors:
        known = "known, open in tests/MUTANTS.md" if name not in regressions else "REGRESSION"
        print(f"survived: {name} ({results.get(name)}, {known})   (mutmut show {name})")
    print(f"mutation sample (seed {seed}): {len(chosen) - len(survivors)}/{len(chosen)} killed")
    return 1 if regressions else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["full", "sample"])
    parser.add_argument("--count", type=int, default=40, help="mutants in the sample")
    parser.add_argument("--seed", type=int, default=12, help="picks the sample")
    parser.add_argument("--minimum", type=float, default=90.0, help="score `full` requires")
    parser.add_argument("--children", type=int, default=2, help="mutants run in parallel")
    args = parser.parse_args(argv)
    if args.mode == "full":
        return full(args.minimum, args.children)
    return sample(args.count, args.seed, args.children)


if __name__ == "__main__":
    raise SystemExit(main())
