"""The report of ``make bench``: tables (printed, and as Markdown in BENCHMARKS.md), the goals with
PASS/FAIL, ``bench/results.json`` and the chart ``bench/results.png``."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT

RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_PNG = ROOT / "bench" / "results.png"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


@dataclass(frozen=True)
class Goal:
    """One promise: ``value(results)`` compared with ``bound`` (``at_least`` or at most)."""

    key: str
    label: str
    value: Callable[[dict[str, Any]], float | None]
    bound: float
    at_least: bool = True
    unit: str = "x"

    def text(self) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{sign} {self.bound:g}{' ms' if self.unit == 'ms' else 'x'}"

    def judge(self, results: dict[str, Any]) -> dict[str, Any]:
        try:
            value = self.value(results)
        except (KeyError, TypeError):
            value = None
        if value is None:
            status = "SKIP"
        elif self.at_least:
            status = "PASS" if value >= self.bound else "FAIL"
        else:
            status = "PASS" if value <= self.bound else "FAIL"
        return {
            "key": self.key,
            "label": self.label,
            "goal": self.text(),
            "value": value,
            "status": status,
        }


def _ratio(section: str, case: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r[section]["cases"][case]["ratio"])


def _p99(variant: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["invalidation"]["variants"][variant]["p99_ms"])


GOALS = [
    Goal("open", "extension + open route vs bare (WSGI direct)", _ratio("inprocess", "open"), 0.99),
    Goal("protected_l1", "protected, L1 hit vs bare (WSGI direct)",
         _ratio("inprocess", "protected_l1"), 0.95),
    Goal("async_open", "async: extension + open view vs bare async",
         _ratio("inprocess", "async_open"), 0.99),
    Goal("async_protected_l1", "async: protected, L1 hit vs bare async",
         _ratio("inprocess", "async_protected_l1"), 0.95),
    Goal("http_protected", "over HTTP: protected vs bare", _ratio("http", "protected"), 0.98),
    Goal("invalidation", "invalidation p99, admin role revoked", _p99("role_revoked"), 50,
         at_least=False, unit="ms"),
    Goal("invalidation_last_role", "invalidation p99, last role revoked",
         _p99("last_role_revoked"), 50, at_least=False, unit="ms"),
    Goal("l1_bound", "L1 entries / maxsize after overfilling",
         lambda r: r["memory"]["bound"]["len"] / r["memory"]["bound"]["maxsize"], 1.0,
         at_least=False),
]  # fmt: skip


@dataclass
class Table:
    title: str
    headers: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)

    def text(self) -> str:
        widths = [
            max(len(str(c)) for c in col) for col in zip(self.headers, *self.rows, strict=True)
        ]
        line = "  ".join
        fmt = [
            line(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [self.headers, *self.rows]
        ]
        out = [f"\n{self.title}", fmt[0], line("-" * w for w in widths), *fmt[1:]]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        out.append(
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"
        )
        out += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(out)


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load_average": os.getloadavg()[0],
    }


def _goal_cell(goals: dict[str, dict[str, Any]], key: str) -> list[str]:
    goal = goals.get(key)
    return [goal["goal"], goal["status"]] if goal else ["", ""]


def tables(results: dict[str, Any]) -> list[Table]:
    goals = {g["key"]: g for g in results["goals"]}
    out: list[Table] = []
    inproc = results.get("inprocess")
    if inproc and "cases" in inproc:
        table = Table(
            f"1. In-process, WSGI direct ({inproc['rounds']} rounds of ~{inproc['seconds']:g} s "
            "per case, alternating; medians; ratio: throughput vs its baseline, the median of the "
            "rounds' ratios)",
            ["case", "us/req", "req/s", "ratio", "goal", "status"],
        )
        for key, case in inproc["cases"].items():
            table.rows.append(
                [
                    case["label"],
                    f"{case['us_per_request']:.1f}",
                    f"{case['requests_per_second']:.0f}",
                    f"{case['ratio']:.3f}",
                    *_goal_cell(goals, key),
                ]
            )
        out.append(table)
    http = results.get("http")
    if http and "cases" in http:
        table = Table(
            f"2. Over HTTP (gunicorn, {http['workers']} workers; wrk -t1 -c{http['connections']}, "
            f"{http['rounds']} rounds x {http['seconds']:g} s, alternating; medians; ratio: the "
            "median of the rounds' ratios)",
            ["case", "req/s", "ratio", "goal", "status"],
        )
        for key, case in http["cases"].items():
            table.rows.append(
                [
                    case["label"],
                    f"{case['requests_per_second']:.0f}",
                    f"{case['ratio']:.3f}",
                    *_goal_cell(goals, f"http_{key}"),
                ]
            )
        out.append(table)
    micro = results.get("micro")
    if micro and "ops" in micro:
        table = Table(f"3. Micro ({micro['rounds']} rounds; medians)", ["operation", "ns/op"])
        table.rows = [[op["label"], f"{op['ns_per_op']:,.0f}"] for op in micro["ops"].values()]
        out.append(table)
    inv = results.get("invalidation")
    if inv and "variants" in inv:
        table = Table(
            f"4. Invalidation: IdP's answer -> every worker denies ({inv['trials']} trials each, "
            f"{inv['workers']} service workers, loopback)",
            ["change", "p50 ms", "p99 ms", "max ms", "IdP answer p50 ms", "goal", "status"],
        )
        keys = {"role_revoked": "invalidation", "last_role_revoked": "invalidation_last_role"}
        for key, v in inv["variants"].items():
            table.rows.append(
                [
                    v["label"],
                    _ms(v["p50_ms"]),
                    _ms(v["p99_ms"]),
                    _ms(v["max_ms"]),
                    _ms(v["idp_answer_p50_ms"]),
                    *_goal_cell(goals, keys[key]),
                ]
            )
        out.append(table)
    memory = results.get("memory")
    if memory and "rss" in memory:
        table = Table("5. Memory of L1 (fresh process each)", ["measure", "value"])
        table.rows.append(
            ["bytes per L1 entry (tracemalloc, 10k entries)", f"{memory['bytes_per_entry']:,.0f}"]
        )
        for size in memory["rss"].values():
            table.rows.append(
                [
                    f"RSS with {size['entries']:,} entries (growth while filling)",
                    f"{size['rss_mib']:.1f} MiB (+{size['growth_mib']:.1f})",
                ]
            )
        bound = memory["bound"]
        table.rows.append(
            [
                f"L1 of maxsize {bound['maxsize']:,} filled with {bound['filled']:,} users",
                f"len {bound['len']:,} ({goals['l1_bound']['status']})",
            ]
        )
        out.append(table)
    summary = Table("Goals", ["goal", "measured", "target", "status"])
    for goal in results["goals"]:
        value = goal["value"]
        shown = (
            "n/a"
            if value is None
            else (_ms(value) + " ms" if "ms" in goal["goal"] else f"{value:.3f}x")
        )
        summary.rows.append([goal["label"], shown, goal["goal"], goal["status"]])
    for name, error in results.get("errors", {}).items():
        summary.rows.append([f"{name}: not measured ({error})", "", "", "ERROR"])
    out.append(summary)
    return out


def _ms(value: float | None) -> str:
    return "timeout" if value is None or math.isinf(value) else f"{value:.1f}"


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [goal.judge(results) for goal in GOALS]


def _finite(value: Any) -> Any:
    """JSON has no infinity: a timed-out measure is written as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path = RESULTS_JSON) -> None:
    path.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")


def write_markdown(results: dict[str, Any], path: Path = BENCHMARKS_MD) -> None:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "The latest full run of `make bench` (written by `bench/run.py`; "
        "`make bench BENCH_ARGS=--quick` runs fewer rounds and leaves this file alone). Ratios are "
        "measured side by side in the same run, the cases alternating over several rounds "
        "(medians): absolute numbers depend on the machine and its load, ratios much less. "
        "`bench/results.json` and `bench/results.png` hold the same run (not committed). What each "
        "case is: the docstrings of `bench/*.py`.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; {m['os']}",
        f"- Python {m['python']}; commit {m['commit']}; {m['date']}",
        f"- Load average (1 min) at the start: {m['load_average']:.2f}, at the end: "
        f"{results['load_average_end']:.2f} (the machine is shared; ratios are side by side)",
        f"- Duration: {results['elapsed_s']:.0f} s (the main table; the other benchmarks of "
        "`make bench` print their own figures after it)",
        "",
    ]
    for table in tables(results):
        lines += [table.markdown(), ""]
    path.write_text("\n".join(lines))


#: Bar colours in the chart: no goal, goal met, goal missed.
_COLOURS = {"": "#8c8c8c", "PASS": "#55a868", "FAIL": "#c44e52", "SKIP": "#8c8c8c"}


def write_chart(results: dict[str, Any], path: Path = RESULTS_PNG) -> None:
    """Ratios (in-process, over HTTP) and invalidation times as bars, green or red when a goal
    applies, the goals as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    status = {g["key"]: g["status"] for g in results["goals"]}
    panels: list[tuple[str, list[tuple[str, float, str]], list[float], str]] = []
    if "cases" in results.get("inprocess", {}):
        bars = [
            (c["label"], c["ratio"], status.get(k, ""))
            for k, c in results["inprocess"]["cases"].items()
        ]
        panels.append(
            ("In-process (WSGI direct): throughput vs baseline", bars, [0.95, 0.99], "ratio")
        )
    if "cases" in results.get("http", {}):
        bars = [
            (c["label"], c["ratio"], status.get(f"http_{k}", ""))
            for k, c in results["http"]["cases"].items()
        ]
        panels.append(("Over HTTP (gunicorn + wrk): req/s vs bare", bars, [0.98], "ratio"))
    if "variants" in results.get("invalidation", {}):
        keys = {"role_revoked": "invalidation", "last_role_revoked": "invalidation_last_role"}
        bars = [
            (
                f"{v['label']} {q}",
                min(v[f"{q}_ms"], 1e4),
                status.get(keys[k], "") if q == "p99" else "",
            )
            for k, v in results["invalidation"]["variants"].items()
            for q in ("p50", "p99")
        ]
        panels.append(("Invalidation: IdP's answer -> every worker denies", bars, [50.0], "ms"))
    if not panels:
        return
    heights = [1.2 + 0.35 * len(bars) for _, bars, _, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, sum(heights) + 0.8),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (title, bars, goals, unit) in zip(axes[:, 0], panels, strict=True):
        labels = [label for label, _, _ in bars]
        values = [value for _, value, _ in bars]
        ax.barh(labels, values, color=[_COLOURS[s] for _, _, s in bars])
        ax.invert_yaxis()
        ax.set_title(f"{title} (dashed: goal {', '.join(f'{g:g}' for g in goals)})", fontsize=10)
        ax.set_xlabel(unit)
        ax.set_xlim(0, max([*values, *goals]) * 1.15)
        for goal in goals:
            ax.axvline(goal, color="#c44e52", linestyle="--", linewidth=1)
        for y, value in enumerate(values):
            ax.text(
                value,
                y,
                f" {value:.2f}" if unit == "ratio" else f" {value:.1f}",
                va="center",
                fontsize=8,
            )
    m = results["machine"]
    fig.suptitle(
        f"make bench ({results['mode']}), {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
