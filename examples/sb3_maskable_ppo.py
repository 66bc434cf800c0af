"""MaskablePPO (sb3-contrib) learns a trace env by choosing among its admissible actions.

:class:`trace_envs.wrappers.DiscreteActions` gives the env a ``Discrete`` action space over
the admissible-action list, a mask (``action_masks()``, which MaskablePPO reads) and an
observation of fixed-shape arrays (hashed n-grams of the conversation and of every
candidate), so an off-the-shelf ``MultiInputPolicy`` can learn on it. CPU only::

    pip install -e ".[classic]"      # stable-baselines3 and sb3-contrib
    python examples/sb3_maskable_ppo.py --env trace/precondition-v0 --steps 20000 --seed 0

Training episodes draw their tasks from the env's own RNG (seeded by ``--seed``); the
trained policy (greedy) and the random-admissible policy are then evaluated on the same
held-out task seeds, 10000 on. ``benchmarks/bench_classic_rl.py`` runs this over every
capability env and several seeds, against the oracle too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from trace_envs.featurize import HashingFeaturizer
from trace_envs.wrappers import DiscreteActions

EVAL_SEED = 10_000  # held-out task seeds start here; training draws from the env's RNG
# PPO settings used here and by the benchmark; the rest are sb3's defaults.
PPO_SETTINGS = {"n_steps": 512, "batch_size": 128}

#: ``act(obs, env, rng) -> index``: a policy over a DiscreteActions env.
Act = Callable[[dict[str, np.ndarray], DiscreteActions, np.random.Generator], int]


def maskable_ppo() -> Any:
    """sb3-contrib's MaskablePPO, or an ImportError that names the extra to install."""
    try:
        from sb3_contrib import MaskablePPO
    except ImportError as exc:
        raise ImportError(
            'this example needs stable-baselines3 and sb3-contrib: pip install "trace-rl[classic]"'
        ) from exc
    return MaskablePPO


def make_env(env_id: str, max_actions: int = 128, dim: int = 128) -> DiscreteActions:
    """``env_id`` wrapped for classic RL: ``max_actions`` candidates, featurized ``dim`` wide."""
    return DiscreteActions(gym.make(env_id), max_actions=max_actions, featurizer=HashingFeaturizer(dim=dim))


def train(env_id: str, steps: int, seed: int, *, max_actions: int = 128, dim: int = 128, callback: Any = None) -> Any:
    """Train MaskablePPO (MultiInputPolicy, CPU) for ``steps`` env steps; returns the model."""
    import torch

    torch.set_num_threads(1)  # small MLPs: one thread is as fast and leaves the other cores free
    model = maskable_ppo()(
        "MultiInputPolicy", make_env(env_id, max_actions, dim), seed=seed, device="cpu", verbose=0, **PPO_SETTINGS
    )
    model.learn(total_timesteps=steps, callback=callback)
    return model


def model_policy(model: Any) -> Act:
    """The trained model's greedy choice among the valid actions."""

    def act(obs: dict[str, np.ndarray], env: DiscreteActions, rng: np.random.Generator) -> int:
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        return int(action)

    return act


def random_admissible(obs: dict[str, np.ndarray], env: DiscreteActions, rng: np.random.Generator) -> int:
    """A uniformly random valid action."""
    return int(rng.choice(np.flatnonzero(env.action_masks())))


def evaluate(
    env: DiscreteActions, act: Act, seeds: Sequence[int], rng_seed: int | Sequence[int] = 0
) -> dict[str, float]:
    """Mean return and success rate of ``act`` over one episode per task seed (``rng_seed`` seeds ``act``'s RNG)."""
    rng = np.random.default_rng(rng_seed)
    returns, successes = [], []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs, env, rng))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("success", False)))
    return {"return": float(np.mean(returns)), "success": float(np.mean(successes))}


def main(argv: Sequence[str] | None = None) -> None:
    """Train, then print the trained and the random-admissible policy's held-out return and success."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--env", default="trace/precondition-v0", help="a registered trace env id")
    parser.add_argument("--steps", type=int, default=20_000, help="training env steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of PPO and of the training tasks")
    parser.add_argument("--eval-episodes", type=int, default=100, help=f"held-out episodes, task seeds {EVAL_SEED} on")
    parser.add_argument("--max-actions", type=int, default=128, help="size of the Discrete action space")
    parser.add_argument("--dim", type=int, default=128, help="width of the hashed n-gram features")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = train(args.env, args.steps, args.seed, max_actions=args.max_actions, dim=args.dim)
    print(f"trained MaskablePPO on {args.env} for {args.steps} steps in {time.perf_counter() - start:.0f} s")
    env = make_env(args.env, args.max_actions, args.dim)
    seeds = range(EVAL_SEED, EVAL_SEED + args.eval_episodes)
    for name, act in (("MaskablePPO", model_policy(model)), ("random admissible", random_admissible)):
        result = evaluate(env, act, seeds, rng_seed=args.seed)
        print(
            f"{name:>18}: return {result['return']:.3f}, success {result['success']:.0%} "
            f"over {args.eval_episodes} held-out episodes"
        )


if __name__ == "__main__":
    main()
