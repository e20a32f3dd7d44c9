"""``inspo ope``: estimate a candidate's value from a log before it controls anything (docs/ope.md)."""

from __future__ import annotations

import argparse
import json

from trainer.commands.argtypes import (
    existing_path,
    float_range,
    non_negative_int,
    positive_float,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ope",
        help="off-policy evaluation of a policy on a log (WIS + FQE, bootstrap intervals, ESS)",
        description="Per-decision weighted importance sampling with the logged behavior_prob (multi-agent: "
        "product of per-agent ratios, in log space) and fitted-Q evaluation, with bootstrap intervals over "
        "episodes and the effective sample size. Warns when the log cannot support the estimate.",
    )
    p.add_argument(
        "--policy", required=True, help="run dir (:sample for stochastic), ONNX model dir, or rule spec"
    )
    p.add_argument("--data", required=True, type=existing_path, help="log directory (docs/log-format.md)")
    p.add_argument(
        "--gamma",
        type=float_range(0.0, 1.0, low_open=True),
        default=1.0,
        help="discount (1 = the episode return, as inspo eval)",
    )
    p.add_argument(
        "--bootstrap", type=non_negative_int, default=200, help="bootstrap resamples of the episodes"
    )
    p.add_argument("--clip-step", type=positive_float, default=None, help="cap on the per-step joint ratio")
    p.add_argument("--clip-weight", type=positive_float, default=None, help="cap on the cumulative weight")
    p.add_argument(
        "--ess-threshold",
        type=float_range(0.0),
        default=0.0,
        help="flag WIS below this ESS (default max(10, 2%%))",
    )
    p.add_argument("--no-fqe", action="store_true", help="skip fitted-Q evaluation")
    p.add_argument("--fqe-iterations", type=positive_int, default=40, help="Bellman backups of FQE")
    p.add_argument(
        "--no-fqe-check",
        action="store_true",
        help="skip FQE's held-out check (a second fit; FQE is then never trusted)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of FQE")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.set_defaults(func=run)


def _fmt(value, ci) -> str:
    if value is None or value != value:
        return "n/a"
    if ci is None or ci[0] != ci[0]:
        return f"{value:.4g}"
    return f"{value:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"


def _trust(flag: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[flag]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainer.ope import FQEConfig, evaluate_offline
    from trainer.policies import split_mode
    from trainer.report import print_table

    path, _ = split_mode(args.policy)
    if "/" in path and not Path(path).exists():  # rule specs have no '/': this was meant as a directory
        raise FileNotFoundError(f"--policy {path}: no such run directory or ONNX model dir")

    report = evaluate_offline(
        args.policy,
        args.data,
        gamma=args.gamma,
        bootstrap=args.bootstrap,
        clip_step=args.clip_step,
        clip_weight=args.clip_weight,
        ess_threshold=args.ess_threshold,
        run_fqe=not args.no_fqe,
        fqe_config=FQEConfig(iterations=args.fqe_iterations, seed=args.seed),
        seed=args.seed,
        check_fqe=not args.no_fqe_check,
    )
    rows = [
        {
            "estimator": "logged behaviour (on-policy mean)",
            "value [95% CI]": _fmt(report.behavior_value, report.behavior_ci),
        },
        {
            "estimator": "PDWIS",
            "value [95% CI]": _fmt(report.wis, report.wis_ci),
            "trusted": _trust(report.wis_trustworthy),
        },
        {
            "estimator": "FQE",
            "value [95% CI]": _fmt(report.fqe, report.fqe_ci),
            "trusted": _trust(report.fqe_trustworthy),
        },
    ]
    print_table(
        rows,
        title=f"OPE of {report.policy} on {report.data} ({report.episodes} episodes, gamma={report.gamma})",
    )
    if report.ess is not None:
        print(
            f"effective sample size {report.ess:.1f} of {report.episodes} episodes (min over steps "
            f"{report.ess_min:.1f}); {report.matched_episodes} episodes keep a non-zero weight"
        )
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    if report.estimate:
        print(f"trusted estimate: {report.estimate.upper()} (docs/ope.md's decision rule applies)")
    else:
        print("no trusted estimate: do not rank or drop candidates on these numbers (docs/ope.md)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=2, allow_nan=False)
        print(f"wrote {args.json}")
    return 0
