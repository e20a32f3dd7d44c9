"""``inspo data import hires EVENTS... --detectors CONFIG [--phase-map MAP] --out LOG``.

Controller hi-res event logs (ATSPM layout) -> a training log with the SUMO env's ``detectors``
observation (trainer/hires/, docs/traffic.md "Hi-res event logs")."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.commands.argtypes import existing_file, float_range


def register(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser(
        "import", help="import logs other systems write", description="Import foreign logs."
    )
    kinds = p.add_subparsers(dest="import_kind", required=True, metavar="KIND")
    hires = kinds.add_parser(
        "hires",
        help="controller hi-res event logs (ATSPM / Indiana enumerations) -> a training log",
        description="One agent per DeviceId; a decision every --delta-time s whose action is the green that "
        "serves the next interval; the detector observation (per phase: stop-bar and advance occupancy and "
        "actuations, time in phase, time since each phase was served); reward: minus occupied loop-seconds "
        "per second; behavior_prob unknown. Unknown codes, out-of-order rows, clock gaps, detectors missing "
        "from the configuration and phases that never turn green are counted and located in the import card "
        "(LOG/hires_card.json). See docs/traffic.md.",
    )
    hires.add_argument(
        "events",
        nargs="+",
        type=existing_file,
        metavar="EVENTS",
        help="CSV or Parquet with TimeStamp, DeviceId, EventId, Parameter (each file its own episodes)",
    )
    hires.add_argument(
        "--detectors",
        required=True,
        type=existing_file,
        help="detector configuration: CSV or Parquet with DeviceId, Phase, Parameter (channel), Function; "
        "a detector serving several phases has a row per phase",
    )
    hires.add_argument(
        "--phase-map",
        type=existing_file,
        default=None,
        help="CSV or Parquet with DeviceId, Phase, Action (NEMA phase -> the agent's action; concurrent phases "
        "may share an action). Default: each phase that turns green or has a detector, in number order",
    )
    hires.add_argument("--out", required=True, help="log directory to write (must not exist or be empty)")
    hires.add_argument(
        "--delta-time", type=float_range(0.0, low_open=True), default=5.0, help="seconds between decisions"
    )
    hires.add_argument(
        "--min-green-s",
        type=float_range(0.0),
        default=0.0,
        help="seconds after a change begins before another switch is legal (masks; 0: always legal)",
    )
    hires.add_argument(
        "--max-gap-s",
        type=float_range(0.0, low_open=True),
        default=60.0,
        help="a silence longer than this is a clock gap: reported, and a new episode starts after it",
    )
    hires.add_argument("--env-id", default="hires", help="env id recorded in the log (e.g. sumo:grid4x4)")
    hires.set_defaults(func=run_import_hires)


def print_import_card(log: str) -> None:
    """An imported log's import findings (LOG/hires_card.json), under its dataset card."""
    import json

    from trainer.report import console

    path = Path(log) / "hires_card.json"
    if not path.is_file():
        return
    card = json.loads(path.read_text())
    console.print(
        f"imported from hi-res events: {card['events']} events, {card['episodes']} episode(s); "
        f"decision model: {card['decision_model']}; reward: {card['reward']}"
    )
    for kind, entries in card["findings"].items():
        for entry in entries:
            detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "note")
            console.print(f"[bold yellow]import:[/] {kind.replace('_', ' ')}: {detail}")


def run_import_hires(args: argparse.Namespace) -> int:
    from trainer.hires.importer import ImportOptions, import_hires
    from trainer.report import console

    options = ImportOptions(args.delta_time, args.min_green_s, args.max_gap_s, args.env_id)
    card = import_hires(
        [Path(p) for p in args.events],
        Path(args.detectors),
        args.phase_map and Path(args.phase_map),
        Path(args.out),
        options,
    )
    console.print(
        f"wrote {args.out}: {card.episodes} episode(s), {card.steps} decisions, {card.events} events "
        f"({sum(card.unknown_codes.values())} with unknown codes skipped); card: {args.out}/hires_card.json"
    )
    for device, counts in card.decisions_per_action.items():
        phases = card.phase_map.get(device, {})
        names = {a: "+".join(str(p) for p, b in sorted(phases.items()) if b == a) for a in counts}
        console.print(
            f"device {device}: decisions per action (phases) "
            + ", ".join(f"{a} ({names[a]}): {c}" for a, c in sorted(counts.items()))
        )
    for warning in card.warnings():
        console.print(f"[bold yellow]warning:[/] {warning}")
    return 0
