"""A clone stands on its own: code, docs and CLI help cite the project's docs/, never files outside it."""

import argparse
import subprocess
from pathlib import Path

from trainer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("design.md", "reference/", "../shared", "shared/reference")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if line != "tests/test_standalone.py"]


def test_no_source_or_doc_cites_a_file_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}: {bad}"
        for path in tracked("*.py", "*.md", "*.toml")
        if path.is_file()
        for bad in OUTSIDE
        if bad in path.read_text(errors="replace")
    ]
    assert found == []


def helps(parser: argparse.ArgumentParser, name: str = "inspo"):
    yield name, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from helps(child, f"{name} {sub}")


def test_every_help_speaks_to_users():
    texts = dict(helps(build_parser()))
    assert {"inspo", "inspo train", "inspo data inspect", "inspo serve"} <= set(texts)
    for name, text in texts.items():
        for bad in (*OUTSIDE, "§", "``"):
            assert bad not in text, f"{name} --help contains {bad!r}"
