"""Dual control: the same tasks as a PettingZoo AEC env where assistant and user both act.

In τ²-bench's dual-control setting both sides of the conversation are agents. Here
``make(env_id)`` wraps any registered spec (``trace/tau2-retail-v0`` included) as an AEC
env with agents ``"assistant"`` and ``"user"``:

- The assistant acts exactly as in the Gymnasium env. A tool call (or malformed text) is
  answered by the world at once and it acts again; a message passes the turn to the user.
- The user answers that message. With ``scripted_user=True`` (the default) the scripted
  customer writes the reply and the user agent's action is ignored: pass ``None`` (any
  other action gives a UserWarning, once per env).
  With ``scripted_user=False`` the user agent's text is the reply, and containing
  ``###STOP###`` ends the conversation. The scripted user still tracks which requests
  the assistant resolved, so the reward stays the spec's reward.
- Both agents receive every reward (the task is cooperative) and the same ``info``, so
  success is shared.

>>> from trace_envs import multiagent
>>> env = multiagent.make("trace/retail-v0", scripted_user=False)
>>> env.reset(seed=0)
>>> for agent in env.agent_iter():
...     obs, reward, terminated, truncated, info = env.last()
...     env.step(None if terminated or truncated else policy[agent](obs))
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import AECEnv

from trace_envs.actions import MAX_ACTION_CHARS, parse_action
from trace_envs.env import RESET_OPTIONS, TraceEnv
from trace_envs.registration import check_id
from trace_envs.user import ExternalUser

ASSISTANT, USER = "assistant", "user"


class TextObservation(str):
    """A plain ``str`` that also has the text space's numpy dtype.

    PettingZoo's checkers compare ``observation.dtype`` with the space's dtype, which a
    bare ``str`` does not have; everything else treats this as the string it is.
    """

    __slots__ = ()
    dtype = np.dtype(str)


class DualControlEnv(AECEnv):
    """A TRACE task in which both the assistant and the user are agents."""

    metadata = {"name": "trace_dual_control_v0", "render_modes": ["ansi", "human"], "is_parallelizable": False}

    def __init__(self, env_id: str, scripted_user: bool = True, render_mode: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.env_id = check_id(env_id)
        inner = gym.make(env_id, render_mode=render_mode, **kwargs).unwrapped
        if not isinstance(inner, TraceEnv):
            raise TypeError(f"{env_id} is not a trace_envs environment")
        self.env: TraceEnv = inner
        self.scripted_user = scripted_user
        self.render_mode = render_mode
        self.possible_agents = [ASSISTANT, USER]
        self.agents: list[str] = []
        self._spaces = {"obs": inner.observation_space, "act": inner.action_space}
        self._obs: dict[str, str] = {}
        self._pending = ""
        self._side: ExternalUser | None = None
        self._warned_ignored = False  # the scripted-user warning is given once per env

    def observation_space(self, agent: str):
        return self._spaces["obs"]

    def action_space(self, agent: str):
        return self._spaces["act"]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        # PettingZoo's api_test resets with options={"options": 1}: unknown keys warn here, not raise.
        unknown = sorted(map(str, set(options or ()) - set(RESET_OPTIONS)))
        if unknown:
            warnings.warn(
                f"{self.env_id}: reset option(s) {unknown} ignored; the valid options are {list(RESET_OPTIONS)}",
                UserWarning,
                stacklevel=2,
            )
        known = {k: v for k, v in (options or {}).items() if k in RESET_OPTIONS}
        obs, info = self.env.reset(seed=seed, options=known)
        scripted = self.env.scripted_user
        if not self.scripted_user:  # the user agent's text replaces the scripted customer's
            self._side = ExternalUser(scripted)
            self._side.opening(self.env.log)
            self.env.use_user(self._side)
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: dict(info) for a in self.agents}
        brief = scripted.brief()
        self._obs = {ASSISTANT: obs, USER: self.env.renderer.clip(f"{brief}\nYou said: {self.env.task.opening}")}
        self._pending = ""
        self.agent_selection = ASSISTANT

    def observe(self, agent: str) -> str:
        return TextObservation(self._obs[agent])

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        if agent == ASSISTANT:
            parsed = parse_action(action)
            if parsed.kind == "message":
                # The world waits for the user's reply before it can score this turn.
                self._pending = parsed.text
                self._obs[USER] = self.env.renderer.clip(f"assistant: {parsed.text}")
                self.rewards = dict.fromkeys(self.agents, 0.0)
                # This message parsed: an earlier action's parse_error does not describe it.
                self.infos = {a: {k: v for k, v in i.items() if k != "parse_error"} for a, i in self.infos.items()}
                self.agent_selection = USER
                self._accumulate_rewards()
                return
            self._advance(action)
        else:
            if not self.scripted_user:
                # Capped like an agent's action: the reply is stored in the conversation.
                self._side.reply = action[:MAX_ACTION_CHARS] if isinstance(action, str) else ""
            elif action is not None and not self._warned_ignored:
                self._warned_ignored = True
                warnings.warn(
                    f"{self.env_id} with scripted_user=True: the user agent's action is ignored, since the "
                    f"scripted customer replies. Fix: step(None) for the user, or make the env with "
                    f"scripted_user=False to make the user agent's text the reply",
                    UserWarning,
                    stacklevel=2,
                )
            self._advance(self._pending)
            self.agent_selection = ASSISTANT

    def _advance(self, action: Any) -> None:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs[ASSISTANT] = obs
        if self.scripted_user and self.env.log.last_user_text:
            self._obs[USER] = self.env.renderer.clip(f"you said: {self.env.log.last_user_text}")
        self.rewards = dict.fromkeys(self.agents, reward)
        self.terminations = dict.fromkeys(self.agents, terminated)
        self.truncations = dict.fromkeys(self.agents, truncated)
        self.infos = {a: dict(info) for a in self.agents}
        self._accumulate_rewards()

    def render(self) -> str | None:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def make(env_id: str, scripted_user: bool = True, **kwargs: Any) -> DualControlEnv:
    """A dual-control AEC env over any registered trace spec; kwargs go to ``gym.make``."""
    return DualControlEnv(env_id, scripted_user=scripted_user, **kwargs)
