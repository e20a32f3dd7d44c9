"""The encode stage on its own: one answer, both response encodings, every per-row mark."""

import numpy as np

from protos.inspo.runtime.v1 import policy_pb2
from runtime.service import Routed, encode_response


class _Candidate:
    name, version = "grid", "2"


def _routed(candidate=None) -> Routed:
    probs = np.array([[0.7, 0.3], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    action = np.array([0, 1, 0])
    chosen = np.array([0.7, 1.0, 1.0], dtype=np.float32)
    arms = ["incumbent", "candidate", "incumbent"] if candidate else None
    return Routed(probs[:, :1], probs, action, chosen, {2: "deadline"}, None, arms, candidate, "1")


def test_per_agent_encoding_marks_fallbacks_arms_and_guardrails():
    request = policy_pb2.ActRequest(model="grid", request_id="r1", return_probs=True)
    out = encode_response(request, "grid", ["a", "b", "c"], _routed(_Candidate()), {1: "min_hold"})
    assert (out.model, out.model_version, out.request_id) == ("grid", "1", "r1")
    assert (out.candidate_model, out.candidate_version) == ("grid", "2")
    assert [(a.agent_id, a.action, a.arm, a.guardrail) for a in out.actions] == [
        ("a", 0, "incumbent", ""),
        ("b", 1, "candidate", "min_hold"),
        ("c", 0, "incumbent", ""),
    ]
    assert [a.fallback_reason for a in out.actions] == ["", "", "deadline"] and out.actions[2].fallback
    assert list(out.actions[0].probs) == [np.float32(0.7), np.float32(0.3)]
    assert not out.HasField("error")


def test_packed_encoding_carries_the_same_answer_as_arrays():
    request = policy_pb2.ActRequest(model="grid", packed=policy_pb2.PackedObservations(), return_probs=True)
    out = encode_response(request, "grid", ["a", "b", "c"], _routed(_Candidate()), {1: "min_hold"})
    assert list(out.packed.action) == [0, 1, 0] and not out.actions
    assert list(out.packed.fallback_index) == [2] and list(out.packed.fallback_reason) == ["deadline"]
    assert list(out.packed.candidate_index) == [1]
    assert list(out.packed.guardrail_index) == [1] and list(out.packed.guardrail_rule) == ["min_hold"]
    assert np.frombuffer(out.packed.probs_raw, "<f4").reshape(3, 2)[0].tolist() == [
        np.float32(0.7),
        np.float32(0.3),
    ]
    plain = encode_response(request, "grid", ["a", "b", "c"], _routed(), {})
    assert not plain.candidate_model and not plain.packed.candidate_index
