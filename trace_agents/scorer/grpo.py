"""GRPO for the scorer: a LoRA adapter trained on episode returns, for a categorical policy over candidates.

>>> from trace_agents.training import GRPOConfig
>>> train_scorer_adapter(GRPOConfig(out="runs/x/adapters/precondition", env_ids=["trace/precondition-v0"],
...                                   max_steps=40), model="runs/bootstrap/model")

## Why not TRL
TRL's ``GRPOTrainer`` trains generative models: it computes token log-probabilities of
completions under a causal LM, and its rollouts, masks and losses are all about token
sequences. The scorer generates nothing; each decision is one draw from a softmax over a
list of candidates scored by a small network. So the objective is written here, small
enough to test on its own (:func:`group_advantages`, :func:`policy_loss`).

## The objective
Each step plays ``groups_per_step`` tasks ``num_generations`` (K) times with the adapter
being trained, sampling at ``temperature``. Within each group of K rollouts of one task,
a return's advantage is ``(r - mean) / std``; a group whose returns are all equal has
nothing to compare and is dropped. Every decision of an episode is credited with its
episode's advantage. The loss is PPO's clipped surrogate per decision,
``-min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon) * A)`` with
``ratio = p_new(a) / p_old(a)``, averaged over decisions, plus ``beta`` times the k3
estimate of the KL to the base network (adapter off) when ``beta > 0``.

Each step makes one optimizer update, on the episodes it has just played, so at that update
``ratio`` is 1 and the clip never acts (TRL's GRPO with its default ``num_iterations=1`` is
the same): the gradient is the policy gradient ``A * grad log p(a)``. The surrogate is kept
in PPO's form so that ``clip_fraction`` in the log would show it if several updates per
batch (or LoRA dropout, which makes the two passes differ) were used.

The decisions are rebuilt from each episode's messages: the admissible list is a pure
function of the conversation (:class:`trace_envs.admissible.AdmissibleActions`), every
env step adds two messages, and the action taken is in that list by construction.

## Artefacts (``out/``), as for the ``lm`` trainer
- ``adapter/``: the LoRA adapter in PEFT's layout;
- ``checkpoint-N/``: the adapter, optimizer moments (safetensors), sampler state and
  ``trainer_state.json`` (written last, so a checkpoint cut by ``kill -9`` is ignored);
  ``resume=True`` continues from the newest complete one and plays the same episodes;
- ``log.jsonl``: one line per step (loss, reward, success, dropped groups, rollouts_used);
- ``summary.json``: settings, steps, rollouts used and timing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from trace_agents.scorer.features import Conversation, Decision

ADAPTER = "grpo"  # the adapter being trained (not "train": PEFT would shadow Module.train)


def group_advantages(returns: Sequence[float], groups: Sequence[Hashable], eps: float = 1e-6) -> list[float | None]:
    """Group-normalized advantages; None for every member of a group whose returns are all equal."""
    if len(returns) != len(groups):
        raise ValueError(f"{len(returns)} returns but {len(groups)} group labels")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: list[float | None] = [None] * len(returns)
    for idx in members.values():
        values = [float(returns[i]) for i in idx]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if std < eps:
            continue
        for i, v in zip(idx, values, strict=True):
            out[i] = (v - mean) / std
    return out


def log_probs(scores: torch.Tensor, chosen: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each row's chosen candidate under ``softmax(scores / temperature)``."""
    return torch.log_softmax(scores / temperature, dim=-1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)


def policy_loss(
    new: torch.Tensor,
    old: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    ref: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate (and k3 KL to ``ref`` when ``beta > 0``), averaged over decisions.

    Args:
        new: Per decision, the log-probability of the action taken under the weights being trained.
        old: The same under the weights that played the episodes (no gradient).
        advantages: Per decision, its episode's group-normalized advantage.
        epsilon: The clip range: moving the ratio past ``1 ± epsilon`` in the advantage's favour
            earns nothing more.
        ref: The same log-probabilities under the base network (adapter off), for the KL term;
            None: no KL term.
        beta: The KL term's weight; 0: none.
    """
    ratio = torch.exp(new - old)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    stats = {"clip_fraction": float(((ratio - 1).abs() > epsilon).float().mean())}
    if beta > 0 and ref is not None:
        delta = ref - new
        kl = (torch.exp(delta) - delta - 1).mean()
        loss = loss + beta * kl
        stats["kl"] = float(kl)
    return loss, stats


def episode_decisions(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    actions: Sequence[str],
    *,
    near_misses: bool,
    max_actions: int,
) -> list[tuple[Decision, int]]:
    """Every decision of a finished episode and the index of the action taken in its list."""
    from trace_envs.admissible import AdmissibleActions

    lister = AdmissibleActions(tools, near_misses=near_misses, max_actions=max_actions)
    conversation = Conversation()
    out = []
    for k, action in enumerate(actions):
        prefix = messages[: 2 + 2 * k]  # reset leaves two messages; every step adds two
        candidates = lister.update(prefix)
        if action not in candidates:
            raise ValueError(
                f"step {k}: the action taken is not in the rebuilt admissible list; the episode was "
                f"not played from admissible lists with near_misses={near_misses}, "
                f"max_actions={max_actions}"
            )
        out.append((conversation.update(prefix).decision(candidates), candidates.index(action)))
    return out


def _save_adapter(policy: Any, path: Path) -> None:
    """The trained adapter in PEFT's layout at the top of ``path`` (PEFT puts a named adapter in a
    subfolder; checkpoints and ``adapter/`` hold it at the top, where the run's curve looks)."""
    policy.model.save_pretrained(str(path), selected_adapters=[ADAPTER])
    inner = path / ADAPTER
    if inner.is_dir():
        for f in inner.iterdir():
            os.replace(f, path / f.name)
        inner.rmdir()


def _save_checkpoint(
    out: Path, step: int, policy: Any, optimizer: torch.optim.Optimizer, extra: Mapping[str, Any]
) -> Path:
    from safetensors.torch import save_file

    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_adapter(policy, tmp)
    moments: dict[str, torch.Tensor] = {}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            moments[f"{i}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    moments["sampler"] = policy._generator.get_state().clone()
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step, **extra}) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _load_checkpoint(checkpoint: Path, policy: Any, optimizer: torch.optim.Optimizer) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(checkpoint / "adapter_model.safetensors"))
    set_peft_model_state_dict(policy.model, weights, adapter_name=ADAPTER)
    moments = load_file(str(checkpoint / "optimizer.safetensors"))
    policy._generator.set_state(moments.pop("sampler"))
    state = optimizer.state_dict()
    for key, value in moments.items():
        i, name = key.split(".", 1)
        state["state"].setdefault(int(i), {})[name] = value
    optimizer.load_state_dict(state)
    return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def train_scorer_adapter(settings: Any, model: Any, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one LoRA adapter on a scorer with GRPO; returns the summary (also ``out/summary.json``).

    ``settings`` is a :class:`~trace_agents.training.GRPOConfig` (its generation fields,
    such as ``max_new_tokens``, do not apply); ``model`` a saved scorer directory or a
    :class:`~trace_agents.scorer.agent.ScorerPolicy`. The base network is never changed.
    """
    import trace_envs
    from trace_agents.rollout import rollout, turn_limit
    from trace_agents.scorer.agent import ScorerPolicy
    from trace_agents.training import prepare_out, trim_log

    out = Path(settings.out)
    for env_id in settings.env_ids:
        trace_envs.make(env_id).close()  # an unknown id fails here, with a did-you-mean
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        policy = ScorerPolicy.from_pretrained(model)
    else:
        policy, source = model, model.source
    checkpoint = prepare_out(out, resume)
    for p in policy.model.parameters():
        p.requires_grad_(False)
    policy.lora(
        ADAPTER, r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout, seed=settings.seed
    )
    params = [p for n, p in policy.model.named_parameters() if "lora_" in n and f".{ADAPTER}." in n]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    policy.temperature = settings.temperature
    policy._generator.manual_seed(settings.seed)
    start = _load_checkpoint(checkpoint, policy, optimizer) if checkpoint else 0
    trim_log(out / "log.jsonl", start)
    env_kwargs = {**policy.env_kwargs, **(turn_limit(settings.max_turns) if settings.max_turns else {})}
    tasks = settings.tasks()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.max_steps, initial=start, desc="grpo", unit="step")
    loss_value = float("nan")
    for step in range(start, settings.max_steps):
        t_step = time.perf_counter()
        step_tasks = tasks[step * settings.groups_per_step : (step + 1) * settings.groups_per_step]
        policy.model.eval()
        result = rollout(
            policy,
            step_tasks,
            None,
            repeats=settings.num_generations,
            adapters=lambda e, s: ADAPTER,
            batch_size=settings.rollout_batch_size,
            progress=False,
            env_kwargs=env_kwargs,
            keep_infos=True,
        )
        returns = [r["return"] for r in result.records]
        groups = [i // settings.num_generations for i in range(len(returns))]
        advantages = group_advantages(returns, groups)
        decisions: list[Decision] = []
        chosen: list[int] = []
        credit: list[float] = []
        for record, info, adv in zip(result.records, result.final_infos, advantages, strict=True):
            if adv is None:
                continue
            pairs = episode_decisions(
                info["messages"],
                info["tools"],
                [s["action"] for s in record["steps"]],
                near_misses=policy.near_misses,
                max_actions=policy.max_actions,
            )
            for d, c in pairs:
                decisions.append(d)
                chosen.append(c)
                credit.append(adv)
        stats: dict[str, float] = {}
        if decisions:
            batch = policy.tensors(decisions)
            index = torch.tensor(chosen)
            with torch.no_grad():
                old = log_probs(policy.scores(batch, [ADAPTER] * len(decisions)), index, settings.temperature)
                ref = log_probs(policy.scores(batch, None), index, settings.temperature) if settings.beta > 0 else None
            policy.model.train()
            new = log_probs(policy.scores(batch, [ADAPTER] * len(decisions)), index, settings.temperature)
            loss, stats = policy_loss(new, old, torch.tensor(credit), settings.epsilon, ref, settings.beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
            policy.model.eval()
        done = step + 1
        entry = {
            "step": done,
            "rollouts_used": done * settings.rollouts_per_step,
            "loss": loss_value if decisions else 0.0,
            "reward": sum(returns) / len(returns),
            "success": sum(r["success"] for r in result.records) / len(returns),
            "dropped_groups": sum(a is None for a in advantages[:: settings.num_generations]),
            "decisions": len(decisions),
            "seconds": time.perf_counter() - t_step,
            **stats,
        }
        with open(out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if done % settings.save_steps == 0 or done == settings.max_steps:
            _save_checkpoint(out, done, policy, optimizer, {"rollouts_used": entry["rollouts_used"]})
        if bar is not None:
            bar.update()
            bar.set_postfix(reward=f"{entry['reward']:.3f}", success=f"{entry['success']:.2f}")
    if bar is not None:
        bar.close()
    adapter_dir = out / "adapter"
    tmp = out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_adapter(policy, tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(tmp, adapter_dir)
    summary = {
        "settings": asdict(settings),
        "agent": "scorer",
        "model": source,
        "adapter": str(adapter_dir),
        "steps": settings.max_steps,
        "rollouts_used": settings.max_steps * settings.rollouts_per_step,
        "rollouts_this_run": (settings.max_steps - start) * settings.rollouts_per_step,
        "processes": 1,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_loss": loss_value,
        "seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
