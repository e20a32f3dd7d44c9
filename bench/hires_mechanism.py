"""Why a controller learned from hi-res events alone does worse than one learned from the lane log.

    .venv/bin/python bench/hires_mechanism.py [--work bench/.cache/hires_learn --seeds 2 --train-seed 0]

Reads the runs of a ``bench/hires_learn.py`` work folder and drives grid4x4 (the first ``--seconds`` s,
``observation=detectors``, tuning seeds: nothing here is chosen on evaluation seeds) with:

* ``max-pressure`` (greedy, exact lane counts, in- minus out-lane vehicles) and rules that each remove one
  thing from it: ``max-pressure-in`` (incoming lanes only: no exits), ``max-pressure-in-assigned`` (each
  lane counted for the one phase the detector configuration gives its loops), ``max-pressure-in-50m``
  (only vehicles within 50 m of the stop line, the advance loop's reach, every phase serving the lane),
  ``detector-occupancy`` (the phase whose loops were occupied most in the last interval, from the detector
  observation) and ``loop-occupancy-all-phases`` (the same with a loop counted for every phase serving
  its lane);
* the learned runs (``events-*`` on the detector observation, ``lanes-*`` on the lane observation).

It prints, per controller, what it does in SUMO (trip delay, throughput, teleports, switches per free
decision, mean and longest green, the share of green link-seconds released into a full exit lane) and,
on the states max-pressure visits, how often each rule's or run's greedy action equals max-pressure's
(free decisions only: more than one legal phase), plus a probe: a small network fitted on one seed's
states to predict max-pressure's action from the detector or the lane observation, scored on the others.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.registry import make_env  # noqa: E402
from envs.seeds import tuning_seeds  # noqa: E402
from envs.traffic.detectors import ADVANCE_M, COUNT_SCALE  # noqa: E402
from envs.traffic.env import VEHICLE_SPACE_M  # noqa: E402
from trainer.run_dir import load_policy  # noqa: E402

FULL = 0.9  # an exit lane holding >= 90 % of the vehicles it can hold counts as full


class Probe:
    """Per decision: both observations, masks, max-pressure's and the incoming-only rule's scores."""

    def __init__(self, env):
        tr = env._traci
        self.env = env
        a_max = env.n_actions
        n = env.n_agents
        self.in_coef = np.zeros((n, a_max, len(env._lanes)))
        self.out_coef = np.zeros((n, a_max, len(env._lanes)))
        self.green_out: list[list[list[int]]] = []  # agent -> phase -> out-lane index per green link
        capacity = np.array([tr.lane.getLength(ln) / VEHICLE_SPACE_M for ln in env._lanes])
        self.capacity = np.maximum(capacity, 1.0)
        for i, a in enumerate(env.possible_agents):
            per_phase: list[list[int]] = [[] for _ in range(a_max)]
            for signal, links in enumerate(tr.trafficlight.getControlledLinks(a)):
                for lk in links:
                    for p, state in enumerate(env.green_states[a]):
                        if state[signal] in "Gg":
                            self.in_coef[i, p, env._lane_index[lk[0]]] += 1
                            self.out_coef[i, p, env._lane_index[lk[1]]] += 1
                            per_phase[p].append(env._lane_index[lk[1]])
            self.green_out.append(per_phase)
        # the detector configuration's one phase per lane (envs/traffic/detectors.py), and every phase
        # that gives one of the lane's links a green
        self.assigned = np.zeros((n, a_max, len(env._lanes)))
        self.serves = (self.in_coef > 0).astype(np.float64)
        for i, a in enumerate(env.possible_agents):
            for loop in env._loops[a]:
                self.assigned[
                    i, one_phase(self.in_coef[i, :, env._lane_index[loop.lane]]), env._lane_index[loop.lane]
                ] = 1.0
        self.bank_serves = []  # per agent [loops, A]: the loop's lane is served by the phase
        for i, a in enumerate(env.possible_agents):
            self.bank_serves.append(
                np.array([self.serves[i, :, env._lane_index[lp.lane]] for lp in env._loops[a]])
            )
        self.in_ids = [ln for ln in env._lanes]
        self.length = np.array([tr.lane.getLength(ln) for ln in env._lanes])

    def counts(self) -> np.ndarray:
        return np.array(self.env._counts, dtype=np.float64)

    def in_pressure(self) -> np.ndarray:
        return self.in_coef @ self.counts()

    def in_assigned(self) -> np.ndarray:
        return self.assigned @ self.counts()

    def in_last(self, metres: float) -> np.ndarray:
        """Incoming-only pressure counting only vehicles within ``metres`` of the stop line."""
        tr = self.env._traci
        near = np.zeros(len(self.in_ids))
        for j, ln in enumerate(self.in_ids):
            if self.env._counts[j]:
                near[j] = sum(
                    self.length[j] - tr.vehicle.getLanePosition(v) <= metres
                    for v in tr.lane.getLastStepVehicleIDs(ln)
                )
        return self.serves @ near

    def loop_occupancy_all(self) -> np.ndarray:
        """Stop-bar + advance occupancy over the last 5 s per phase, a loop counting for every phase
        that serves its lane (mean over them)."""
        bank = self.env._bank
        bits = np.array(bank.bits[-5:], dtype=np.float64).sum(0) if bank.bits else np.zeros(len(bank.ids))
        out = np.zeros((self.env.n_agents, self.env.n_actions))
        for i in range(self.env.n_agents):
            occ = bits[bank.bounds[i] : bank.bounds[i + 1]] / 5.0
            sv = self.bank_serves[i]
            out[i] = (sv.T @ occ) / np.maximum(sv.sum(0), 1)
        return out

    def into_full(self) -> tuple[int, int]:
        """(green links whose exit lane is full, green links) over all agents' current greens."""
        full = self.counts() / self.capacity >= FULL
        blocked = total = 0
        for i, phase in enumerate(self.env._phase):
            if self.env._yellow[i]:
                continue
            outs = self.green_out[i][phase]
            blocked += int(full[outs].sum())
            total += len(outs)
        return blocked, total


def one_phase(links_green: np.ndarray) -> int:
    """The configuration before the fix gave a lane's loops one phase: the one greening most of its links
    (then the lowest index; grid4x4 has no ``g``)."""
    return int(np.argmax(links_green))


def masked_argmax(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    return np.where(masks, scores, -np.inf).argmax(-1)


def detector_occupancy(obs: np.ndarray, a_max: int) -> np.ndarray:
    """Stop-bar plus advance occupancy per phase (detector observation, envs/traffic/detectors.py)."""
    return obs[:, a_max + 2 : 2 * a_max + 2] + obs[:, 3 * a_max + 2 : 4 * a_max + 2]


def episode(env, probe_of, choose, seed: int, record: bool):
    obs, infos = env.reset(seed=seed)
    probe = probe_of(env)
    agents = env.possible_agents
    rows: dict[str, list] = defaultdict(list)
    stats = {"switches": 0, "free": 0, "blocked": 0, "green_links": 0}
    greens: list[float] = []
    started = [0.0] * env.n_agents
    while env.agents:
        det = np.stack([obs[a] for a in agents])
        lane = env._lane_obs.copy()
        masks = env.action_masks()
        pressure = env.phase_pressure()
        mp = masked_argmax(pressure, masks)
        act = choose(det, lane, masks, pressure, probe)
        free = masks.sum(-1) > 1
        before = list(env._phase)
        if record:
            rows["det"].append(det)
            rows["lane"].append(lane)
            rows["masks"].append(masks)
            rows["mp"].append(mp)
            rows["mp_in"].append(masked_argmax(probe.in_pressure(), masks))
            rows["free"].append(free)
            rows["near"].append(probe.in_last(ADVANCE_M))
        t = env.sim_time()
        b, g = probe.into_full()
        stats["blocked"] += b
        stats["green_links"] += g
        stats["free"] += int(free.sum())
        for i in range(env.n_agents):
            if act[i] != before[i]:
                stats["switches"] += 1
                greens.append(t - started[i])
                started[i] = t
        obs, _, _, _, infos = env.step({a: int(act[i]) for i, a in enumerate(agents)})
    metrics = env.episode_metrics()
    out = {
        "delay": metrics["delay"],
        "throughput": metrics["throughput"],
        "teleports": metrics["teleports"],
        "switch_rate": stats["switches"] / max(stats["free"], 1),
        "mean_green": float(np.mean(greens)) if greens else float("nan"),
        "longest_green": float(max(greens + [t - s for s in started])),
        "into_full": stats["blocked"] / max(stats["green_links"], 1),
    }
    return out, {k: np.concatenate(v) for k, v in rows.items()}


def policy_chooser(run: Path, observation: str, n_agents: int):
    policy, _ = load_policy(run)

    def choose(det, lane, masks, pressure, probe):
        x = det if observation == "det" else lane
        agents = torch.arange(len(x)) % n_agents  # rows are states of all agents, in agent order
        with torch.no_grad():
            logits = policy(torch.as_tensor(x), agents, torch.as_tensor(masks))
        return logits.argmax(-1).numpy()

    return choose


def fit_probe(x: np.ndarray, y: np.ndarray, masks: np.ndarray, seed: int = 0):
    """A 64-unit network, masked softmax over phases, full-batch Adam: returns a predictor."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, y.max() + 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor((x - mean) / std, dtype=torch.float32), torch.as_tensor(y)
    mt = torch.as_tensor(masks)
    for _ in range(400):
        logits = net(xt).masked_fill(~mt, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def predict(xq: np.ndarray, mq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = torch.as_tensor((xq - mean) / std, dtype=torch.float32)
            return net(q).masked_fill(~torch.as_tensor(mq), -1e9).argmax(-1).numpy()

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".cache" / "hires_learn")
    parser.add_argument("--seeds", type=int, default=2, help="tuning seeds to drive (at least 2: the probe)")
    parser.add_argument("--seconds", type=int, default=900)
    parser.add_argument("--train-seed", type=int, default=0)
    args = parser.parse_args()
    seeds = tuning_seeds(args.seeds)
    env = make_env("sumo:grid4x4", num_seconds=args.seconds, observation="detectors")
    a_max = env.n_actions
    probes: dict[int, Probe] = {}

    def probe_of(e):
        return probes.setdefault(0, Probe(e))

    rules = {
        "max-pressure": lambda d, ln, m, p, pr: masked_argmax(p, m),
        "max-pressure-in": lambda d, ln, m, p, pr: masked_argmax(pr.in_pressure(), m),
        "detector-occupancy": lambda d, ln, m, p, pr: masked_argmax(detector_occupancy(d, a_max), m),
        "max-pressure-in-assigned": lambda d, ln, m, p, pr: masked_argmax(pr.in_assigned(), m),
        "max-pressure-in-50m": lambda d, ln, m, p, pr: masked_argmax(pr.in_last(50.0), m),
        "loop-occupancy-all-phases": lambda d, ln, m, p, pr: masked_argmax(pr.loop_occupancy_all(), m),
        "detector-count": lambda d, ln, m, p, pr: masked_argmax(d[:, 6 * a_max + 2 : 7 * a_max + 2], m),
    }
    runs = {}
    for tag, observation in (("events", "det"), ("lanes", "lane")):
        for algo in ("inspo", "bc"):
            path = args.work / "runs" / f"{tag}-{algo}-seed{args.train_seed}"
            if (path / "policy").exists():
                runs[f"{tag}-{algo}"] = (policy_chooser(path, observation, env.n_agents), observation)
    states = []
    print(
        f"grid4x4, first {args.seconds} s, tuning seeds {seeds}; learned runs: training seed {args.train_seed}\n"
    )
    print("| controller | trip delay (s) | throughput | teleports | switches / free decision | mean green (s) "
          "| longest green (s) | green links into a full exit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, choose in {**rules, **{k: v[0] for k, v in runs.items()}}.items():
        per_seed = []
        for seed in seeds:
            res, rows = episode(env, probe_of, choose, seed, record=name == "max-pressure")
            per_seed.append(res)
            if rows:
                states.append(rows)
        m = {k: np.mean([r[k] for r in per_seed]) for k in per_seed[0]}
        print(f"| {name} | {m['delay']:.2f} | {m['throughput']:.0f} | {m['teleports']:.1f} | "
              f"{m['switch_rate']:.1%} | {m['mean_green']:.1f} | {m['longest_green']:.0f} | {m['into_full']:.1%} |")  # fmt: skip
    env.close()
    # agreement with max-pressure on the states max-pressure visits (free decisions)
    all_rows = {k: np.concatenate([s[k] for s in states]) for k in states[0]}
    free = all_rows["free"]
    mp = all_rows["mp"][free]
    print(
        f"\nOn max-pressure's own states ({free.sum()} free decisions of {free.size}): greedy action = max-pressure's"
    )
    print(f"- max-pressure-in (exact incoming counts only): {(all_rows['mp_in'][free] == mp).mean():.1%}")
    occ = masked_argmax(detector_occupancy(all_rows["det"], a_max), all_rows["masks"])
    print(f"- detector-occupancy rule: {(occ[free] == mp).mean():.1%}")
    for name, (choose, _) in runs.items():
        act = choose(all_rows["det"], all_rows["lane"], all_rows["masks"], None, None)
        print(f"- {name}: {(act[free] == mp).mean():.1%}")
    if all_rows["det"].shape[1] >= 7 * a_max + 2:  # the detector observation's between-loops count
        est = all_rows["det"][:, 6 * a_max + 2 : 7 * a_max + 2] * COUNT_SCALE
        true = all_rows["near"]
        err = np.abs(est - true)
        corr = np.corrcoef(est.ravel(), true.ravel())[0, 1]
        count_rule = masked_argmax(est, all_rows["masks"])
        print(
            f"- detector-count rule: {(count_rule[free] == mp).mean():.1%}; its count vs the vehicles within"
            f" {ADVANCE_M:.0f} m: mean |error| {err.mean():.2f} veh (true mean {true.mean():.2f}), correlation {corr:.3f}"
        )
    # probe: fitted on the first seed's states, scored on the rest
    n_first = len(states[0]["mp"])
    for obs_name in ("det", "lane"):
        x, m, y = all_rows[obs_name], all_rows["masks"], all_rows["mp"]
        predict = fit_probe(x[:n_first], y[:n_first], m[:n_first])
        pred = predict(x[n_first:], m[n_first:])
        held_free = free[n_first:]
        acc = (pred[held_free] == y[n_first:][held_free]).mean()
        print(
            f"- probe on the {'detector' if obs_name == 'det' else 'lane'} observation (held-out seeds): {acc:.1%}"
        )


if __name__ == "__main__":
    sys.exit(main())
