"""Render the key panels of deploy/grafana/inspo-runtime.json from Prometheus into one PNG.

Query a Prometheus that already scrapes inspo-runtime (the last 30 minutes, or --start/--end):

    .venv/bin/python scripts/render_dashboard.py --prometheus http://prometheus:9090 --since 30m \\
        --out dashboard.png

Or let the script start everything (inspo-runtime with a decision log, Prometheus scraping it every
second with deploy/prometheus/alerts.yml loaded), drive the elevator simulator through gRPC for a
minute with served exploration and reported outcomes, publish a second model version half-way (a hot
reload), then render docs/operations/dashboard.png:

    .venv/bin/python scripts/render_dashboard.py --demo --models /tmp/ops/models --model elevator

Panels (the Grafana dashboard's queries, with a shorter rate window for a short run): request rate by
method and code, server-side Act latency p50/p99 (histogram_quantile), fallback and out-of-bounds share
of decisions, the decision log (rows/s by outcome, drops, queue depth), the served model version, and
the mean reported reward. Needs matplotlib (in the dev environment) and, for --demo, the ``prometheus``
binary (Debian: apt-get install -y prometheus).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

ALERTS = ROOT / "deploy/prometheus/alerts.yml"
DEFAULT_OUT = ROOT / "docs/operations/dashboard.png"
ELEVATOR_ENV = "elevator:cb10x4:downpeak"


# -- Prometheus HTTP API ------------------------------------------------------------------------
class PromAPI:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout) as response:
            body = json.loads(response.read().decode())
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["alerts"]

    def rule_names(self) -> list[str]:
        return [r["name"] for g in self.get("/api/v1/rules")["groups"] for r in g["rules"]]


# -- panels -------------------------------------------------------------------------------------
@dataclass
class Target:
    expr: str  # {w}: rate window, {m}: model regex
    legend: str  # {{label}} placeholders as in Grafana
    scale: float = 1.0
    style: str = "-"
    secondary: bool = False  # plot on the right-hand axis
    zero_if_absent: bool = False  # a counter never incremented has no series: draw it as 0


@dataclass
class Panel:
    title: str
    unit: str
    targets: list[Target]
    secondary_unit: str = ""
    thresholds: tuple[tuple[float, str], ...] = ()  # (value, label): alert threshold lines
    version_steps: bool = False  # y holds the served version number (from the label)
    nonnegative: bool = True  # start the y axis at 0


PANELS = [
    Panel(
        "Requests/s by method and code",
        "requests / s",
        [
            Target(
                'sum by (method, code) (rate(inspo_runtime_requests_total{{model=~"{m}"}}[{w}]))',
                "{{method}} {{code}}",
            )
        ],
    ),
    Panel(
        "Act latency, server side (p50 / p99)",
        "milliseconds",
        [
            Target(
                "histogram_quantile(0.5, sum by (le) (rate(inspo_runtime_request_duration_seconds_bucket"
                '{{method=~"Act|ActStream", model=~"{m}"}}[{w}])))',
                "Act p50",
                scale=1e3,
            ),
            Target(
                "histogram_quantile(0.99, sum by (le) (rate(inspo_runtime_request_duration_seconds_bucket"
                '{{method=~"Act|ActStream", model=~"{m}"}}[{w}])))',
                "Act p99",
                scale=1e3,
            ),
            Target(
                "histogram_quantile(0.99, sum by (le) (rate(inspo_runtime_inference_duration_seconds_bucket"
                '{{model=~"{m}"}}[{w}])))',
                "ONNX inference p99",
                scale=1e3,
                style="--",
            ),
        ],
        thresholds=((10.0, "alert: p99 Act > 10 ms (10 m)"),),
    ),
    Panel(
        "Fallbacks and out-of-bounds observations (share of decisions)",
        "% of agent decisions",
        [
            Target(
                'sum by (reason) (rate(inspo_runtime_fallbacks_total{{model=~"{m}"}}[{w}])) * 100 / scalar('
                'sum(rate(inspo_runtime_agent_decisions_total{{model=~"{m}"}}[{w}])))',
                "fallback: {{reason}}",
                zero_if_absent=True,
            ),
            Target(
                'sum(rate(inspo_runtime_obs_out_of_bounds_total{{model=~"{m}"}}[{w}])) * 100 / scalar('
                'sum(rate(inspo_runtime_agent_decisions_total{{model=~"{m}"}}[{w}])))',
                "obs outside training bounds",
                style="--",
                zero_if_absent=True,
            ),
        ],
        # out-of-bounds rows are shown, not alerted on: drift alerts on the PSI gauge (docs/operations.md)
        thresholds=((5.0, "alert: fallbacks > 5 % (5 m)"),),
    ),
    Panel(
        "Decision log: rows written, drops, queue",
        "rows / s",
        [
            Target(
                "sum by (outcome) (rate(inspo_runtime_decision_log_rows_total[{w}]))",
                "rows/s outcome={{outcome}}",
            ),
            Target(
                "sum(rate(inspo_runtime_decision_log_dropped_total[{w}]))",
                "dropped/s",
                zero_if_absent=True,
            ),
            Target(
                "sum(inspo_runtime_decision_log_queue_depth)",
                "queue depth (right axis)",
                style=":",
                secondary=True,
            ),
        ],
        secondary_unit="items queued",
    ),
    Panel(
        "Served model version (hot reloads)",
        "version",
        [Target('inspo_runtime_model_info{{model=~"{m}"}} == 1', "{{model}}")],
        version_steps=True,
    ),
    Panel(
        "Reported outcomes (ReportOutcome)",
        "mean reward per agent-step",
        [
            Target(
                'sum by (model) (rate(inspo_runtime_reported_reward_sum{{model=~"{m}"}}[{w}])) / sum by (model) '
                '(rate(inspo_runtime_reported_reward_count{{model=~"{m}"}}[{w}]))',
                "mean reward {{model}}",
            ),
            Target(
                'sum by (model) (rate(inspo_runtime_outcomes_reported_total{{model=~"{m}"}}[{w}]))',
                "agent outcomes/s {{model}} (right axis)",
                style=":",
                secondary=True,
            ),
        ],
        secondary_unit="agent outcomes / s",
        nonnegative=False,
    ),
]

LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend_of(template: str, labels: dict) -> str:
    return LABEL.sub(lambda m: labels.get(m.group(1), ""), template).strip()


@dataclass
class Series:
    label: str
    times: list[dt.datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    style: str = "-"
    secondary: bool = False


def fetch(
    prom: PromAPI, panel: Panel, start: float, end: float, step: float, window: str, model: str
) -> list[Series]:
    out = []
    for target in panel.targets:
        expr = target.expr.format(w=window, m=model)
        result = prom.range(expr, start, end, step)
        if not result and target.zero_if_absent:
            n = int((end - start) // step) + 1
            times = [dt.datetime.fromtimestamp(start + i * step, dt.UTC) for i in range(n)]
            label = legend_of(target.legend, {}).replace(":", "").strip() or target.legend
            out.append(Series(f"{label}: none", times, [0.0] * n, target.style, target.secondary))
            continue
        for item in result:
            labels = item["metric"]
            times = [dt.datetime.fromtimestamp(float(t), dt.UTC) for t, _ in item["values"]]
            if panel.version_steps:
                values = [float(labels.get("version", "nan"))] * len(times)
                label = f"{legend_of(target.legend, labels)} v{labels.get('version', '?')}"
            else:
                values = [float(v) * target.scale for _, v in item["values"]]
                label = legend_of(target.legend, labels)
            out.append(Series(label, times, values, target.style, target.secondary))
    return out


def render(
    prom: PromAPI,
    start: float,
    end: float,
    out: Path,
    step: float | None = None,
    window: str = "1m",
    model: str = ".*",
    subtitle: str = "",
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    step = step or max(1.0, (end - start) / 300)
    fig, axes = plt.subplots(3, 2, figsize=(15, 12.5), sharex=True)
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        series = fetch(prom, panel, start, end, step, window, model)
        right = ax.twinx() if any(s.secondary for s in series) else None
        # thicker lines first, so a series that coincides with another (Act and ReportOutcome rates) shows
        for i, s in enumerate(sorted(series, key=lambda s: (s.secondary, s.label))):
            target_ax = right if s.secondary else ax
            width = 1.5 if s.secondary else max(1.2, 3.2 - 0.7 * i)
            if panel.version_steps:
                target_ax.step(s.times, s.values, where="post", label=s.label, linewidth=2.5)
            else:
                finite = [(t, v) for t, v in zip(s.times, s.values, strict=True) if math.isfinite(v)]
                if finite:
                    xs, ys = zip(*finite, strict=True)
                    target_ax.plot(xs, ys, s.style, label=s.label, linewidth=width)
        for (value, text), color in zip(panel.thresholds, ("tab:red", "tab:purple"), strict=False):
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=text)
        if panel.version_steps:
            versions = sorted({v for s in series for v in s.values if math.isfinite(v)})
            if versions:
                ax.set_yticks(versions)
                ax.set_ylim(min(versions) - 0.5, max(versions) + 0.5)
        elif panel.nonnegative:
            ax.set_ylim(bottom=0)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(panel.title, fontsize=12, fontweight="bold")
        ax.set_ylabel(panel.unit)
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            right.set_ylabel(panel.secondary_unit)
            right.set_ylim(0, max(5.0, right.get_ylim()[1]))  # a queue of 0-1 items is not a 0-1 scale
            right.yaxis.set_major_locator(MaxNLocator(integer=True))
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, fontsize=8.5, loc="upper left", framealpha=0.85)
    for ax in axes[-1]:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8, tz=dt.UTC))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.UTC))
        ax.set_xlabel("time (UTC)")
        for tick in ax.get_xticklabels():
            tick.set_rotation(0)
    first = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    last = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%H:%M:%S")
    title = f"inspo-runtime: {first} – {last} UTC, rates over [{window}], step {step:g} s"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=13)
    fig.text(0.5, 0.005, alert_line(prom), ha="center", fontsize=10)
    fig.tight_layout(rect=(0, 0.02, 1, 0.99))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def alert_line(prom: PromAPI) -> str:
    """The footer: how many alert rules Prometheus evaluates and which are pending or firing now."""
    try:
        rules = prom.rule_names()
        active = prom.alerts()
    except (urllib.error.URLError, RuntimeError, OSError) as err:
        return f"alerts: unavailable ({err})"
    if not rules:
        return "alerts: no alert rules loaded in this Prometheus (deploy/prometheus/alerts.yml)"
    if not active:
        return f"alerts at render time: {len(rules)} rules from deploy/prometheus/alerts.yml evaluated, none pending or firing"
    states = ", ".join(f"{a['labels'].get('alertname')} ({a['state']})" for a in active)
    return f"alerts at render time ({len(rules)} rules): {states}"


# -- demo mode: runtime + prometheus + simulator -------------------------------------------------
def start_runtime(models: Path, work: Path, poll_interval_s: float, timeout: float = 60.0):
    """The real inspo-runtime process on loopback ports: default settings plus the decision log and
    polling for new versions (out-of-bounds observations are served and counted, the default)."""
    from runtime.launch import free_port, start_runtime

    config = work / "runtime.toml"
    config.write_text(
        f'model_repository = "{models}"\n'
        'host = "127.0.0.1"\nport = 0\nmetrics_host = "127.0.0.1"\n'
        f"metrics_port = {free_port()}\npoll_interval_s = {poll_interval_s}\n"
        f'[decision_log]\ndir = "{work / "decision-log"}"\noutcome_timeout_s = 30\n'
    )
    return start_runtime(["--config", config], work, timeout=timeout)


def start_prometheus(work: Path, metrics_port: int, timeout: float = 30.0):
    from runtime.launch import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("--demo needs the prometheus server binary (Debian: apt-get install -y prometheus)")
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: inspo-runtime\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}; see {work / 'prometheus.log'}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"prometheus not ready; see {work / 'prometheus.log'}")
        time.sleep(0.2)


def publish_copy(models: Path, name: str) -> int:
    """Publish the newest version again as the next version (write aside, then rename: what
    ``inspo export`` does), so the runtime hot-reloads it."""
    from trainer.served_policies import resolve_model_dir

    source = resolve_model_dir(models / name)
    version = int(source.name) + 1
    tmp = models / name / f".tmp-render-{version}"
    shutil.copytree(source, tmp)
    meta = json.loads((tmp / "policy.json").read_text())
    meta["version"] = version
    (tmp / "policy.json").write_text(json.dumps(meta, indent=2))
    tmp.rename(models / name / str(version))
    return version


def drive(
    url: str, duration: float, hours: float, publish: Callable[[], int] | None, publish_at: float
) -> dict:
    """Elevator episodes through gRPC until ``duration`` seconds have passed: the runtime samples
    (served exploration) and the client reports every step's rewards."""
    from envs.registry import make_env
    from trainer.rollout import run_episode
    from trainer.served_policies import grpc_controller

    env = make_env(ELEVATOR_ENV, hours=hours)
    controller = grpc_controller(url, env, deterministic=False, report_outcomes=True)
    started = time.monotonic()
    episodes, steps, published = 0, 0, None
    seed = 50_000
    try:
        while time.monotonic() - started < duration:
            if publish is not None and published is None and time.monotonic() - started >= publish_at:
                published = publish()
                print(f"  t={time.monotonic() - started:4.0f} s: published version {published}")
            result = run_episode(env, controller, seed)
            episodes, steps, seed = episodes + 1, steps + result.length, seed + 1
            print(
                f"  t={time.monotonic() - started:4.0f} s: episode {episodes} (seed {seed - 1}): "
                f"{result.length} steps, return {result.episode_return:.2f}, served v{controller.model_version}"
            )
    finally:
        controller.close()
    return {"episodes": episodes, "steps": steps, "published": published}


def run_demo(args) -> Path:
    models = Path(args.models).resolve()
    if not (models / args.model).is_dir():
        raise SystemExit(f"{models / args.model} does not exist: export a model first (inspo export)")
    with tempfile.TemporaryDirectory(prefix="render-dashboard-") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # a fresh start (an old TSDB would show the last run's series for 5 minutes), and a private
        # copy of the repository, since the demo publishes a version into it
        repo = work / "models"
        for old in (repo, work / "tsdb", work / "decision-log"):
            shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(models / args.model, repo / args.model)
        runtime = start_runtime(repo, work, poll_interval_s=1.0)
        prom_process = None
        try:
            prom_process, prom_url = start_prometheus(work, runtime.metrics_port)
            print(
                f"runtime {runtime.url} (metrics :{runtime.metrics_port}), prometheus {prom_url}, work {work}"
            )
            time.sleep(3)  # a few idle scrapes before the traffic starts
            start = time.time()
            publish = None if args.no_publish else (lambda: publish_copy(repo, args.model))
            stats = drive(
                f"{runtime.url}/{args.model}", args.duration, args.hours, publish, args.duration / 2
            )
            time.sleep(5)  # let the last scrapes and rule evaluations land
            end = time.time()
            subtitle = (
                f"--demo: {ELEVATOR_ENV} (hours={args.hours}) driven through gRPC, sampled actions, "
                f"outcomes reported: {stats['episodes']} episodes, {stats['steps']} steps"
                + (f"; version {stats['published']} published half-way" if stats["published"] else "")
            )
            out = render(
                PromAPI(prom_url),
                start - 3,
                end,
                Path(args.out),
                step=1.0,
                window=args.window or "10s",
                model=args.model,
                subtitle=subtitle,
            )
        finally:
            if prom_process is not None and prom_process.poll() is None:
                prom_process.terminate()
                try:
                    prom_process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    prom_process.kill()
            code = runtime.stop()
        rows = sorted((work / "decision-log").rglob("*.parquet"))
        print(
            f"runtime exited with {code}; decision log: {len(rows)} part files under {work / 'decision-log'}"
        )
    return out


# -- command line -------------------------------------------------------------------------------
def parse_time(value: str, now: float) -> float:
    """Unix seconds, ISO-8601 (UTC when no zone), or ``now``."""
    if value == "now":
        return now
    try:
        return float(value)
    except ValueError:
        parsed = dt.datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def parse_duration(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value)
    if not match:
        raise argparse.ArgumentTypeError(f"expected e.g. 90s, 30m, 6h, 1d; got {value!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--since", type=parse_duration, default=parse_duration("30m"), help="range: the last ...")
    p.add_argument("--start", help="range start (unix seconds or ISO-8601, UTC by default)")
    p.add_argument("--end", default="now", help="range end (default now)")
    p.add_argument("--step", type=float, help="query step in seconds (default: range / 300, at least 1)")
    p.add_argument("--window", help="rate() window (default 1m; 10s with --demo)")
    p.add_argument("--model-regex", default=".*", help="model label regex (Grafana's $model)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"PNG to write (default {DEFAULT_OUT})")
    demo = p.add_argument_group("--demo: start runtime + prometheus, drive the elevator simulator")
    demo.add_argument("--demo", action="store_true")
    demo.add_argument("--models", help="model repository holding --model (from inspo export)")
    demo.add_argument("--model", default="elevator")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of simulator traffic")
    demo.add_argument(
        "--hours",
        type=float,
        default=1.0,
        help="simulated hours per episode (the model's training episodes: shorter ones compress the "
        "demand curve, which the drift gauge rightly reports, docs/operations.md)",
    )
    demo.add_argument("--no-publish", action="store_true", help="do not publish a new version half-way")
    demo.add_argument("--workdir", help="keep runtime/prometheus files and the decision log here")
    args = p.parse_args(argv)
    if args.demo:
        if not args.models:
            p.error("--demo needs --models")
        out = run_demo(args)
    else:
        if not args.prometheus:
            p.error("give --prometheus URL, or --demo")
        now = time.time()
        end = parse_time(args.end, now)
        start = parse_time(args.start, now) if args.start else end - args.since
        out = render(
            PromAPI(args.prometheus),
            start,
            end,
            Path(args.out),
            step=args.step,
            window=args.window or "1m",
            model=args.model_regex,
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
