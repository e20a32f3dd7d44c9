"""``inspo data inspect <log>``: validate a log and print its dataset card (docs/log-format.md).

``inspo data combine --out OUT LOG [LOG ...]``: one training log from several (e.g. the runtime's decision
log plus the earlier logs), repairing the gaps unreported outcomes leave (``trainer/logs/combine.py``)."""

from __future__ import annotations

import argparse
import json

from trainer.commands.argtypes import existing_path, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect and combine logs", description="Work with Parquet logs.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    inspect = data_sub.add_parser(
        "inspect",
        help="validate a log and print its dataset card",
        description="Validate every file of a log (schema, shapes, NaN/Inf, masks, keys) and print the "
        "dataset card: episodes, steps, returns, action histograms, coverage and warnings. "
        "Exits with status 2 and one line naming file, column and row when the log is invalid.",
    )
    inspect.add_argument(
        "log", type=existing_path, help="log directory (with agent_steps/) or one agent_steps Parquet file"
    )
    inspect.add_argument("--json", action="store_true", help="print the card as JSON instead of tables")
    inspect.set_defaults(func=run_inspect)

    combine = data_sub.add_parser(
        "combine",
        help="combine logs (decision log + earlier logs) into one training log",
        description="Write one log from several logs of the same agents (same obs_dim, n_actions, agent_ids "
        "and env_id). Decision-log gaps are repaired: per episode only steps where every agent has a row "
        "are kept, and each run of consecutive t becomes its own episode '<episode_id>~<k>' with t from 0 "
        "(the last step of a cut run is marked truncated). The output is written atomically and loads with "
        "'inspo data inspect' and 'inspo train --data'.",
    )
    combine.add_argument(
        "logs",
        nargs="+",
        type=existing_path,
        metavar="LOG",
        help="input log directories (or agent_steps files)",
    )
    combine.add_argument("--out", required=True, help="log directory to write (must not exist or be empty)")
    combine.add_argument(
        "--state",
        choices=["auto", "env", "joint-obs"],
        default="auto",
        help="auto: keep each log's state when every input has the same state_dim, else rebuild all as the "
        "joint observation (the runtime's definition); env: keep, error if they differ; joint-obs: rebuild",
    )
    combine.add_argument(
        "--min-length", type=positive_int, default=1, help="drop episodes (runs) shorter than this many steps"
    )
    combine.add_argument(
        "--env-id", default=None, help="env id of the combined log (needed when the inputs' env ids differ)"
    )
    combine.set_defaults(func=run_combine)

    from trainer.commands import data_import

    data_import.register(data_sub)


def run_inspect(args: argparse.Namespace) -> int:
    from trainer.logs.stream import stream_card

    card = stream_card(args.log)  # one group of part files at a time: the card of a log larger than RAM
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        print_card(card)
        from trainer.commands.data_import import print_import_card

        print_import_card(args.log)
    return 0


def print_card(card) -> None:
    from rich.table import Table

    from trainer.report import console

    summary = Table(title=f"dataset card: {card.path}", show_header=False)
    summary.add_column("field")
    summary.add_column("value", justify="right")
    rows = [
        ("env", card.env_id),
        ("fingerprint", card.fingerprint[:16]),
        ("files", card.files),
        ("episodes", card.episodes),
        ("steps", card.steps),
        ("agent-steps", card.agent_steps),
        ("agents", len(card.agents)),
        (
            "length mean / min / max",
            f"{card.length['mean']:.4g} / {card.length['min']:.0f} / {card.length['max']:.0f}",
        ),
        (
            "return mean ± std",
            f"{card.returns['mean']:.6g} ± {card.returns['std']:.3g}",
        ),
        ("return min / max", f"{card.returns['min']:.6g} / {card.returns['max']:.6g}"),
        ("behavior_prob known", f"{card.behavior_prob_known:.1%}"),
        ("behavior_prob == 1", f"{card.behavior_prob_one:.1%}"),
    ]
    if card.behavior_prob_near_one is not None:
        rows.append(("choices with behavior_prob > 0.99", f"{card.behavior_prob_near_one:.1%}"))
    if card.joint_coverage is not None:
        rows.append(("joint action coverage", f"{card.joint_coverage:.1%} of {card.joint_actions}"))
    if card.exogenous is not None:
        total = sum(card.exogenous.values())
        rows.append(("exogenous events", f"{total:,} in {len(card.exogenous)} channels"))
    for field, value in rows:
        summary.add_row(field, str(value))
    console.print(summary)
    if card.site_spec:
        from envs.site import summary_rows

        site = Table(
            title=f"site: {card.site_spec['env_id']} (resolved spec, envs/site.py)", show_header=False
        )
        site.add_column("option")
        site.add_column("value")
        for field, value in summary_rows(card.site_spec):
            site.add_row(field, value)
        console.print(site)

    if card.controllers:
        ctl = Table(title="controllers")
        for c in ("controller", "episodes", "return mean"):
            ctl.add_column(c, justify="left" if c == "controller" else "right")
        for c in card.controllers:
            ctl.add_row(c["controller"], str(c["episodes"]), f"{c['return_mean']:.6g}")
        console.print(ctl)

    hist = Table(title="actions per agent (count) and coverage of legal actions")
    hist.add_column("agent")
    for name in card.action_names:
        hist.add_column(name, justify="right")
    hist.add_column("coverage", justify="right")
    hist.add_column("alternatives", justify="right")  # share of choices not the behaviour's clear pick
    for agent in card.agents:
        alternatives = card.alternatives.get(agent)
        hist.add_row(
            agent,
            *map(str, card.action_histogram[agent]),
            f"{card.action_coverage[agent]:.0%}",
            "n/a" if alternatives is None else f"{alternatives:.1%}",
        )
    console.print(hist)

    for warning in card.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")


def run_combine(args: argparse.Namespace) -> int:
    from trainer.logs.combine import combine_logs
    from trainer.report import console, print_table

    result = combine_logs(
        args.out, args.logs, state=args.state, min_length=args.min_length, env_id=args.env_id, progress=True
    )
    print_table(
        [s.row() for s in result.inputs], title=f"combined {len(result.inputs)} logs into {result.out}"
    )
    for note in result.notes:
        console.print(f"[bold]note:[/] {note}")
    console.print(
        f"wrote {result.out}: env {result.meta.env_id}, state_dim {result.meta.state_dim} ({result.state}), "
        f"{result.episodes} episodes, {result.steps} steps, {result.rows} agent-steps, "
        f"{len(result.files)} files"
    )
    return 0
