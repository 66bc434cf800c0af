"""GRPO LoRA training: token masks, dropped groups, LoRA-only updates, adapters on disk, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from safetensors.torch import load_file

from trace_agents import models
from trace_agents.rollout import OracleBatch, rollout
from trace_agents.training import (
    GRPOConfig,
    episode_sample,
    group_samples,
    last_checkpoint,
    read_log,
    task_prompt,
    train_adapter,
)
from trace_envs import OraclePolicy

ENV = "trace/precondition-v0"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok, base):
    path = tmp_path_factory.mktemp("model")
    base.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def oracle_episode(env_id=ENV, seed=0, deficits=None):
    env = gym.make(env_id)
    obs, info = env.reset(seed=seed)
    oracle = OraclePolicy(deficits=deficits or {}, seed=seed)
    oracle.reset(env)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
        done = terminated or truncated
    return info


def oracle_play(tasks, repeats, model, step):
    """A scripted player: the oracle with mistakes, so a group's returns differ."""
    played = []
    for k in range(repeats):
        policy = OracleBatch(
            deficits=dict.fromkeys(
                (
                    "precondition_verification",
                    "tool_calling_precision",
                    "structured_data_reasoning",
                    "multi_step_completion",
                ),
                0.5,
            ),
            seed=1000 * step + k,
        )
        result = rollout(policy, tasks, None, keep_infos=True, progress=False)
        played += zip(result.records, result.final_infos, strict=True)
    return played


def settings(tmp_path, **kw):
    base = dict(
        out=str(tmp_path / "run"),
        env_ids=[ENV],
        max_steps=2,
        num_generations=2,
        groups_per_step=2,
        max_new_tokens=8,
        max_length=2048,
        save_steps=1,
        rollout_batch_size=4,
    )
    return GRPOConfig(**{**base, **kw})


# ---------------------------------------------------------------- samples and masks
def test_the_env_mask_covers_exactly_the_agent_turns(tok):
    info = oracle_episode()
    prompt, completion, mask = episode_sample(info, tok)
    assert len(completion) == len(mask) and mask[0] == 1 and mask[-1] == 1
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    assert completion[-1] == tok.eos_token_id  # a finished turn, as generation ends it
    # Each run of 1s is one agent turn; each run of 0s is what the env said in between.
    runs, current, prev = [], [], None
    for t, m in zip(completion, mask, strict=True):
        if m != prev and current:
            runs.append((prev, current))
            current = []
        current.append(t)
        prev = m
    runs.append((prev, current))
    agent = [tok.decode(ids) for m, ids in runs if m == 1]
    env_text = [tok.decode(ids) for m, ids in runs if m == 0]
    turns = [m for m in info["messages"] if m["role"] == "assistant"]
    assert len(agent) == len(turns)
    for text, turn in zip(agent, turns, strict=True):
        if turn.get("tool_calls"):
            assert turn["tool_calls"][0]["function"]["name"] in text
        else:
            assert turn["content"].strip()[:20] in text
    assert all("<|im_start|>assistant" not in t or t.rstrip().endswith("<|im_start|>assistant") for t in env_text)
    tool_results = [m["content"] for m in info["messages"] if m["role"] == "tool"]
    assert tool_results and all(r[:30] in "".join(env_text) for r in tool_results)


def _fake(env_id, seed, ret, info):
    return (
        {"env_id": env_id, "seed": seed, "return": ret, "success": ret > 0.9, "return_components": {"x": ret}},
        info,
    )


def test_groups_without_variance_are_dropped(tok):
    info = oracle_episode()
    a, b = (ENV, 0), (ENV, 1)
    played = [_fake(*a, 0.5, info), _fake(*a, 0.5, info), _fake(*b, 0.2, info), _fake(*b, 1.0, info)]
    out = group_samples([a, a, b, b], played, tok)
    assert out["group_dropped"] == [True, True, False, False]
    assert not any(out["env_mask"][0]) and not any(out["env_mask"][1])
    assert any(out["env_mask"][2]) and any(out["env_mask"][3])
    assert out["episode_return"] == [0.5, 0.5, 0.2, 1.0]
    with pytest.raises(ValueError, match="appears 3 times"):
        group_samples([a, a, a], played, tok)
    # Part of a group (the rest on another process) is not judged on its own.
    assert group_samples([a, a], played[:2], tok, group_size=4)["group_dropped"] == [False, False]


def test_settings_are_checked_and_budgeted(tmp_path):
    s = settings(tmp_path, env_ids=["trace/a-v0", "trace/b-v0"], max_steps=3, groups_per_step=2, num_generations=4)
    assert s.rollouts_per_step == 8 and s.rollouts == 24
    assert s.tasks() == [
        ("trace/a-v0", 0),
        ("trace/b-v0", 0),
        ("trace/a-v0", 1),
        ("trace/b-v0", 1),
        ("trace/a-v0", 2),
        ("trace/b-v0", 2),
    ]
    assert json.loads(task_prompt("trace/a-v0", 3)) == {"env_id": "trace/a-v0", "seed": 3}
    for bad in ({"num_generations": 1}, {"env_ids": []}, {"max_steps": 0}, {"obs_format": "xml"}, {"temperature": 0}):
        with pytest.raises(ValueError):
            settings(tmp_path, **bad)


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_dir):
    """Two adapters trained for 2 steps each from the same base (scripted episodes: varied returns)."""
    root = tmp_path_factory.mktemp("train")
    summaries = {}
    for name, env_id in (("pre", ENV), ("data", "trace/structured-data-v0")):
        s = settings(root / name, env_ids=[env_id])
        summaries[name] = train_adapter(s, model_dir, progress=False, play=oracle_play)
    return summaries


def test_training_changes_the_lora_weights_and_not_the_base(trained, model_dir):
    from safetensors.torch import load_file as load

    base = load(str(Path(model_dir) / "model.safetensors"))
    adapter = load_file(str(Path(trained["pre"]["adapter"]) / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    # LoRA's B starts at zero: a B that is no longer zero was trained.
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    # The base file is untouched, and the adapter holds no base weight.
    assert load(str(Path(model_dir) / "model.safetensors")).keys() == base.keys()
    assert not set(adapter) & set(base)
    config = json.loads((Path(trained["pre"]["adapter"]) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8


def test_the_base_model_in_memory_is_unchanged(tmp_path, model_dir):
    model, tok = models.load(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_adapter(settings(tmp_path, max_steps=1), model, tok, progress=False, play=oracle_play)
    # PEFT wraps each targeted layer in place: its weight moves to ``...base_layer.weight``.
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("lora_" in k for k in model.state_dict())  # the adapter was really attached to this model


def test_the_budget_charged_is_the_episodes_played(tmp_path, model_dir):
    played = []

    def counting(tasks, repeats, model, step):
        episodes = oracle_play(tasks, repeats, model, step)
        played.extend(episodes)
        return episodes

    summary = train_adapter(
        settings(tmp_path, max_steps=2, num_generations=3), model_dir, progress=False, play=counting
    )
    assert len(played) == summary["rollouts_used"] == summary["rollouts_this_run"] == 2 * 3 * 2


def test_the_log_and_summary_count_rollouts(trained):
    summary = trained["pre"]
    assert summary["steps"] == 2 and summary["rollouts_used"] == 2 * 2 * 2 == summary["rollouts_this_run"]
    log = [e for e in read_log(Path(summary["adapter"]).parent) if "loss" in e]
    assert [e["step"] for e in log] == [1, 2]
    assert [e["rollouts_used"] for e in log] == [4, 8]
    for e in log:
        assert {"reward", "success", "groups_dropped"} <= set(e)
        assert any(k.startswith("components/") for k in e)


def test_adapters_load_in_a_fresh_process_and_together(trained, model_dir):
    code = f"""
import json
from trace_agents.policy import HFPolicy
import gymnasium as gym
policy = HFPolicy.from_pretrained({str(model_dir)!r}, adapters={{"pre": {trained["pre"]["adapter"]!r},
                                  "data": {trained["data"]["adapter"]!r}}}, max_new_tokens=6)
env = gym.make("trace/retail-v0")
_, info = env.reset(seed=0)
acts = policy.act_batch([info, info, info], ["pre", "data", None])
print(json.dumps({{"adapters": sorted(policy.model.peft_config), "n": len(acts)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"adapters": ["data", "pre"], "n": 3}


def test_on_policy_training_plays_with_the_model(tmp_path, model_dir):
    summary = train_adapter(settings(tmp_path, max_steps=1), model_dir, progress=False)
    assert summary["steps"] == 1 and summary["rollouts_this_run"] == 4
    assert (Path(summary["adapter"]) / "adapter_model.safetensors").exists()


def test_a_second_run_into_the_same_dir_needs_resume(tmp_path, model_dir):
    s = settings(tmp_path, max_steps=1)
    train_adapter(s, model_dir, progress=False, play=oracle_play)
    with pytest.raises(FileExistsError, match="--resume"):
        train_adapter(s, model_dir, progress=False, play=oracle_play)


def test_an_unknown_env_is_reported_before_training(tmp_path, model_dir):
    with pytest.raises(Exception, match="precondition"):
        train_adapter(settings(tmp_path, env_ids=["trace/precondtion-v0"]), model_dir, progress=False)


# ---------------------------------------------------------------- kill -9 and resume
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, model_dir):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "trace_agents.cli",
        "train",
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--env-ids",
        ENV,
        "--max-steps",
        "4",
        "--save-steps",
        "1",
        "--num-generations",
        "2",
        "--groups-per-step",
        "1",
        "--max-new-tokens",
        "8",
        "--max-length",
        "2048",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and last_checkpoint(out) is None:
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = last_checkpoint(out)
    assert killed_at is not None and not (out / "adapter").exists()

    # Without --resume the directory is protected.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["rollouts_used"] == 8
    assert summary["resumed_from"] == str(killed_at)
    assert summary["rollouts_this_run"] == (4 - int(killed_at.name.split("-")[1])) * 2
    steps = [e["step"] for e in read_log(out) if "loss" in e]
    assert steps == [1, 2, 3, 4]  # nothing lost, nothing logged twice


@pytest.mark.slow
def test_training_runs_distributed_over_two_processes(tmp_path, model_dir):
    """The scale-out path as far as CPU goes: torchrun (what `accelerate launch --multi_gpu` runs), DDP over
    gloo, each process playing its share of the groups."""
    out = tmp_path / "ddp"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "trace_agents.cli",
        "train",
        "--model",
        str(model_dir),
        "--env-ids",
        ENV,
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--num-generations",
        "2",
        "--groups-per-step",
        "2",
        "--max-new-tokens",
        "8",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        # TMPDIR: torchrun makes a torchelastic_* log folder there (else in /tmp, left behind).
        env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 and summary["rollouts_used"] == 8
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert [e["step"] for e in read_log(out) if "loss" in e] == [1, 2]


# ---------------------------------------------------------------- rollouts on a vLLM server
def training_chat(request):
    """Two behaviours, so a group's returns differ and the adapter learns."""
    if request["seed"] % 2:
        return "Thank you for contacting us. Have a great day, goodbye!"
    return '<tool_call>\n{"name": oops\n</tool_call>'  # a format error costs return


def test_rollouts_can_be_generated_on_a_served_model(tmp_path, model_dir, monkeypatch, fake_endpoint, stand_in_vllm):
    """With vllm_url, every step's adapter is loaded into the server, played with, and unloaded."""
    from trace_agents.training import ServedRollouts

    monkeypatch.delenv("RANK", raising=False)
    s = settings(tmp_path)
    run_id = ServedRollouts(GRPOConfig(out=s.out, vllm_url="x"), Path(s.out) / "served").run_id
    names = [f"grpo-{run_id}-step-{k}-rank0" for k in range(2)]
    server = stand_in_vllm(training_chat)
    server.loaded[names[0]] = "left by a killed run"
    with fake_endpoint(server) as (url, seen):
        summary = train_adapter(settings(tmp_path, vllm_url=url), model_dir, progress=False)
    assert summary["steps"] == 2 and summary["rollouts_used"] == 8
    chat_requests = [r for path, r in seen if path.endswith("/chat/completions")]
    assert all(r["top_k"] == -1 and r["repetition_penalty"] == 1.0 for r in chat_requests)  # plain sampling
    assert all(r["stop"] == ["</tool_call>"] and r["include_stop_str_in_output"] for r in chat_requests)
    events = server.log
    chats = [name for kind, name in events if kind == "chat"]
    assert len(chats) >= 8 and set(chats) == set(names)
    # Per step: (the stale name unloaded,) load, that step's requests, unload; nothing stays loaded.
    assert [e for e in events if e[0] != "chat"] == [
        ("unload", names[0]),
        ("load", names[0]),
        ("unload", names[0]),
        ("load", names[1]),
        ("unload", names[1]),
    ]
    assert [name for kind, name in events if kind == "chat"] == sorted(chats)
    assert not server.loaded and not any((Path(s.out) / "served").iterdir())


def test_the_served_adapter_is_the_one_being_trained(tmp_path, model_dir, monkeypatch, fake_endpoint, stand_in_vllm):
    monkeypatch.delenv("RANK", raising=False)
    hashes = []

    class Recording(stand_in_vllm):
        def __call__(self, request):
            answer = super().__call__(request)
            if "lora_path" in request:
                hashes.append(self.loaded[request["lora_name"]])
            return answer

    with fake_endpoint(Recording(training_chat)) as (url, _):
        train_adapter(settings(tmp_path, vllm_url=url), model_dir, progress=False)
    assert len(hashes) == 2 and hashes[0] != hashes[1]  # step 1 serves the weights step 0 updated


def test_a_failed_step_still_unloads_its_adapter(tmp_path, base, monkeypatch, fake_endpoint, stand_in_vllm, quiet_peft):
    import copy

    from peft import LoraConfig, get_peft_model

    from trace_agents.endpoint import EndpointError
    from trace_agents.training import ServedRollouts

    monkeypatch.delenv("RANK", raising=False)
    with quiet_peft():
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj"]))
    server = stand_in_vllm(chat=lambda request: (500, {"message": "out of memory"}))
    with fake_endpoint(server) as (url, _):
        play = ServedRollouts(settings(tmp_path, vllm_url=url), tmp_path / "served")
        with pytest.raises(EndpointError, match="out of memory"):
            play([(ENV, 0)], 2, model, step=3)
    assert [kind for kind, _ in server.log if kind != "chat"] == ["load", "unload"] and not server.loaded
    assert not any((tmp_path / "served").iterdir())


def test_a_server_without_runtime_lora_loading_gets_a_hint(tmp_path, fake_endpoint):
    from trace_agents.endpoint import EndpointError, load_lora_adapter

    with fake_endpoint(lambda request: (404, {"detail": "Not Found"})) as (url, _):
        with pytest.raises(EndpointError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            load_lora_adapter(url, "x", tmp_path)
    with fake_endpoint(lambda request: (400, {"message": "rank 64 exceeds --max-lora-rank 16"})) as (url, _):
        with pytest.raises(EndpointError, match="max-lora-rank") as info:
            load_lora_adapter(url, "x", tmp_path)
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in str(info.value)  # another cause: no misleading hint


def test_activation_checkpointing_is_turned_off_under_either_field_name():
    import dataclasses

    from trace_agents import no_activation_checkpointing

    newer = dataclasses.make_dataclass(
        "Newer", [("activation_checkpointing", bool, True), ("gradient_checkpointing", bool, True)]
    )
    older = dataclasses.make_dataclass("Older", [("gradient_checkpointing", bool, True)])
    assert no_activation_checkpointing(newer) == {"activation_checkpointing": False}  # not the deprecated alias
    assert no_activation_checkpointing(older) == {"gradient_checkpointing": False}
    from trl import GRPOConfig, SFTConfig

    for config in (GRPOConfig, SFTConfig):  # the installed TRL takes it, and it is off
        args = config(output_dir="unused", report_to=[], use_cpu=True, **no_activation_checkpointing(config))
        assert not getattr(args, next(iter(no_activation_checkpointing(config))))
