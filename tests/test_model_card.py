"""The model card (policy.json): one typed record written by export and read by the runtime."""

import json

import pytest

from contract.model_card import CARD_SCHEMA_VERSION, ModelCard, ModelCardError, tensor_specs


def card(**change) -> ModelCard:
    inputs, outputs = tensor_specs(3, 2)
    fields = dict(
        name="grid",
        version=4,
        env_id="elevator:cb10x4:downpeak",
        agent_ids=["car_0", "car_1"],
        obs_dim=3,
        n_actions=2,
        action_names=["up", "down"],
        obs_low=[0.0, -1.0, 0.5],
        obs_high=[1.0, 1.0, 2.5],
        training_metrics={"loss": 0.25},
        inputs=inputs,
        outputs=outputs,
        onnx_sha256="ab" * 32,
    )
    return ModelCard(**(fields | change))


def test_round_trip_keeps_every_field_and_unknown_keys():
    original = card()
    text = original.to_json()
    again = ModelCard.from_json(text)
    assert again == original
    assert again.to_json() == text
    data = json.loads(text) | {"written_by": "a newer exporter"}
    kept = ModelCard.from_dict(data)
    assert kept.extra == {"written_by": "a newer exporter"} and kept.to_dict() == data
    assert json.loads(text)["inputs"][0] == {"name": "obs", "datatype": "FP32", "shape": [-1, 3]}


def test_unknown_version_is_rejected_naming_it_and_the_file():
    data = card().to_dict() | {"schema_version": CARD_SCHEMA_VERSION + 6}
    with pytest.raises(
        ModelCardError, match=rf"models/grid/4/policy.json: .*schema_version {CARD_SCHEMA_VERSION + 6}\b"
    ):
        ModelCard.from_json(json.dumps(data), "models/grid/4/policy.json")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"obs_dim": "six"}, "obs_dim"),
        ({"agent_ids": ["a", "a"]}, "agent_ids"),
        ({"obs_low": [0.0]}, "obs_low"),
        ({"action_names": ["only one"]}, "action_names"),
    ],
)
def test_a_mistyped_field_is_named(change, field):
    with pytest.raises(ModelCardError, match=rf"policy.json: {field}"):
        ModelCard.from_dict(card().to_dict() | change)


def test_missing_required_keys_are_listed():
    data = {k: v for k, v in card().to_dict().items() if k not in ("obs_dim", "onnx_sha256")}
    with pytest.raises(ModelCardError, match=r"missing keys \['obs_dim', 'onnx_sha256'\]"):
        ModelCard.from_dict(data)
