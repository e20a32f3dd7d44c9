"""bench/advantage_truth.py: the truth's reliability figures, and the traffic truth's paired rollouts."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from subprocess_helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import advantage_truth  # noqa: E402


def _rows(signal: np.ndarray, noise: float, futures: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, x in enumerate(signal):
        diff = x + noise * rng.standard_normal(futures)
        rows.append(
            {"truth": diff.mean(), "se": diff.std(ddof=1) / np.sqrt(futures), "truth_even": diff[0::2].mean(),
             "truth_odd": diff[1::2].mean(), "futures": diff.tolist(), "est": x, "action": 1 + k % 2}
        )  # fmt: skip
    return rows


def test_truth_reliability_and_noise_separate_state_signal_from_simulation_noise():
    """Pairs whose truth differs from state to state give a reliability and signal share near 1; pure
    noise gives both near 0 (the elevator truth's case), and its SE shrinks like 1/sqrt(futures)."""
    signal = np.random.default_rng(0).standard_normal(200)
    clear_rows, noise_rows = _rows(signal, 0.1, 8, 1), _rows(np.zeros(200), 1.0, 8, 2)
    clear = advantage_truth.summarize(clear_rows, ["est"])["truth"]
    noise = advantage_truth.summarize(noise_rows, ["est"])["truth"]
    assert clear["reliability"] > 0.95 and abs(noise["reliability"]) < 0.3
    assert advantage_truth.truth_noise(clear_rows)["signal_share"] > 0.95
    spread = advantage_truth.truth_noise(noise_rows)
    assert abs(spread["signal_share"]) < 0.3
    se = spread["mean_se_by_futures"]
    assert list(se) == ["2", "4", "8"] and se["2"] > se["4"] > se["8"]
    assert se["8"] == pytest.approx(1 / np.sqrt(8), rel=0.15)


def test_an_estimator_that_reproduces_itself_but_not_the_truth_is_told_apart_from_a_noisy_one():
    """Two logs' estimates: one estimator sees a wrong but stable quantity (reliable, far below the joint
    ceiling), the other sees the truth through noise (less reliable, near its ceiling)."""
    rng = np.random.default_rng(3)
    signal, wrong = rng.standard_normal(300), rng.standard_normal(300)
    first, second = _rows(signal, 0.1, 8, 4), _rows(signal, 0.1, 8, 5)
    for rows in (first, second):
        for k, r in enumerate(rows):
            r["biased"] = wrong[k] + 0.1 * rng.standard_normal()
            r["noisy"] = signal[k] + rng.standard_normal()
    table = advantage_truth.summarize(first, ["biased", "noisy"])
    advantage_truth.estimator_reliability(table, first, second)
    biased, noisy = table["biased"], table["noisy"]
    assert biased["replicate_corr"] > 0.95 and abs(biased["corr"]) < 0.2 and biased["joint_ceiling"] > 0.95
    assert noisy["replicate_corr"] == pytest.approx(0.5, abs=0.12)
    assert noisy["joint_ceiling"] == pytest.approx(np.sqrt(0.5), abs=0.1)
    assert noisy["corr"] == pytest.approx(noisy["joint_ceiling"], abs=0.12)
    assert noisy["replicate_truth_corr"] == pytest.approx(noisy["corr"], abs=0.15)


def test_action_share_tells_a_pooled_effect_per_action_from_state_to_state_effects():
    actions = np.arange(400) % 2
    noise = np.random.default_rng(6).standard_normal(400)
    assert advantage_truth.action_share(np.where(actions == 1, 1.0, -1.0), actions) == pytest.approx(1.0)
    assert advantage_truth.action_share(noise, actions) < 0.05
    assert advantage_truth.action_share(np.where(actions == 1, 1.0, -1.0) + noise, actions) == pytest.approx(
        0.5, abs=0.1
    )


@pytest.mark.sumo
@pytest.mark.skipif(not importlib.util.find_spec("libsumo"), reason="SUMO (traffic extra) not installed")
def test_traffic_truth_is_paired_and_reproducible():
    """Every legal phase of the snapshot's intersection gets its futures; the same job gives the same
    values (exact restore), and the futures differ (the behaviour's own sampling after the snapshot)."""
    code = """
        import traffic_truth as tt
        job = (20000, 1, 1, 3, 0.9, 30_000_000, tt.BEHAVIOUR, "idle")
        a, b = tt.episode_truth(job), tt.episode_truth(job)
        (snap,) = a["snapshots"]
        values = snap["values"]
        legal = [int(x) for x in snap["mask"].nonzero()[0]]
        print("legal", sorted(values) == legal and len(legal) > 1 and snap["dist"][legal].sum() > 0.999)
        print("same", all((values[k] == b["snapshots"][0]["values"][k]).all() for k in values))
        print("futures differ", any(len(set(v.tolist())) > 1 for v in values.values()))
        print("time", 100 <= snap["t"] <= 900 - 60 * 5, "neighbours", len(a["neighbors"]))
        # --decisions keep: a decision where the keep alternative randomises max-pressure's switch, so the
        # behaviour splits evenly between keeping the green and the rule's phase (0.45 + 0.05 each)
        keep = tt.episode_truth((20000, 1, 1, 2, 0.9, 30_000_000, "max-pressure@exp=0.1@keep=0.5", "keep"))
        (ks,) = keep["snapshots"]
        print("keep split", sorted(ks["dist"].round(6).tolist())[-2:] == [0.5, 0.5])
        """
    proc = run_python(code, timeout=180, extra_paths=(ROOT / "bench",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "legal True" in proc.stdout and "same True" in proc.stdout
    assert "futures differ True" in proc.stdout and "time True neighbours 16" in proc.stdout
    assert "keep split True" in proc.stdout


def test_results_page_shows_each_estimators_reliability_beside_its_correlation():
    """bench/results.py's estimator section: the --replicate table names each estimator with its
    log-against-log reliability, joint ceiling, both logs' correlations and its action share."""
    from bench.results import replicate_lines

    rows = [
        {"behaviour_prob": 0.2, "action": 1 + k % 2, "truth": float(k), "est": float(k % 2)}
        for k in range(10)
    ]
    summary = {"truth": {"reliability": 0.5}, "est": {"corr": 0.3}}
    data = {"summary": {"supported": summary}, "rows": rows, "replicate_log": "LOG-B"}
    assert replicate_lines(data) == []  # no second log: no table
    advantage_truth.estimator_reliability(summary, rows, rows)  # the same estimates twice: reliability 1
    lines = replicate_lines(data)
    assert "`LOG-B`" in lines[1]
    assert (
        lines[-1]
        == f"| est | +1.000 | 0.71 | +0.300 | {summary['est']['replicate_truth_corr']:+.3f} | 100% |"
    )


def test_precision_aware_correlations_are_not_set_by_the_noisiest_pairs():
    """A few pairs whose truth is very noisy (a congested peak) drown an estimator that is right on the
    rest in the plain correlation; weighted by 1/SE^2, or over the measurable pairs, it shows again. An
    estimator that is wrong on the measurable pairs stays wrong by every figure."""
    rng = np.random.default_rng(3)
    signal = rng.standard_normal(40) * 1e-3
    rows = _rows(signal, 1e-3, 32, 4) + _rows(np.zeros(8), 0.2, 32, 5)  # 8 pairs with SE ~ 0.035
    for r, x in zip(rows, np.r_[signal, np.zeros(8)], strict=True):
        r["est"], r["wrong"] = x, -x
    table = advantage_truth.summarize(rows, ["est", "wrong"], measurable_se=0.002)
    truth, est, wrong = table["truth"], table["est"], table["wrong"]
    assert truth["n_measurable"] == 40 and truth["reliability_measurable"] > 0.8
    assert truth["reliability"] < truth["reliability_weighted"]
    assert est["corr"] < 0.3 < 0.9 < est["corr_measurable"] and est["corr_weighted"] > 0.9
    assert wrong["corr_measurable"] < -0.9 and wrong["corr_weighted"] < -0.9
    # an estimate that knows only which alternative it is: correlated overall, not within an alternative
    actions = np.array([r["action"] for r in rows])
    for r in rows:
        r["pooled"] = 1e-3 * (r["action"] - 1.5)
        r["truth"] += 2e-3 * (r["action"] - 1.5)  # the truth has the same pooled effect per alternative
    pooled = advantage_truth.summarize(rows, ["pooled", "est"], measurable_se=0.002)
    assert (
        pooled["pooled"]["corr_measurable"] > 0.5 and abs(pooled["pooled"]["corr_measurable_within"]) < 1e-9
    )
    assert pooled["est"]["corr_measurable_within"] > 0.9 and pooled["truth"]["action_share_measurable"] > 0.3
    assert set(actions) == {1, 2}
    weights = advantage_truth.precision_weights(np.array([0.1, 0.2]))
    assert np.allclose(weights, [100.0, 25.0])
    x = rng.standard_normal(50)
    assert advantage_truth._corr(x, 2 * x + 1, np.ones(50)) == pytest.approx(1.0)
    assert advantage_truth._corr(x, x**2, np.ones(50)) == pytest.approx(advantage_truth._corr(x, x**2))


def test_held_out_states_can_come_from_tuning_seeds_nothing_was_chosen_on():
    """--tuning-skip K takes the held-out episodes after the first K tuning seeds (a confirmation set),
    and keys the cached truth apart from the first set's; without it the key is the one kept before."""
    from types import SimpleNamespace

    from envs.seeds import tuning_seeds

    first = SimpleNamespace(tuning_episodes=2, tuning_skip=0)
    second = SimpleNamespace(tuning_episodes=2, tuning_skip=2)
    assert advantage_truth.held_out_seeds(first) == tuning_seeds(2)
    assert advantage_truth.held_out_seeds(second) == tuning_seeds(4)[2:]
    config = SimpleNamespace(discount="time", horizon_s=120.0, gamma=0.99)
    common = dict(env=advantage_truth.ENV, every=40, states=40, futures=32, behaviour="etd@exp=0.2",
                  decisions="idle")  # fmt: skip
    path_first, _ = advantage_truth.truth_cache(SimpleNamespace(**common, tuning_episodes=2), config)
    path_zero, _ = advantage_truth.truth_cache(SimpleNamespace(**common, **vars(first)), config)
    path_second, _ = advantage_truth.truth_cache(SimpleNamespace(**common, **vars(second)), config)
    assert path_first == path_zero != path_second


def test_results_page_shows_the_precision_aware_correlations_for_the_p02_truth():
    """bench/results.py's p = 0.2 section: the table of plain, 1/SE^2-weighted and measurable-pair
    correlations, recomputed from the JSON's rows, and the measurable-pair verdict beside the target's."""
    from bench.results import precision_lines

    rng = np.random.default_rng(6)
    rows = _rows(rng.standard_normal(30) * 1e-3, 1e-3, 32, 7)
    for r in rows:
        r["behaviour_prob"], r["est"] = 0.2, r["truth"]
    data = {"summary": {"supported": {"truth": {}, "est": {}}}, "rows": rows}
    lines = precision_lines(data)
    assert lines[-2] == "|---|---|---|---|---|"
    assert lines[-1] == "| est | +1.000 | +1.000 | +1.000 | +1.000 |"
    assert "over the 30 *measurable* pairs (SE ≤ 0.002)" in lines[1]


def test_replicate_table_repeats_itself_over_the_measurable_pairs():
    """With the truth's SE in the rows, --replicate's reliability and joint ceiling are also given over the
    measurable pairs (where the truth's own reliability differs), as a second table on the results page."""
    from bench.results import replicate_lines

    rng = np.random.default_rng(8)
    rows = _rows(rng.standard_normal(20) * 1e-3, 1e-3, 32, 9) + _rows(np.zeros(6), 0.2, 32, 10)
    for r in rows:
        r["behaviour_prob"], r["est"] = 0.2, r["truth_even"]
    summary = advantage_truth.summarize(rows, ["est"], measurable_se=0.002)
    advantage_truth.estimator_reliability(summary, rows, rows)
    est = summary["est"]
    assert est["replicate_corr_measurable"] == pytest.approx(1.0)
    assert est["joint_ceiling_measurable"] == pytest.approx(
        np.sqrt(summary["truth"]["reliability_measurable"])
    )
    lines = replicate_lines({"summary": {"supported": summary}, "rows": rows, "replicate_log": "B"})
    assert "measurable pairs only (the truth's SE ≤ 0.002" in lines[-5]
    assert lines[-1].startswith(f"| est | +1.000 | {est['joint_ceiling_measurable']:.2f} |")


def test_refined_truth_rescores_the_estimates_the_json_holds():
    """bench/truth_refine.py scores the stored estimates against a truth with more futures: with the same
    futures it gives back advantage_truth's rows exactly, and more futures change only the truth."""
    import truth_refine

    rng = np.random.default_rng(11)
    snaps = [{"dist": np.array([0.8, 0.0, 0.2, 0.0]), "mask": np.array([1, 0, 1, 1], bool)} for _ in range(5)]
    futures = {si: {a: rng.standard_normal(8) for a in (0, 2, 3)} for si in range(5)}
    estimates = {"est": rng.standard_normal((5, 4))}
    rows = advantage_truth.truth_rows(snaps, futures, 2.0, estimates)
    again = truth_refine.rescored(rows, snaps, futures, 2.0, ["est"])
    assert again == rows
    more = {si: {a: np.r_[v, rng.standard_normal(8)] for a, v in per.items()} for si, per in futures.items()}
    refined = truth_refine.rescored(rows, snaps, more, 2.0, ["est"])
    assert [r["est"] for r in refined] == [r["est"] for r in rows]
    assert all(len(r["futures"]) == 16 for r in refined) and refined[0]["truth"] != rows[0]["truth"]


def test_results_page_shows_the_refined_truths_figures_beside_the_first(tmp_path):
    """bench/results.py: where truth_refine.py wrote its JSON, a table puts each estimator's figures against
    the refined truth beside those against the first one; where it did not, nothing."""
    from bench.results import refined_lines

    rng = np.random.default_rng(12)
    rows = _rows(rng.standard_normal(20) * 1e-3, 1e-3, 32, 13)
    for r in rows:
        r["est"] = r["truth"]
    before = advantage_truth.summarize(rows, ["est"])
    after = advantage_truth.summarize(rows[:10], ["est"])
    path = tmp_path / "advantage_truth_refined.json"
    assert refined_lines(path) == []
    path.write_text(json.dumps({"command": "CMD", "summary": {"before": before, "after": after}}))
    lines = refined_lines(path)
    assert (
        lines[-5].startswith("| est | +1.000 → +1.000 |")
        and f"({before['est']['n_clear']}) → 100% ({after['est']['n_clear']})" in lines[-5]
    )
    assert lines[-3:] == ["```bash", "CMD", "```"]
