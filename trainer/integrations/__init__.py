"""Optional adapters to external engines (Ray). Only these modules import ``ray``, and only inside
functions, so the core (``trainer``, ``envs``, ``runtime``) installs and runs without it.

* ``ray_collect``: ``inspo collect --backend ray`` (chunks of episodes on Ray actors).
* ``sweep``: ``inspo sweep`` itself, its local backend, and what both backends share.
* ``ray_tune``: the Ray Tune backend of ``inspo sweep`` (ASHA over the ``train`` function).
* ``ray_data``: building the padded-array cache of a log with ``ray.data.read_parquet``.
"""


def require_ray():
    """Import ray or fail with the install command."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "this needs Ray: pip install 'inspo-control[ray]' (or pip install 'ray[tune,data]')",
            name="ray",
        ) from None
    return ray
