"""Wrappers that let classic RL algorithms act in the text envs.

:class:`DiscreteActions` turns a trace env's free-text turns into a choice among the
admissible actions of :func:`trace_envs.admissible.admissible_actions`, padded to a fixed
``Discrete(max_actions)`` with a mask, and its text observations into fixed-shape arrays.
That is the interface of Stable-Baselines3 and sb3-contrib (``MaskablePPO``), CleanRL-style
DQN/PPO and DRRN-style (state, action) scorers::

    import gymnasium as gym
    from trace_envs.wrappers import DiscreteActions

    env = DiscreteActions(gym.make("trace/precondition-v0"))
    obs, info = env.reset(seed=0)
    index = env.action_space.sample(mask=env.action_masks().astype("int8"))  # a random admissible action
    obs, reward, terminated, truncated, info = env.step(index)
"""

from __future__ import annotations

from typing import Any, SupportsInt

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from trace_envs.admissible import AdmissibleActions
from trace_envs.featurize import Featurizer, HashingFeaturizer

__all__ = ["DiscreteActions"]


class DiscreteActions(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A trace env with a ``Discrete(max_actions)`` action space and array observations.

    ## Actions
    ``Discrete(max_actions)``: index ``i`` takes the ``i``-th string of
    ``info["admissible_actions"]``, the list :func:`trace_envs.admissible.admissible_actions`
    derives from the history and the tool schemas (deterministic order, at most
    ``max_actions``; ``near_misses=True`` adds the typical mistakes as choosable twins).
    Which indices are valid is given by :meth:`action_masks` (sb3-contrib's convention: a
    ``bool`` array, ``True`` = valid) and by ``info["action_mask"]``, the same array. The
    wrapper builds the list itself, incrementally over each episode, so the wrapped env need
    not be made with ``admissible_actions=True``; if it was, the wrapper's list replaces it.

    An index past the list (a masked-out action, which a masking agent never sends but a
    random one may) does not raise: the env receives an empty turn, which it treats as any
    unusable agent output (an error tool result and a ``format_error`` term), and the step's
    ``info["invalid_action"]`` is ``True``.

    ## Observation
    A ``Dict`` of ``Box`` arrays from the featurizer (default :class:`HashingFeaturizer`,
    whose docstring lists every feature): the conversation state (latest user message,
    latest tool result, the customer's and the agent's turns so far, progress counters) and
    one row per candidate action, zero rows for padding. The raw strings stay in ``info``:
    ``info["admissible_actions"]`` and the wrapped env's ``info["messages"]``.

    ## Reward, Termination
    Those of the wrapped env, unchanged.

    The wrapper pickles, deep-copies, records its constructor arguments (so ``env.spec``
    re-creates it through ``gym.make``) and works under ``gym.make_vec(...,
    wrappers=[DiscreteActions])`` in ``"sync"`` and ``"async"`` mode.
    """

    def __init__(
        self, env: gym.Env, max_actions: int = 128, featurizer: Featurizer | None = None, near_misses: bool = False
    ) -> None:
        """Wrap ``env`` (a trace env, bare or made by ``gym.make``)."""
        AdmissibleActions([], near_misses=near_misses, max_actions=max_actions)  # checks both, now
        gym.utils.RecordConstructorArgs.__init__(
            self, max_actions=max_actions, featurizer=featurizer, near_misses=near_misses
        )
        gym.Wrapper.__init__(self, env)
        self.max_actions = max_actions
        self.near_misses = near_misses
        self.featurizer: Featurizer = featurizer if featurizer is not None else HashingFeaturizer()
        self.action_space = spaces.Discrete(max_actions)
        self.observation_space = self.featurizer.space(max_actions)
        self.actions: list[str] = []
        self._mask = np.zeros(max_actions, dtype=bool)
        self._lister: AdmissibleActions | None = None  # one per episode: it reads only new messages

    def _observe(self, info: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Compute the candidates for the history in ``info`` and the observation."""
        messages = info["messages"]
        if self._lister is None:
            self._lister = AdmissibleActions(info["tools"], near_misses=self.near_misses, max_actions=self.max_actions)
        self.actions = self._lister.update(messages)
        self._mask = np.zeros(self.max_actions, dtype=bool)
        self._mask[: len(self.actions)] = True
        info["admissible_actions"] = list(self.actions)
        info["action_mask"] = self._mask.copy()
        return self.featurizer.features(messages, self.actions, self.max_actions), info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the wrapped env; the observation is featurized and the candidates listed in ``info``."""
        _, info = self.env.reset(seed=seed, options=options)
        self._lister = None
        return self._observe(info)

    def step(self, action: SupportsInt) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Take candidate ``action``; an index outside the list sends an empty turn (see the class docs)."""
        index = int(action)
        invalid = not 0 <= index < len(self.actions)
        _, reward, terminated, truncated, info = self.env.step("" if invalid else self.actions[index])
        obs, info = self._observe(info)
        info["invalid_action"] = invalid
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Which indices are valid now: a ``bool`` array of ``max_actions``, ``True`` = valid (sb3-contrib)."""
        return self._mask.copy()
