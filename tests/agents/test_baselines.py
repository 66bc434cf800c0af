"""The GEPA baseline: the real gepa library driving our envs through EnvPromptAdapter."""

from __future__ import annotations

import gymnasium as gym
import pytest

from trace_agents.baselines import (
    COMPONENT,
    EnvPromptAdapter,
    LocalReflection,
    feedback,
    run_gepa,
    transcript,
)
from trace_agents.policy import HFPolicy
from trace_agents.rollout import OracleBatch, rollout

pytest.importorskip("gepa", reason="the gepa library is not installed (extra 'gepa')")

ENV = "trace/precondition-v0"


def test_the_candidate_prompt_reaches_the_model(base, tok):
    policy = HFPolicy(base, tok, system_prompt="Always verify first.")
    _, info = gym.make(ENV).reset(seed=0)
    text = policy.prompt(info)
    assert "Always verify first." in text and text.index("Always verify first.") < text.index("Tools:")
    assert policy.identity()["system_prompt"] == "Always verify first."


def test_feedback_names_what_went_wrong():
    records = rollout(OracleBatch(deficits={"precondition_verification": 1.0}), ENV, range(4), progress=False).records
    failed = [r for r in records if not r["success"]]
    assert failed
    text = feedback(failed[0])
    assert "failed" in text and "return" in text
    assert transcript(failed[0]).startswith("- ")
    # Penalties are full marks at 0: a perfect episode names none, a broken one names them as paid.
    perfect = rollout(OracleBatch(), ENV, range(1), progress=False).records[0]
    assert "below full marks" not in feedback(perfect) and "Penalties" not in feedback(perfect)
    broken = {**failed[0], "return_components": {"format_error": 1.0, "turn_cost": 0.5, "db_match": 0.0}}
    assert "Penalties paid (0 is none): format_error=1.00, turn_cost=0.50." in feedback(broken)
    assert "below full marks: db_match=0.00." in feedback(broken)


class Scripted:
    """A reflection LM that always proposes the same instruction, and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt):
        self.calls += 1
        return "```\nCheck the order status before any change.\n```"


def test_gepa_optimizes_within_the_episode_budget(base, tok):
    policy = HFPolicy(base, tok, max_new_tokens=8, temperature=1.0)
    tasks = [(ENV, s) for s in range(3)]
    reflect = Scripted()
    result = run_gepa(policy, tasks, budget=12, reflection_lm=reflect, minibatch=2)
    assert result["rollouts_used"] == result["metric_calls"]
    # GEPA checks its limit between iterations, so it gets the budget less one iteration: never past it.
    assert 3 <= result["rollouts_used"] <= 12
    assert reflect.calls >= 1 and result["candidates"] >= 1
    assert isinstance(result["best_prompt"], str) and result["best_prompt"]


class PromptSensitiveOracle(OracleBatch):
    """An imperfect oracle (it skips precondition checks) while its prompt is the one it was
    made with, and a goodbye under any other prompt: every proposal scores worse."""

    def __init__(self, prompt: str) -> None:
        super().__init__(deficits={"precondition_verification": 1.0})
        self.good = self.system_prompt = prompt

    def forget(self) -> None:
        pass

    def act_batch(self, infos, adapters=None):
        planned = super().act_batch(infos, adapters)
        return planned if self.system_prompt == self.good else ["Goodbye!"] * len(infos)


def test_gepa_leaves_the_policy_with_the_best_prompt_not_the_last():
    policy = PromptSensitiveOracle("Verify, then act.")
    reflect = Scripted()
    tasks = [(ENV, s) for s in range(4)]
    result = run_gepa(policy, tasks, budget=16, reflection_lm=reflect, seed_prompt=policy.good, minibatch=2)
    assert reflect.calls >= 1, "GEPA scored no proposal besides the seed prompt"
    assert result["best_prompt"] == policy.good  # every proposal scores 0
    assert policy.system_prompt == policy.good


def test_the_adapter_keeps_the_batch_order_and_repeats(base, tok):
    adapter = EnvPromptAdapter(HFPolicy(base, tok, max_new_tokens=4))
    batch = [(ENV, 2), (ENV, 0), (ENV, 2)]
    out = adapter.evaluate(batch, {COMPONENT: "Be brief."}, capture_traces=True)
    assert [(t["env_id"], t["seed"]) for t in out.trajectories] == batch
    assert len(out.scores) == 3 and adapter.rollouts == 3
    data = adapter.make_reflective_dataset({COMPONENT: "Be brief."}, out, [COMPONENT])
    assert set(data) == {COMPONENT} and 1 <= len(data[COMPONENT]) <= 3
    assert {"Inputs", "Generated Outputs", "Feedback"} <= set(data[COMPONENT][0])


def test_local_reflection_answers_with_text(base, tok):
    reflect = LocalReflection(base, tok, max_new_tokens=8)
    assert isinstance(reflect("Propose a better instruction." * 2000), str) and reflect.calls == 1
    # A prompt past the context keeps both ends (GEPA's current instruction first, the request last).
    seen = []
    reflect.chat = lambda messages: seen.append(messages[-1]["content"]) or "ok"
    reflect("CURRENT INSTRUCTION. " + "example " * 20_000 + "WRITE THE NEW ONE.")
    assert seen[0].startswith("CURRENT INSTRUCTION.") and seen[0].endswith("WRITE THE NEW ONE.")
    assert len(tok.encode(seen[0], add_special_tokens=False)) <= reflect.limit


def test_a_budget_too_small_for_the_seed_prompt_is_refused(base, tok):
    with pytest.raises(ValueError, match="cannot even score"):
        run_gepa(HFPolicy(base, tok), [(ENV, s) for s in range(5)], budget=3, reflection_lm=Scripted())
