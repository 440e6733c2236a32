"""``make bench``'s report: goals judged from the results, strict JSON, tables that line up.

The measurements themselves are not tested here (they are what ``make bench`` prints); this is
the part that turns them into PASS/FAIL and files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import report
from bench.invalidation import percentile


def results(open_ratio: float, p99_ms: float) -> dict[str, Any]:
    case = {"us_per_request": 50.0, "requests_per_second": 20000.0}
    cases = {
        key: {**case, "label": key, "ratio": ratio}
        for key, ratio in [
            ("bare", 1.0),
            ("open", open_ratio),
            ("protected_l1", 0.96),
            ("async_bare", 1.0),
            ("async_open", 0.99),
            ("async_protected_l1", 0.5),
        ]
    }
    variant = {"p50_ms": 3.0, "p99_ms": p99_ms, "max_ms": p99_ms, "idp_answer_p50_ms": 9.0}
    return {
        "mode": "quick",
        "errors": {},
        "elapsed_s": 1.0,
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "python": "3",
            "os": "os",
            "date": "d",
            "commit": "c",
            "load_average": 0.5,
        },
        "load_average_end": 0.7,
        "inprocess": {"seconds": 0.1, "rounds": 1, "cases": cases},
        "invalidation": {
            "trials": 1,
            "workers": 2,
            "variants": {
                "role_revoked": {**variant, "label": "a"},
                "last_role_revoked": {**variant, "label": "b", "p99_ms": 50.0},
            },
        },
        "memory": {
            "bytes_per_entry": 1000.0,
            "rss": {"10": {"entries": 10, "rss_mib": 1.0, "growth_mib": 0.1}},
            "bound": {"maxsize": 10, "filled": 15, "len": 10},
        },
    }


def statuses(res: dict[str, Any]) -> dict[str, str]:
    return {goal["key"]: goal["status"] for goal in report.judge(res)}


def test_goals_pass_at_the_bound_and_fail_past_it() -> None:
    res = results(open_ratio=0.99, p99_ms=math.inf)
    got = statuses(res)
    assert got["open"] == "PASS"  # exactly 0.99x meets ">= 0.99x"
    assert got["protected_l1"] == "PASS"
    assert got["async_open"] == "PASS"
    assert got["async_protected_l1"] == "FAIL"
    assert got["invalidation"] == "FAIL"  # a timed-out trial
    assert got["invalidation_last_role"] == "PASS"  # exactly 50 ms meets "<= 50 ms"
    assert got["l1_bound"] == "PASS"
    assert got["http_protected"] == "SKIP"  # not measured (no wrk): never a PASS

    assert statuses(results(open_ratio=0.989, p99_ms=12.0))["open"] == "FAIL"
    res["memory"]["bound"]["len"] = 11
    assert statuses(res)["l1_bound"] == "FAIL"


def test_json_is_strict_and_tables_line_up(tmp_path: Path) -> None:
    res = results(open_ratio=1.0, p99_ms=math.inf)
    res["goals"] = report.judge(res)
    path = tmp_path / "results.json"
    report.write_json(res, path)
    written = json.loads(path.read_text(), parse_constant=_not_json)
    assert written["invalidation"]["variants"]["role_revoked"]["p99_ms"] is None
    assert [g["key"] for g in written["goals"]] == [g.key for g in report.GOALS]

    tables = report.tables(res)
    goals = tables[-1]
    assert [row[-1] for row in goals.rows] == [g["status"] for g in res["goals"]]
    for table in tables:
        assert all(len(row) == len(table.headers) for row in table.rows)
        lines = table.text().splitlines()[2:]  # after the blank line and the title
        assert len({len(line) for line in lines}) == 1  # every column padded to its width
    timeout_row = next(row for row in tables[1].rows if row[0] == "a")
    assert timeout_row[2] == "timeout"

    md = tmp_path / "BENCHMARKS.md"
    report.write_markdown(res, md)
    text = md.read_text()
    assert "cpu, 2 cores" in text and "| goal | measured | target | status |" in text


def _not_json(name: str) -> None:
    raise AssertionError(f"{name} in results.json: not JSON")


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([1.0, 2.0, math.inf], 99) == math.inf
