"""EndpointPolicy: an OpenAI-compatible server (such as vLLM with --enable-lora) as the agent."""

from __future__ import annotations

import json

import pytest
from helpers import fake_endpoint

from trace_agents.endpoint import EndpointPolicy, action_text
from trace_agents.rollout import rollout
from trace_envs import parse_action

ENV = "trace/precondition-v0"


def reply(request):
    """Look up the user when the agent has not yet, else say goodbye; echo the served model name."""
    said = " ".join(str(m.get("content", "")) for m in request["messages"])
    if "find_user_id" not in json.dumps(request["messages"][2:]):
        return {"content": None, "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "find_user_id_by_email", "arguments": json.dumps({"email": "x@example.com"})}}]}
    return f"Goodbye from {request['model']} ({len(said)} chars seen)."


def test_tool_calls_become_env_actions():
    text = action_text({"tool_calls": [{"function": {"name": "get_order_details",
                                                     "arguments": '{"order_id": "#W1"}'}}]})
    parsed = parse_action(text)
    assert parsed.kind == "tool" and parsed.name == "get_order_details" and parsed.arguments == {"order_id": "#W1"}
    assert action_text({"content": "Hello"}) == "Hello"
    bad = action_text({"tool_calls": [{"function": {"name": "x", "arguments": "{not json"}}]})
    assert "{not json" in bad  # the env reports the format error; nothing crashes here


def test_rollout_through_an_endpoint_with_adapters_per_row():
    with fake_endpoint(reply) as (url, seen):
        policy = EndpointPolicy(url, model="base", temperature=0.7, max_tokens=64, concurrency=4)
        result = rollout(policy, ENV, range(4), batch_size=4, progress=False,
                         adapters=lambda env_id, seed: "precondition_verification" if seed % 2 else None)
    assert result.n_episodes == 4
    models = {req["model"] for _, req in seen}
    assert models == {"base", "precondition_verification"}
    first = seen[0][1]
    assert first["tools"] and first["temperature"] == 0.7 and first["max_tokens"] == 64
    assert all(path == "/v1/chat/completions" for path, _ in seen)
    # The agent's earlier tool call goes back in wire form: arguments as a JSON string.
    calls = [m["tool_calls"][0] for _, req in seen for m in req["messages"] if m.get("tool_calls")]
    assert calls and all(isinstance(c["function"]["arguments"], str) for c in calls)
    assert json.loads(calls[0]["function"]["arguments"]) == {"email": "x@example.com"}


def test_a_dead_endpoint_is_a_clear_error():
    policy = EndpointPolicy("http://127.0.0.1:9/v1", model="m", timeout=2)
    import gymnasium as gym

    _, info = gym.make(ENV).reset(seed=0)
    with pytest.raises(RuntimeError, match="127.0.0.1:9/v1/chat/completions failed"):
        policy.act_batch([info])
    with pytest.raises(ValueError, match="obs_format"):
        EndpointPolicy("http://x", model="m", obs_format="xml")
