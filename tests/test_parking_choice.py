"""bench/parking_choice.py: the parking floor's value fitted from the chain of stop/continue decisions."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import parking_choice  # noqa: E402

from envs.elevator.core import IDLE, MOVING  # noqa: E402
from envs.elevator.features import OTHER, OWN  # noqa: E402

F, C = 10, 4


def _observations(teammates: np.ndarray, idle: np.ndarray) -> np.ndarray:
    """Rows of a car's observation with only what the features read: the other cars' positions and motion."""
    obs = np.zeros((len(teammates), OWN + 6 * F + (OTHER + F) * (C - 1)), np.float32)
    cols = OWN + 6 * F + (OTHER + F) * np.arange(C - 1)
    obs[:, cols] = teammates / (F - 1)
    obs[:, cols + 2] = ~idle  # moving
    return obs


def test_chain_fit_recovers_the_value_of_each_target_floor():
    """Chains drawn as the experiment draws them (a uniform target floor, the car passing each floor below
    it), the return Q(target | teammates) plus noise: the link regression recovers Q's coefficients,
    teammate interaction included, which one stop-against-continue effect per floor cannot express."""
    rng = np.random.default_rng(0)
    theta = np.array([4.0, -3.0, -0.8, -0.4])  # floor, floor^2, idle teammates at it, 1 floor away
    every = np.arange(F, dtype=np.float64)
    rows_obs, rows_floor, z, y = [], [], [], []
    for _ in range(6000):
        teammates = rng.integers(0, F, C - 1).astype(np.float64)
        idle = rng.random(C - 1) < 0.6
        q = parking_choice.target_features(every, teammates[None], idle[None], F)[0] @ theta
        target = int(rng.integers(1, F))
        ret = q[target] + 0.5 * rng.standard_normal()
        for d in range(1, min(target, F - 2) + 1):  # decisions at floors 1..target (the top is forced)
            e_stop = 1.0 / (F - d)  # a uniform target among the floors d..F-1
            stop = float(d == target)
            rows_obs.append(_observations(teammates[None], idle[None])[0])
            rows_floor.append(d)
            z.append(stop - e_stop)
            y.append(ret - q[d:].mean())
    obs, floor = np.stack(rows_obs), np.array(rows_floor)
    x = np.array(z)[:, None] * parking_choice.link_features(obs, floor, F, C)
    fitted = parking_choice.wls(x, np.array(y), np.ones(len(y)))
    np.testing.assert_allclose(fitted, theta, atol=0.35)
    assert fitted[2] < -0.4  # the teammate at the target floor is seen


def test_link_features_are_the_floor_against_the_mean_above():
    obs = _observations(np.full((3, C - 1), 4.0), np.ones((3, C - 1), bool))
    floor = np.array([1, 4, 8])
    link = parking_choice.link_features(obs, floor, F, C)
    every = np.arange(F, dtype=np.float64)
    phi = parking_choice.target_features(every, np.full((1, C - 1), 4.0), np.ones((1, C - 1), bool), F)[0]
    for row, d in enumerate(floor):
        np.testing.assert_allclose(link[row], phi[d] - phi[d + 1 :].mean(0))
    assert link[1, 2] == 3.0  # all three idle teammates wait at floor 4, none above it


def test_choice_parking_avoids_a_floor_an_idle_teammate_holds(tmp_path):
    path = tmp_path / "theta.json"
    path.write_text('{"theta": [4.0, -3.0, -1.0, -0.2]}')  # best alone: floor 6 (u = 2/3)
    ctl = parking_choice.ChoiceParking(path)
    view = SimpleNamespace(
        F=F, C=C, pos=[0.0, 9.0, 9.0, 9.0], mode=[IDLE, MOVING, MOVING, MOVING], load=[0] * C
    )
    assert ctl.park_floor(view, 0) == 6
    view.pos[1], view.mode[1] = 6.0, IDLE
    assert ctl.park_floor(view, 0) in (4, 8)  # 6 is taken, and 5, 7 are next to it


def test_a_round_settles_the_next_car_away_from_the_settled_ones_and_names_its_controller():
    """bench/sequential_rounds.py: with a value that peaks at floor 6 and penalises an idle teammate at the
    floor and next to it, the first car takes 6 and the next one the best floor two or more away."""
    import sequential_rounds

    theta = np.array([12.0, -9.0, -1.0, -1.0]) * 1e-3  # Q(f) = 12 u - 9 u^2 (u = f / 9): peak near 6
    first, q = parking_choice.best_floor(theta, [], F, C)
    assert first == int(np.argmax(q)) == 6
    second, _ = parking_choice.best_floor(theta, [6], F, C)
    assert abs(second - 6) >= 2
    assert sequential_rounds.round_spec([6, None, None, None]) == "etd-park:6.-.-.-@exp=1"
    assert sequential_rounds.round_controller([6, second, None, None]).describe() == (
        f"etd-park 6,{second},-,-@exp=1 on cars 2,3"
    )
