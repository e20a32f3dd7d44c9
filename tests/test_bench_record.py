"""bench/record.py: it reads a real script's figures, and rewrites only its marked block of the doc."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import record  # noqa: E402


def test_reads_the_elevator_figures_from_a_real_run(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "CACHE", tmp_path)  # keep the record run's own logs
    bench = record.Bench(
        "elevator_speed",
        ["--episodes", "1", "--single-ticks", "200", "--ticks", "4", "--batches", "1024"],
        record.read_elevator_speed,
    )
    rows, _, read = record.run(bench)
    assert read, rows
    (episode, batched) = rows
    assert "s per simulated hour" in episode[2] and episode[3] in ("yes", "**no**")
    assert "env-ticks per CPU-second" in batched[1]
    assert "simulated h: median of 1 episodes" in (tmp_path / "elevator_speed.log").read_text()


def test_rewrite_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nIntro.\n\n## Older run\n\nkept\n")
    for figure in ("first", "second"):
        block = "\n".join([record.BEGIN, f"| {figure} |", record.END])
        record.rewrite(doc, block)
    text = doc.read_text()
    assert text.count(record.BEGIN) == 1 and "| second |" in text and "| first |" not in text
    assert text.startswith("# Benchmarks\n\nIntro.\n\n" + record.BEGIN) and text.endswith(
        "## Older run\n\nkept\n"
    )
