"""docs/results.md's acceptance verdicts (bench/results.py): a target met only by leaving trips unfinished
is not met."""

from bench.results import guard_failures, overview_row

METRICS = {"delay": "trip delay (s)", "delay_all": "delay incl. unfinished (s)"}
MAX_PRESSURE = {"label": "max-pressure", "runs": 1, "delay": [20.67, 1.3], "delay_all": [20.46, 1.3]}
# cologne8's first logged-experiment run: lower trip delay, twice the delay once unfinished trips count
HOLDS_TRAFFIC_BACK = {"label": "inspo", "runs": 3, "delay": [16.77, 1.55], "delay_all": [41.14, 10.1]}
FAIR = {"label": "inspo", "runs": 3, "delay": [19.9, 0.2], "delay_all": [19.8, 0.2]}
CONFIG = {"bench": {"env": "sumo:cologne8", "target_factor": 0.98}}


def test_guard_names_the_metric_a_policy_bought_its_trip_delay_with():
    failures = guard_failures(HOLDS_TRAFFIC_BACK, MAX_PRESSURE, METRICS, 0.98)
    assert failures == ["delay incl. unfinished (s) 41.14 vs 20.46"]
    assert guard_failures(FAIR, MAX_PRESSURE, METRICS, 0.98) == []


def test_overview_does_not_count_a_target_met_by_unfinished_trips():
    held = overview_row("traffic-cologne8-experiment", CONFIG, [MAX_PRESSURE, HOLDS_TRAFFIC_BACK])
    fair = overview_row("traffic-cologne8-experiment", CONFIG, [MAX_PRESSURE, FAIR])
    assert held.rstrip().endswith("| **no** |")
    assert fair.rstrip().endswith("| **yes** |")


def test_a_reference_or_logged_experiment_row_is_never_the_best_heuristic():
    """A rule the log never saw (``reference etd-park``), or the experiment that made the log, can be lower
    than every logged rule without lowering the target InSPO is judged against."""
    reference = {
        **MAX_PRESSURE,
        "label": "reference etd-park",
        "delay": [10.0, 0.1],
        "delay_all": [10.0, 0.1],
    }
    logged = {**reference, "label": "logged max-pressure@exp=0.2"}
    with_them = overview_row("traffic-cologne8-experiment", CONFIG, [MAX_PRESSURE, reference, logged, FAIR])
    assert with_them == overview_row("traffic-cologne8-experiment", CONFIG, [MAX_PRESSURE, FAIR])
    assert "**yes**" in with_them
