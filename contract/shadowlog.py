"""The shadow log's schema: a candidate's decisions beside the served ones (docs/deployment.md).

The runtime writes it under ``<decision_log.dir>/<model>/shadow/date=<YYYY-MM-DD>/part-*.parquet``, one
row per agent decision; off-policy evaluation of the shadow reads ``shadow_prob_of_served`` next to the
decision log's ``behavior_prob``. The trainer's log reader ignores this folder.
"""

from __future__ import annotations

import pyarrow as pa

SHADOW_FIELDS: list[pa.Field] = [
    pa.field("ts", pa.timestamp("us")),
    pa.field("model", pa.string()),
    pa.field("episode_id", pa.string()),
    pa.field("t", pa.int64()),
    pa.field("agent_id", pa.string()),
    pa.field("arm", pa.string()),  # which deployment arm answered (incumbent or candidate)
    pa.field("served_version", pa.string()),
    pa.field("served_action", pa.int64()),
    pa.field("served_probability", pa.float64()),
    pa.field("shadow_model", pa.string()),
    pa.field("shadow_version", pa.string()),
    pa.field("shadow_action", pa.int64()),
    pa.field("shadow_probability", pa.float64()),
    pa.field("shadow_prob_of_served", pa.float64()),  # the shadow's probability of the served action
    pa.field("agree", pa.bool_()),
]
SHADOW_SCHEMA = pa.schema(SHADOW_FIELDS)
SHADOW_COLUMNS = tuple(f.name for f in SHADOW_FIELDS)


def shadow_table(rows: list[dict]) -> pa.Table:
    """Rows (one dict per decision, keyed by :data:`SHADOW_COLUMNS`) as a table of the documented types."""
    return pa.Table.from_pylist(rows, schema=SHADOW_SCHEMA)
