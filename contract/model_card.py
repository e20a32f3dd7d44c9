"""The model card: a version's ``policy.json``, written by ``inspo export`` and read by the runtime.

One typed record for both sides, so a field such as ``obs_dim`` or ``version`` can be followed from
export to serving. ``from_json`` checks the version first (a card of an unknown version is rejected
with a message naming it), then every field a request relies on. Keys this version does not know are
kept in ``extra`` and written back, so reading and writing a card loses nothing (docs/serving.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

CARD_SCHEMA_VERSION = 1
SUPPORTED_CARD_VERSIONS = (1,)
# The exported graph's signature: tensor name -> (card datatype, ONNX Runtime type).
INPUTS = {
    "obs": ("FP32", "tensor(float)"),
    "agent": ("INT64", "tensor(int64)"),
    "action_mask": ("BOOL", "tensor(bool)"),
}
OUTPUTS = {"probs": ("FP32", "tensor(float)"), "action": ("INT64", "tensor(int64)")}
INPUT_NAMES = list(INPUTS)
OUTPUT_NAMES = list(OUTPUTS)
REQUIRED = ("name", "version", "agent_ids", "obs_dim", "n_actions", "onnx_sha256")


class ModelCardError(ValueError):
    """A ``policy.json`` that must not be used; the message names the file and the field."""


def tensor_specs(obs_dim: int, n_actions: int) -> tuple[list[dict], list[dict]]:
    """The card's ``inputs`` and ``outputs`` (KServe-style datatypes; ``-1`` is the batch axis)."""
    shapes = {"obs": [-1, obs_dim], "agent": [-1], "action_mask": [-1, n_actions], "probs": [-1, n_actions]}
    shapes["action"] = [-1]
    inputs = [{"name": n, "datatype": d, "shape": shapes[n]} for n, (d, _) in INPUTS.items()]
    outputs = [{"name": n, "datatype": d, "shape": shapes[n]} for n, (d, _) in OUTPUTS.items()]
    return inputs, outputs


@dataclass(kw_only=True)
class ModelCard:
    """Everything the runtime and an operator need to know about one exported version."""

    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    version: int | str
    env_id: str = ""
    agent_ids: list[str]
    obs_dim: int
    n_actions: int
    action_names: list[str] | None = None
    obs_low: list[float] | None = None
    obs_high: list[float] | None = None
    obs_reference: dict | None = None  # the training distribution, for the runtime's drift gauge
    algorithm: str | None = None
    config: dict | None = None
    net: dict | None = None
    dataset_fingerprint: str | None = None
    site_spec: dict | None = None  # the resolved site it was trained for (envs/site.py)
    training_metrics: dict = field(default_factory=dict)
    evaluation_metrics: dict = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    parity: dict | None = None
    onnx_sha256: str
    created_at: str = ""
    package_version: str = ""
    torch_version: str = ""
    exporter: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept verbatim

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return out | self.extra

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)  # numpy scalars in metrics -> float

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy.json") -> ModelCard:
        """A validated card; raises :class:`ModelCardError` naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: expected a JSON object")
        version = data.get("schema_version", 1)
        if not _is_int(version) or version not in SUPPORTED_CARD_VERSIONS:
            raise ModelCardError(
                f"{source}: model card schema_version {version!r} is not supported (this reader knows "
                f"{', '.join(map(str, SUPPORTED_CARD_VERSIONS))}); upgrade inspo-control or export the model again"
            )
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ModelCardError(f"{source}: missing keys {missing}")
        known = {f.name for f in fields(cls)} - {"extra"}
        card = cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )
        card.validate(source)
        return card

    @classmethod
    def from_json(cls, text: str, source: str = "policy.json") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelCardError(f"{source}: not valid JSON ({err})") from None
        return cls.from_dict(data, source)

    # -- validation ----------------------------------------------------------------------------
    def validate(self, source: str = "policy.json") -> None:
        """The types and shapes a request relies on; a mistyped field is a rejection, never a TypeError."""
        if not isinstance(self.name, str) or not self.name:
            raise ModelCardError(f"{source}: name must be a non-empty string, got {self.name!r}")
        ids = self.agent_ids
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(a, str) for a in ids)
            or len(set(ids)) != len(ids)
        ):
            raise ModelCardError(f"{source}: agent_ids must be a non-empty list of distinct strings")
        for key in ("obs_dim", "n_actions"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ModelCardError(f"{source}: {key} must be a positive integer, got {value!r}")
        names = self.action_names
        if names is not None and (
            not isinstance(names, list)
            or not all(isinstance(a, str) for a in names)
            or len(names) not in (0, self.n_actions)
        ):
            raise ModelCardError(
                f"{source}: action_names must be a list of n_actions={self.n_actions} strings"
            )
        for key in ("obs_low", "obs_high"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise ModelCardError(
                    f"{source}: {key} must be a list of obs_dim numbers or null, got {value!r:.40}"
                )
            if len(value) != self.obs_dim:
                raise ModelCardError(
                    f"{source}: {key} has {len(value)} values, expected obs_dim={self.obs_dim}"
                )
        if not isinstance(self.onnx_sha256, str):
            raise ModelCardError(f"{source}: onnx_sha256 must be a hex string, got {self.onnx_sha256!r:.40}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
