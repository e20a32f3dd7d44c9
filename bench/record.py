"""The benchmarks of record in one command: rerun the headline figure of every bench/ script and rewrite
the table at the top of docs/benchmarks.md (between its ``record`` markers), so no figure there can go stale.

    .venv/bin/python bench/record.py                 # every script, then rewrite the table (about 5 min)
    .venv/bin/python bench/record.py --only elevator_speed,log_io --no-write   # a look, docs untouched

Each script runs in its own process, one after the other, exactly as the command shown in its row (the
settings are smaller than a script's default where the full run takes long; the row says so). Its
whole output is kept in ``bench/.cache/record/<script>.log``. A script that fails or prints something
this reader does not recognise gives a row that says so, and the command exits 1. The table lists the
goal of each figure and whether this run met it; the sections below the table explain the misses and hold
the longer runs. Figures depend on the machine and its load: the table states both.

Not rerun here (too long for one command; their own docs hold their figures): ``bench/results.py``
(docs/results.md, its own one command), ``bench/elevator_rollout_bound.py`` (~8 CPU-min per episode,
docs/elevator.md), ``bench/ope_validation.py`` and ``bench/paper_games.py`` (they train dozens of
policies: docs/ope.md, docs/paper-reproduction.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
CACHE = ROOT / "bench" / ".cache" / "record"
BEGIN = "<!-- record:begin (bench/record.py rewrites this table; edit the script, not the table) -->"
END = "<!-- record:end -->"

Row = tuple[str, str, str, str]  # figure, measured, goal, met


class Unreadable(Exception):
    """The script's output lacks a figure this reader expects: a row says so instead of a wrong number."""


def _find(pattern: str, text: str) -> re.Match:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise Unreadable(f"no line matching {pattern!r}")
    return match


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rate(value: float) -> str:
    return f"{value / 1e3:,.0f}k"


def read_log_io(out: str, _: Path) -> list[Row]:
    rows = []
    for case, raw in (
        ("write ours (add_tables)", "write raw pyarrow"),
        ("read ours (load_log)", "read raw pyarrow"),
    ):
        ours = _find(rf"^{re.escape(case)}\s+([\d,]+)\s+([\d.]+)x", out)
        theirs = _find(rf"^{re.escape(raw)}\s+([\d,]+)", out)
        ratio = float(ours.group(2))
        rows.append(
            (
                f"{case.split(' (')[0].replace('ours', 'our')} {case.split('(')[1][:-1]} vs raw pyarrow",
                f"{_rate(float(ours.group(1).replace(',', '')))} vs "
                f"{_rate(float(theirs.group(1).replace(',', '')))} agent-steps/s = **{ratio:.2f}×**",
                "≥ 0.5×",
                _yes(ratio >= 0.5),
            )
        )
    return rows


def read_elevator_speed(out: str, _: Path) -> list[Row]:
    episode = _find(
        r"([\d.]+) simulated h: median of (\d+) episodes ([\d.]+) s cpu \(([\d.]+)-([\d.]+)\), ([\d.]+) s wall",
        out,
    )
    hours, n, cpu, lo, hi = (float(episode.group(i)) for i in (1, 2, 3, 4, 5))
    per_hour = cpu / hours
    batched = _find(r"^batched B=1024 \(numpy core\)\s+([\d,]+)\s+([\d,]+)", out)
    wall, cpu_rate = (float(batched.group(i).replace(",", "")) for i in (1, 2))
    return [
        (
            f"one elevator episode ({hours:.2f} simulated h, random legal actions) through the ParallelEnv, "
            "process CPU time",
            f"{cpu:.2f} s (median of {n:.0f}, {lo:.2f}–{hi:.2f}) = **{per_hour:.2f} s per simulated hour**; "
            f"wall {float(episode.group(6)):.2f} s",
            "≤ 1 s per simulated hour",
            _yes(per_hour <= 1.0),
        ),
        (
            "batched numpy core, B = 1024 buildings",
            f"**{_rate(cpu_rate)}** env-ticks per CPU-second ({_rate(wall)} per wall second)",
            "≥ 250k",
            _yes(cpu_rate >= 250e3),
        ),
    ]


def read_sumo_speed(out: str, _: Path) -> list[Row]:
    row = _find(r"^\| grid4x4 \| (\d+) \| (\d+) \| \d+ \| (-?[\d.]+) % \| ([\d.]+) % \| ([\d.]+) % \|", out)
    outside = float(row.group(4))
    speedup = _find(r"^\| 2 \| [\d.]+ \| \d+ \| [\d.]+ \| ([\d.]+)x \|", out)
    return [
        (
            "SUMO grid4x4: share of env.step time outside SUMO (same run)",
            f"**{outside:.1f} %** (outside `simulationStep` only: {float(row.group(5)):.1f} %)",
            "≤ 10 %",
            _yes(outside <= 10.0),
        ),
        ("SUMO collection, 2 processes vs 1", f"**{float(speedup.group(1)):.2f}×**", "–", "–"),
    ]


def read_serving(_: str, figures: Path) -> list[Row]:
    r = json.loads(figures.read_text())
    unary = r["unary_1_agent_us"]
    ours, empty, minimal = unary["runtime"][0], unary["empty_handler"][0], unary["minimal_model_handler"][0]
    peak = {
        k: max(v["decisions_per_s"] for v in r[k].values())
        for k in ("packed_64_agents", "packed_64_agents_minimal")
    }
    batch1 = r["inference_us"]["1"] if "1" in r["inference_us"] else r["inference_us"][1]
    wrapper = batch1["wrapper"][0] / batch1["session_run"][0]
    return [
        (
            "serving: unary Act p50, 1 agent, vs an empty grpc.aio handler",
            f"{ours:.0f} vs {empty:.0f} µs = **{ours / empty:.2f}×** (a minimal model handler: {minimal / empty:.2f}×)",
            "≤ 1.15×",
            _yes(ours / empty <= 1.15),
        ),
        (
            "serving: 64 agents/request, peak over 1–16 clients",
            f"**{_rate(peak['packed_64_agents'])}** decisions/s (minimal model handler "
            f"{_rate(peak['packed_64_agents_minimal'])})",
            "≥ 150k",
            _yes(peak["packed_64_agents"] >= 150e3),
        ),
        (
            "serving: inference wrapper vs raw `session.run`, batch 1",
            f"**{wrapper:.2f}×**",
            "≤ 1.2×",
            _yes(wrapper <= 1.2),
        ),
    ]


def read_train_speed(out: str, _: Path) -> list[Row]:
    found = re.findall(r"^\| (\d+) \| [\d.]+ \| [\d.]+ \| ([\d.]+)x \| (\d+)x \|", out, re.MULTILINE)
    if not found:
        raise Unreadable("no result rows")
    ratios = {int(n): (float(r), int(goal)) for n, r, goal in found}
    return [
        (
            "InSPO iteration vs one BC step, N = " + " / ".join(map(str, ratios)),
            " / ".join(f"**{r:.1f}×**" for r, _ in ratios.values()),
            "≤ (N+3)× = " + " / ".join(str(g) for _, g in ratios.values()),
            _yes(all(r <= g for r, g in ratios.values())),
        )
    ]


def read_scale(_: str, figures: Path) -> list[Row]:
    r = json.loads(figures.read_text())
    serial = 1.0 / r["serial_s_per_episode"]
    return [
        (
            f"collection, {r['workers']}-process pool vs one process; Ray actors vs the pool (elevator)",
            f"pool **{r['pool_episodes_per_s'] / serial:.2f}×** serial; Ray **{r['ray_over_pool']:.2f}×** the pool"
            f"; logs byte-identical: {'yes' if r['byte_identical'] else 'NO'}",
            "identical logs",
            _yes(bool(r["byte_identical"])),
        )
    ]


def read_headroom(out: str, _: Path) -> list[Row]:
    ratios = [float(m) for m in re.findall(r"etd\+park[^│|]*[│|][^│|]*[│|]\s*([\d.]+)x", out)]
    if not ratios:
        raise Unreadable("no 'etd+park' rows")
    return [
        (
            "best ETD + parking stitch vs ETD, avg wait, down-peak (tuning seeds)",
            f"**{min(ratios):.2f}×** ETD",
            "(design aid)",
            "–",
        )
    ]


def read_traffic_baselines(out: str, _: Path) -> list[Row]:
    found = re.findall(
        r"^\| grid4x4 \| (\S+) \| ([\d.]+) ± [\d.]+ \| [^|]+ \| ([\d.]+|-) \| ([^|]+) \|", out, re.MULTILINE
    )
    if not found:
        raise Unreadable("no grid4x4 rows")
    measured = "; ".join(
        f"{c} **{float(d):.1f} s** (reference {ref}, {dev.strip()})" for c, d, ref, dev in found
    )
    close = all(ref != "-" and abs(float(d) / float(ref) - 1) <= 0.1 for _, d, ref, _ in found)
    return [
        (
            "SUMO grid4x4 mean trip delay per controller, 3600 s, vs sumo-rl's published figures (docs/traffic.md)",
            measured,
            "within 10 % of the reference",
            _yes(close),
        )
    ]


@dataclass
class Bench:
    name: str  # bench/<name>.py
    args: list[str]
    read: Callable[[str, Path], list[Row]]
    settings: str = ""  # how these settings differ from the script's full run
    json_out: bool = False  # pass --json <cache file> and read the figures from it
    timeout: int = 600


BENCHES = [
    Bench("log_io", ["--episodes", "500", "--repeat", "2", "--step-episodes", "50"], read_log_io,
          "500 of the full 2,000 episodes"),
    Bench("elevator_speed", ["--episodes", "3", "--batches", "1024"], read_elevator_speed),
    Bench("sumo_speed", ["--nets", "grid4x4", "--seconds", "900", "--repeats", "1", "--collect-episodes", "4",
                         "--collect-seconds", "300"], read_sumo_speed,
          "grid4x4 only, 900 s and 1 repeat (full: grid4x4 and cologne8, 1800 s, best of 3)"),
    Bench("serving", ["--quick"], read_serving, "--quick: 1,500 calls per latency figure (full: 5,000)",
          json_out=True),
    Bench("train_speed", ["--repeats", "10"], read_train_speed, "median of 10 (full: 30)"),
    Bench("scale", ["--episodes", "8", "--serial-episodes", "2"], read_scale, "8 episodes (full: 24)",
          json_out=True),
    Bench("elevator_headroom", ["--profiles", "downpeak", "--seeds", "2"], read_headroom,
          "down-peak, 2 tuning seeds (full: 3 profiles, 8 seeds)"),
    Bench("traffic_baselines", ["--nets", "grid4x4", "--seeds", "0", "--no-native",
                                "--out", "bench/.cache/record/traffic_baselines"], read_traffic_baselines,
          "grid4x4, seed 0 (full: 3 nets, seeds 0-2)"),
]  # fmt: skip


def run(bench: Bench) -> tuple[list[Row], float, bool]:
    """Run one script; its rows, the wall seconds it took, and whether its figures were read."""
    CACHE.mkdir(parents=True, exist_ok=True)
    figures = CACHE / f"{bench.name}.json"
    argv = [sys.executable, str(ROOT / "bench" / f"{bench.name}.py"), *bench.args]
    if bench.json_out:
        argv += ["--json", str(figures)]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}  # wide tables: one row per line
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=bench.timeout)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}{err.stderr or ''}\ntimed out after {bench.timeout} s", -1
    seconds = time.perf_counter() - started
    log = CACHE / f"{bench.name}.log"
    log.write_text(output)
    where = os.path.relpath(log, ROOT)
    if code != 0:
        return [("(failed)", f"exit {code}, see `{where}`", "", "**failed**")], seconds, False
    try:
        return bench.read(output, figures), seconds, True
    except (Unreadable, KeyError, ValueError, OSError) as err:
        return [("(unreadable)", f"{err}; see `{where}`", "", "**failed**")], seconds, False


def table(
    results: list[tuple[Bench, list[Row], float]], started: str, load: tuple[float, float], wall: float
) -> str:
    lines = [
        BEGIN,
        f"## Benchmarks of record ({started} UTC)",
        "",
        f"Regenerated by `.venv/bin/python bench/record.py` in {wall / 60:.1f} min on {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} before and {load[1]:.1f} after (other jobs shared the machine when it is "
        "above the core count). Each row is one script run once with the command shown; its full output is in "
        "`bench/.cache/record/`. The sections below explain the misses and hold the longer runs. Not rerun "
        "here (each trains or simulates for tens of minutes; their own docs hold their figures): "
        "`bench/results.py` (docs/results.md), `bench/paper_games.py` (docs/paper-reproduction.md), "
        "`bench/ope_validation.py` (docs/ope.md), `bench/elevator_rollout_bound.py` (docs/elevator.md).",
        "",
        "| script (command) | figure | measured | goal | met |",
        "|---|---|---|---|---|",
    ]
    for bench, rows, seconds in results:
        command = " ".join([f"bench/{bench.name}.py", *bench.args])
        first = f"`{command}` ({seconds:.0f} s" + (f"; {bench.settings})" if bench.settings else ")")
        for i, (figure, measured, goal, met) in enumerate(rows):
            lines.append(f"| {first if i == 0 else ''} | {figure} | {measured} | {goal} | {met} |")
    lines += ["", END]
    return "\n".join(lines)


def rewrite(doc: Path, block: str) -> None:
    """Replace the marked block, or put it after the document's title paragraph the first time."""
    text = doc.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        title, sep, rest = text.partition("\n\n")
        intro, sep2, rest = rest.partition("\n\n")
        text = title + sep + intro + sep2 + block + "\n\n" + rest
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma list of script names (e.g. elevator_speed,log_io)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md")
    args = parser.parse_args()
    chosen = BENCHES
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {b.name for b in BENCHES})
        if unknown:
            parser.error(f"--only: unknown script(s) {unknown}; known: {[b.name for b in BENCHES]}")
        chosen = [b for b in BENCHES if b.name in names]
    started, load_before, t0 = (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        os.getloadavg()[0],
        time.perf_counter(),
    )
    results, ok = [], True
    for bench in chosen:
        print(f"bench/{bench.name}.py ...", end=" ", flush=True)
        rows, seconds, read = run(bench)
        ok &= read
        print(f"{seconds:.0f} s" + ("" if read else f" FAILED: {rows[0][1]}"), flush=True)
        results.append((bench, rows, seconds))
    block = table(results, started, (load_before, os.getloadavg()[0]), time.perf_counter() - t0)
    print(block)
    if not args.no_write and not args.only:
        rewrite(DOC, block)
        print(f"rewrote the table at the top of {DOC.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
