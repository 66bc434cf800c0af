"""EndpointPolicy: an OpenAI-compatible server (such as vLLM with --enable-lora) as the agent."""

from __future__ import annotations

import json

import pytest

from trace_agents.endpoint import (
    EndpointError,
    EndpointPolicy,
    action_text,
    served_base_model,
    without_older_turns,
)
from trace_agents.rollout import rollout
from trace_envs import parse_action

ENV = "trace/precondition-v0"


def reply(request):
    """Look up the user when the agent has not yet, else say goodbye; echo the served model name."""
    said = " ".join(str(m.get("content", "")) for m in request["messages"])
    if "find_user_id" not in json.dumps(request["messages"][2:]):
        return {
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "find_user_id_by_email", "arguments": json.dumps({"email": "x@example.com"})},
                }
            ],
        }
    return f"Goodbye from {request['model']} ({len(said)} chars seen)."


def test_tool_calls_become_env_actions():
    text = action_text(
        {"tool_calls": [{"function": {"name": "get_order_details", "arguments": '{"order_id": "#W1"}'}}]}
    )
    parsed = parse_action(text)
    assert parsed.kind == "tool" and parsed.name == "get_order_details" and parsed.arguments == {"order_id": "#W1"}
    assert action_text({"content": "Hello"}) == "Hello"
    call = '<tool_call>\n{"name": "get_order_details", "arguments": {}}\n</tool_call>'
    assert action_text({"content": call + " and more"}) == call  # one action, as in-process
    bad = action_text({"tool_calls": [{"function": {"name": "x", "arguments": "{not json"}}]})
    assert "{not json" in bad  # the env reports the format error; nothing crashes here


def test_rollout_through_an_endpoint_with_adapters_per_row(fake_endpoint):
    with fake_endpoint(reply) as (url, seen):
        policy = EndpointPolicy(url, model="base", temperature=0.7, max_tokens=64, concurrency=4)
        result = rollout(
            policy,
            ENV,
            range(4),
            batch_size=4,
            progress=False,
            adapters=lambda env_id, seed: "precondition_verification" if seed % 2 else None,
        )
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


def test_local_adapters_are_loaded_into_the_server_and_rows_ask_for_them_by_name(
    tmp_path, fake_endpoint, stand_in_vllm, fake_adapter
):
    server = stand_in_vllm(lambda request: f"Goodbye from {request['model']}.")
    server.loaded["run1:pre"] = "left by a killed run"  # vLLM refuses to load a name twice
    with fake_endpoint(server, server.get) as (url, _):
        policy = EndpointPolicy(url, "base", adapter_prefix="run1:", max_tokens=8)
        policy.load_adapter("pre", fake_adapter(tmp_path / "pre"))
        result = rollout(
            policy,
            ENV,
            range(4),
            batch_size=4,
            progress=False,
            adapters=lambda env_id, seed: "pre" if seed % 2 else None,
        )
        assert policy.identity()["adapters"] == {"pre": str(tmp_path / "pre")}
        assert url not in json.dumps(policy.identity())  # where it runs is not who it is: resume keys stay
        policy.close()
    assert [e for e in server.log if e[0] != "chat"] == [
        ("unload", "run1:pre"),
        ("load", "run1:pre"),
        ("unload", "run1:pre"),
    ]
    assert {name for kind, name in server.log if kind == "chat"} == {"base", "run1:pre"}
    assert {r["seed"]: r["adapter"] for r in result.records} == {0: None, 1: "pre", 2: None, 3: "pre"}
    assert not server.loaded and not policy.adapters


def test_closing_warns_about_an_adapter_that_would_not_unload_and_unloads_the_rest(
    tmp_path, fake_endpoint, stand_in_vllm, fake_adapter
):
    server = stand_in_vllm(lambda request: "Goodbye.")
    with fake_endpoint(server, server.get) as (url, _):
        policy = EndpointPolicy(url, "base", adapter_prefix="r:")
        for name in ("a", "b"):
            policy.load_adapter(name, fake_adapter(tmp_path / name))
        del server.loaded["r:a"]  # the server lost it (restarted, say)
        with pytest.warns(UserWarning, match="could not unload adapter 'r:a'"):
            policy.close()
    assert not server.loaded and not policy.adapters


def test_the_served_base_model_is_the_one_listed_without_a_parent(tmp_path, fake_endpoint, stand_in_vllm):
    server = stand_in_vllm(lambda request: "", base="Qwen/Qwen3-8B", root="/models/qwen3")
    server.loaded["some-adapter"] = "..."
    with fake_endpoint(server, server.get) as (url, _):
        assert served_base_model(url) == {
            "id": "Qwen/Qwen3-8B",
            "object": "model",
            "root": "/models/qwen3",
            "parent": None,
        }
    aliases = lambda path: (200, {"data": [{"id": "a", "root": "/m"}, {"id": "b", "root": "/m"}]})  # noqa: E731
    with fake_endpoint(server, aliases) as (url, _):  # one model under two --served-model-name aliases
        assert served_base_model(url)["id"] == "a"
    two = lambda path: (200, {"data": [{"id": "a"}, {"id": "b", "parent": None}]})  # noqa: E731
    with fake_endpoint(server, two) as (url, _):
        with pytest.raises(EndpointError, match=r"serves 2 base models \(a, b\); expected exactly one"):
            served_base_model(url)
    with fake_endpoint(server, lambda path: (200, {"models": []})) as (url, _):
        with pytest.raises(EndpointError, match="did not list models as OpenAI's API does"):
            served_base_model(url)
    with fake_endpoint(server) as (url, _):  # no GET route at all
        with pytest.raises(EndpointError, match="HTTP 404"):
            served_base_model(url)


def test_trace_evaluate_and_collect_can_generate_on_a_server(
    tmp_path, capsys, fake_endpoint, stand_in_vllm, fake_adapter
):
    from trace_agents.cli import main
    from trace_agents.trajectories import TrajectoryStore

    server = stand_in_vllm(lambda request: f"Goodbye from {request['model']}.")
    adapter = fake_adapter(tmp_path / "adapter")
    with fake_endpoint(server, server.get) as (url, seen):
        code = main(
            [
                "evaluate",
                "--endpoint",
                url,
                "--model",
                "base",
                "--adapter",
                str(adapter),
                "--env",
                ENV,
                "--episodes",
                "2",
                "--obs-format",
                "compact",
                "--out",
                str(tmp_path / "eval.json"),
            ]
        )
        assert code == 0
        served = {name for kind, name in server.log if kind == "chat"}
        assert len(served) == 1 and served.pop().endswith(str(adapter))  # the local adapter, loaded there
        assert not server.loaded, "evaluate unloads what it loaded"
        assert "tools" not in seen[-1][1], "compact: the tools are in the text, not the request"
        out = tmp_path / "c.jsonl"
        assert (
            main(["collect", "--endpoint", url, "--model", "base", "--env", ENV, "--episodes", "3", "--out", str(out)])
            == 0
        )
        assert server.log[-1] == ("chat", "base") and "tools" in seen[-1][1]  # chat format by default there
        assert main(["evaluate", "--endpoint", url, "--model", "oracle", "--episodes", "1"]) == 2
    assert len(list(TrajectoryStore(out).records())) == 3
    assert "the oracle runs here" in capsys.readouterr().err
    with fake_endpoint(server, server.get) as (url, _):  # an adapter the server does not have: a clear error
        assert (
            main(
                [
                    "evaluate",
                    "--endpoint",
                    url,
                    "--model",
                    "base",
                    "--adapter",
                    "missing",
                    "--env",
                    ENV,
                    "--episodes",
                    "1",
                    "--out",
                    str(tmp_path / "e.json"),
                ]
            )
            == 2
        )
    assert "does not exist" in capsys.readouterr().err


CONTEXT = (
    "This model's maximum context length is 512 tokens. However, you requested 700 tokens "
    "(444 in the messages, 256 in the completion). Please reduce the length of the messages or completion."
)


def conversation(exchanges):
    """System, the task, then ``exchanges`` of: assistant tool call, tool result, assistant text, user reply."""
    messages = [{"role": "system", "content": "tools"}, {"role": "user", "content": "the task"}]
    for i in range(exchanges):
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": f"read{i}"}}]},
            {"role": "tool", "content": f"result {i}"},
            {"role": "assistant", "content": f"answer {i}"},
            {"role": "user", "content": f"reply {i}"},
        ]
    return messages


def test_older_turns_go_first_and_the_opening_and_tool_pairs_stay():
    messages = conversation(5)
    shorter = without_older_turns(messages)
    assert shorter[:2] == messages[:2] and shorter[2:] == messages[-4 * 3 :]  # 2 of 4 cuts dropped: 3 exchanges left
    while (next_one := without_older_turns(shorter)) is not None:
        shorter = next_one
        roles = [m["role"] for m in shorter]
        assert shorter[:2] == messages[:2] and roles[2] == "assistant"
        assert all(roles[k - 1] == "assistant" for k, r in enumerate(roles) if r == "tool")
    assert shorter == messages[:2] + messages[-4:]  # the opening and the latest exchange
    assert without_older_turns(messages[:2]) is None


def test_a_prompt_past_the_context_is_resent_without_older_turns(fake_endpoint):
    def reply(request):
        if len(request["messages"]) > 8:
            return 400, {"object": "error", "message": CONTEXT, "type": "BadRequestError", "code": 400}
        return f"kept {len(request['messages'])}"

    with fake_endpoint(reply) as (url, seen):
        policy = EndpointPolicy(url, "base")
        [action] = policy.act_batch([{"messages": conversation(6), "tools": []}])
        assert action == "kept 6" and policy.shortened == 3  # 26 -> 14 -> 10 -> 6 messages
        assert seen[-1][1]["messages"][1] == {"role": "user", "content": "the task"}
        with pytest.raises(EndpointError, match="longer --max-model-len"):  # nothing left to drop
            EndpointPolicy(url, "base").act_batch(
                [{"messages": conversation(1)[:2] + [{"role": "user", "content": "x" * 10}] * 8, "tools": []}]
            )


def test_other_refusals_are_not_retried(fake_endpoint):
    with fake_endpoint(lambda request: (400, {"message": "temperature must be >= 0"})) as (url, seen):
        with pytest.raises(EndpointError, match="temperature must be"):
            EndpointPolicy(url, "base").act_batch([{"messages": conversation(3), "tools": []}])
    assert len(seen) == 1
