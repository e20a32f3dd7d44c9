"""The Ray Tune backend of ``inspo sweep``: one function trainable per (grid point, training seed),
one CPU each, ASHA on the validation metric (``trainer.integrations.sweep``).

The trainable is ``sweep.run_trial``, which trains with ``trainer.train_loop.train`` (what
``inspo train`` runs) and reports after each segment with ``tune.report``. The log's arrays go to
the object store once (``tune.with_parameters``) and every trial reads them from there.
Trial run directories live in Tune's trial directories under ``<out>/tune``.
"""

from __future__ import annotations

from pathlib import Path

from trainer.integrations import require_ray
from trainer.integrations.ray_collect import connect, disconnect
from trainer.integrations.sweep import METRICS, SweepSpec, make_record, run_trial, trial_name


def _trainable(config: dict, spec: SweepSpec, data) -> None:
    from ray import tune

    params = {k: config[k] for k in spec.grid}
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"

    def report(metrics: dict[str, float]) -> bool:
        tune.report(metrics)  # ASHA ends the trial here when it decides to stop it
        return True

    run_trial(spec, params, int(config["seed"]), run_dir, data, report)


def run_ray(spec: SweepSpec, data, address: str | None = None, cpus_per_trial: float = 1.0) -> list[dict]:
    """Run the sweep on Ray Tune; returns the same records as the local backend."""
    require_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    # Trials print nothing (verbose=0 below) and a failed trial comes back as result.error, so the
    # workers' output is not forwarded: what it carried was shutdown noise, e.g. "Exception ignored
    # in WeakSet._remove ... SystemExit: 1" when Ray's SIGTERM to an idle worker lands inside a
    # garbage-collector callback (intermittent, under load).
    started = connect(address, worker_output=False)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, spec=spec, data=data), {"cpu": cpus_per_trial}
        )
        param_space = {k: tune.grid_search(list(v)) for k, v in spec.grid.items()}
        param_space["seed"] = tune.grid_search(list(spec.seeds))
        scheduler = ASHAScheduler(
            time_attr="iteration",
            max_t=spec.total_iterations(),
            grace_period=spec.segment(),
            reduction_factor=spec.reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler),
            # No log_to_file: it tees each trial's stderr into a file it closes when the trial ends, while
            # the logging handlers torch creates on its first import (inside the trial) keep that tee;
            # at worker exit logging's flush then hits the closed file and Ray prints a "ValueError when
            # calling 'flush' on stream" warning per handler (36 per worker). Trials print nothing.
            run_config=tune.RunConfig(name="tune", storage_path=str(Path(spec.out).resolve()), verbose=0),
        )
        results = tuner.fit()
        trials = [(p, s) for p in spec.combinations() for s in spec.seeds]
        records = []
        for result in results:
            if result.error is not None:
                raise RuntimeError(f"sweep trial {result.config} failed: {result.error}") from result.error
            params = {k: result.config[k] for k in spec.grid}
            seed = int(result.config["seed"])
            frame = result.metrics_dataframe
            history = []
            if frame is not None:
                history = frame[["iteration", *(m for m in METRICS if m in frame.columns)]].to_dict("records")
            index = trials.index((params, seed))
            run_dir = Path(result.path) / "run"  # on the trial's node (shared storage on clusters)
            records.append(make_record(trial_name(index, params, seed), params, seed, history, run_dir))
        records.sort(key=lambda r: r["trial"])
        return records
    finally:
        if started:
            disconnect()
