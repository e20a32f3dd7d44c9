"""The dataset card warns about a near-deterministic behaviour (``etd@eps=0.001``), not only a deterministic one,
and stays quiet for the exploring behaviours the docs recommend."""

import pytest

from trainer.collect import collect
from trainer.logs import open_log
from trainer.logs.card import build_card

ENV = "elevator:cb10x4:downpeak"


def _card(tmp_path, controller: str):
    out = tmp_path / controller
    collect(ENV, out, controller=controller, episodes=2, env_kwargs={"hours": 0.25}, progress=False)
    return build_card(open_log(out), path=str(out))


def _near(card) -> list[str]:
    return [w for w in card.warnings if "near-deterministic" in w]


def test_eps_0_001_gets_the_near_deterministic_warning(tmp_path):
    card = _card(tmp_path, "etd@eps=0.001")
    assert card.behavior_prob_one < 0.9  # forced moves only: the exact-100% check cannot see this log
    assert card.behavior_prob_near_one > 0.99
    assert all(share < 0.01 for share in card.alternatives.values())
    (warning,) = _near(card)
    assert "only reweight logged actions" in warning and "behaviour cloning" in warning
    assert all(agent in warning for agent in card.agents)
    assert not any("every logged action had probability 1" in w for w in card.warnings)


@pytest.mark.parametrize("controller", ["etd@temp=0.5", "etd@eps=0.1"])
def test_exploring_behaviours_get_no_such_warning(tmp_path, controller):
    card = _card(tmp_path, controller)
    assert card.behavior_prob_near_one < 0.5
    assert all(share > 0.02 for share in card.alternatives.values())
    assert _near(card) == []


def test_a_deterministic_log_keeps_its_own_warning_only(tmp_path):
    card = _card(tmp_path, "etd")
    assert any("every logged action had probability 1" in w for w in card.warnings)
    assert _near(card) == []
