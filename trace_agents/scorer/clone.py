"""Behaviour cloning of the scorer on oracle demonstrations (cross-entropy over the admissible list).

:func:`demo_decisions` plays :class:`~trace_envs.OraclePolicy` (with its deficit profile)
on envs that list admissible actions with near-miss twins, so a deficient oracle's
mistakes (an id without ``#``, a wrong record) are choosable. At every step the oracle's
action, or an action that leaves the env in the same state
(:func:`trace_envs.testing.equivalent_action`), is the label. A step whose action has no
listed equivalent (a write on an id the conversation never showed, for example) cannot
be cloned and is skipped; the count is returned, so the profile the clone sees is known.

:func:`clone` fits the network to those labels with AdamW, in minibatches of decisions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trace_agents.scorer.features import Conversation, Decision


@dataclass
class Demos:
    """Labelled decisions from oracle episodes, and what could not be labelled."""

    decisions: list[Decision] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    episodes: int = 0
    successes: int = 0
    skipped_steps: int = 0
    mistakes: dict[str, int] = field(default_factory=dict)


def demo_decisions(
    plan: Iterable[tuple[str, int]],
    deficits: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    near_misses: bool = True,
    max_actions: int = 128,
    progress: bool = False,
) -> Demos:
    """Oracle episodes on each ``(env_id, seed)`` of ``plan``, turned into labelled decisions.

    Args:
        plan: The episodes to play, as ``(env_id, seed)`` pairs.
        deficits: The oracle's mistake probability per capability (in [0, 1]); None: a perfect oracle.
        seed: The oracle's seed, for when its deficits strike (not the envs' seeds).
        near_misses: List typical mistakes as admissible actions too, so the deficient oracle's
            mistakes can be labelled.
        max_actions: The longest admissible list (as the scorer's ``max_actions``, to clone what it will see).
        progress: Show a progress bar.
    """
    import gymnasium as gym

    import trace_envs  # noqa: F401  (registers the ids)
    from trace_envs import OraclePolicy
    from trace_envs.testing import equivalent_action

    oracle = OraclePolicy(deficits=deficits, seed=seed)
    demos = Demos()
    envs: dict[str, Any] = {}
    plan = list(plan)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="demos", unit="episode")
    try:
        for env_id, s in plan:
            env = envs.get(env_id)
            if env is None:
                env = envs[env_id] = gym.make(
                    env_id, admissible_actions=True, near_misses=near_misses, max_actions=max_actions
                )
            obs, info = env.reset(seed=s)
            oracle.reset(env)
            conversation = Conversation()
            done = False
            while not done:
                action = oracle.act(obs, info)
                candidates = info["admissible_actions"]
                label = equivalent_action(env, action, candidates)
                if label is None:
                    demos.skipped_steps += 1
                else:
                    demos.decisions.append(conversation.update(info["messages"]).decision(candidates))
                    demos.labels.append(candidates.index(label))
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            demos.episodes += 1
            demos.successes += bool(info.get("success"))
            for cap, n in oracle.mistakes.items():
                demos.mistakes[cap] = demos.mistakes.get(cap, 0) + n
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        for env in envs.values():
            env.close()
    return demos


def clone(
    policy: Any,
    decisions: Sequence[Decision],
    labels: Sequence[int],
    *,
    epochs: float = 3.0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Fit ``policy``'s network to ``labels`` (cross-entropy); returns one log entry per epoch.

    Args:
        policy: The :class:`~trace_agents.scorer.agent.ScorerPolicy` to train: its base network,
            or its active LoRA adapter when it is wrapped in one.
        decisions: The decisions to learn, e.g. :attr:`Demos.decisions`.
        labels: Per decision, the index of the right action in its candidates.
        epochs: Passes over the decisions; fractions allowed (the step count is rounded).
        batch_size: Decisions per optimizer step.
        learning_rate: AdamW's initial learning rate, annealed to 0 along a cosine.
        weight_decay: AdamW's decoupled weight decay.
        seed: The seed of the minibatch shuffling.
        progress: Show a progress bar.
    """
    if len(decisions) != len(labels):
        raise ValueError(f"{len(decisions)} decisions but {len(labels)} labels")
    if not decisions:
        raise ValueError("no decisions to clone")
    net = policy.model
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    order = list(range(len(decisions)))
    rng = random.Random(seed)
    steps = max(1, round(epochs * len(order) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    # Embed every text once up front: the cache then serves each minibatch.
    policy.tensors(list(decisions))
    log: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="cloning", unit="step")
    net.train()
    step = 0
    total = correct = seen = 0.0
    while step < steps:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            if step >= steps:
                break
            idx = order[start : start + batch_size]
            batch = policy.tensors([decisions[i] for i in idx])
            target = torch.tensor([labels[i] for i in idx])
            scores = policy.scores(batch, adapters=None) if not _has_trainable_adapter(net) else net(**batch)
            loss = torch.nn.functional.cross_entropy(scores, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            total += loss.item() * len(idx)
            correct += float((scores.argmax(-1) == target).sum())
            seen += len(idx)
            if bar is not None:
                bar.update()
            if step % max(1, len(order) // batch_size) == 0 or step == steps:
                log.append({"step": step, "loss": total / seen, "accuracy": correct / seen})
                total = correct = seen = 0.0
    if bar is not None:
        bar.close()
    net.eval()
    return log


def _has_trainable_adapter(net: Any) -> bool:
    from peft import PeftModel

    return isinstance(net, PeftModel)
