"""TraceEnv: the one Gymnasium env class that serves every spec.

A spec (see :mod:`trace_envs.spec`) composes a world, a task family, a user, a reward and
a renderer; variants are new spec files, never subclasses.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from random import Random
from typing import Any

import gymnasium as gym

from trace_envs._json import dumps
from trace_envs.actions import MAX_ACTION_CHARS, parse_action
from trace_envs.admissible import AdmissibleActions, AdmissibleConfig
from trace_envs.db import Database, Table, diff_keys
from trace_envs.domains import get_domain
from trace_envs.episode import EpisodeLog, WriteAttempt
from trace_envs.errors import ResetNeeded, SpecError, ToolError
from trace_envs.render import RENDERERS
from trace_envs.reward import COMPONENTS, End, annotate
from trace_envs.spaces import UnicodeText
from trace_envs.spec import TraceSpec, load_spec, with_params
from trace_envs.tasks import Call, Task, get_family
from trace_envs.user import ExternalUser, ScriptedUser, User, UserModel
from trace_envs.world import check_arguments

MIN_OBS_CHARS = 256  # the schema's minimum for max_chars: room for a clipped head and the opening

_AUTH_TOOLS = frozenset({"find_user_id_by_email", "find_user_id_by_name_zip"})
_MAX_SEED = 2**31 - 1
RESET_OPTIONS = ("task_id",)  # the keys reset(options=...) reads


class TraceEnv(gym.Env[str, str]):
    """A customer-service conversation in which the agent acts through text.

    ## Description
    The agent serves one simulated customer of a retail store. It reads records with
    tools, proposes writes, obtains a "yes", acts, refuses what policy forbids, and
    answers questions. Which skill is stressed depends on the spec's task family.

    ## Observation
    A ``str``: the new text for the agent since its last action (the opening with the
    policy and tools on reset, then a tool result or the user's reply), at most
    ``observation.max_chars`` characters. ``info["messages"]`` holds the full
    OpenAI-format history and ``info["tools"]`` the tool schemas.

    ## Actions
    A ``str``, one assistant turn: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
    or a bare JSON object of that shape calls a tool; anything else is a message to the
    user. Bad agent output never raises: it becomes an error tool result, a
    ``format_error`` term and ``info["parse_error"]``.

    ## Reward
    The weighted sum of the spec's components (see :mod:`trace_envs.reward`); shaped
    penalties are paid per step, outcome terms at the end. ``info["reward_components"]``
    breaks every step's reward down; at the end ``info["return_components"]`` holds the
    final values and ``info["success"]`` whether every success component reached 1.

    ## Termination
    Terminated when the user ends the conversation (all requests resolved, or the agent
    said goodbye) or the agent transfers to a human. Truncated after ``max_turns`` agent
    turns; the outcome is scored then too, so the last step always carries it.

    ## Version History
    * v0: initial release.

    Args:
        spec: The spec: a :class:`~trace_envs.spec.TraceSpec`, its JSON as a dict, or a spec file's path.
        render_mode: ``"ansi"`` (:meth:`render` returns the transcript), ``"human"`` (reset and
            every step print the new lines), or None.
        obs_format: How observations are written: ``"chat"`` or ``"compact"`` (see
            :mod:`trace_envs.render`); None: the spec's.
        max_chars: The longest observation, in characters (>= 256); None: the spec's.
        user_model: A chat model that plays the customer (see :data:`trace_envs.user.UserModel`);
            None: the scripted customer.
        max_turns: Overrides the spec's turn limit (>= 1; None: the spec's); the outcome is still
            scored on the last step, unlike Gymnasium's ``max_episode_steps``.
        admissible_actions: Add ``info["admissible_actions"]`` on reset and every step: the action
            strings that make sense now, from what the agent has observed (see :mod:`trace_envs.admissible`).
        near_misses: With ``admissible_actions``, add typical mistakes as choices.
        max_actions: With ``admissible_actions``, cap the list at this many actions (>= 8).
        **params: Override the task family's params (checked as a spec's own are).
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}  # render_fps: gymnasium warns without it

    def __init__(
        self,
        spec: TraceSpec | Mapping[str, Any] | str | Path,
        render_mode: str | None = None,
        obs_format: str | None = None,
        max_chars: int | None = None,
        user_model: UserModel | None = None,
        max_turns: int | None = None,
        admissible_actions: bool = False,
        near_misses: bool = False,
        max_actions: int = 128,
        **params: Any,
    ) -> None:
        """Build the env from a spec (the arguments are described in the class docstring)."""
        if max_turns is not None and (not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1):
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        self.user_model = user_model
        self.admissible = AdmissibleConfig(admissible_actions, near_misses, max_actions)
        self._admissible: AdmissibleActions | None = None
        self.trace_spec = spec if isinstance(spec, TraceSpec) else load_spec(spec)
        if params:
            self.trace_spec = with_params(self.trace_spec, params)
        s = self.trace_spec
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if obs_format is not None and obs_format not in RENDERERS:
            close = difflib.get_close_matches(obs_format, RENDERERS, n=1)
            raise SpecError(
                f"obs_format must be one of {sorted(RENDERERS)}, got {obs_format!r}."
                + (f" Did you mean {close[0]!r}?" if close else "")
            )
        self.render_mode = render_mode
        self.domain = get_domain(s.domain)
        self.tools = self.domain.subset(list(s.tools) if s.tools else None)
        # A private deep copy: info["tools"] must not alias the schemas arguments are checked with.
        self.tool_schemas = json.loads(json.dumps([t.schema for t in self.tools.values()]))
        self._tool_list = list(self.tools.values())
        self.family = get_family(s.family)
        if max_chars is not None and (not isinstance(max_chars, int) or max_chars < MIN_OBS_CHARS):
            raise SpecError(
                f"max_chars must be an integer >= {MIN_OBS_CHARS} (the schema's minimum), got {max_chars!r}"
            )
        self.max_chars = max_chars or s.max_chars
        self.max_turns = max_turns or s.max_turns
        self.renderer = RENDERERS[obs_format or s.obs_format](self.max_chars)
        self.observation_space = UnicodeText(self.max_chars)
        self.action_space = UnicodeText(MAX_ACTION_CHARS)
        self._outcome = [n for n in s.weights if not COMPONENTS[n].shaped]
        self._shaped = [n for n in s.weights if COMPONENTS[n].shaped]
        self._zero = dict.fromkeys(s.weights, 0.0)
        self.task: Task | None = None
        self._log: EpisodeLog | None = None
        self._user: User | None = None
        self.scripted_user: ScriptedUser | None = None
        self._messages: list[dict[str, Any]] = []
        self._shaped_now: dict[str, float] = {}
        self._task_seed = 0
        self._over = True
        self._last_obs = ""
        self._policy = self.domain.policy
        self._base_info: dict[str, Any] = {}
        self._shown = 0  # messages printed so far (render_mode="human")

    # ------------------------------------------------------------------ reset
    def _task_seed_for(self, seed: int | None, options: Mapping[str, Any] | None) -> int:
        task_id = (options or {}).get("task_id")
        if task_id is not None:
            prefix = f"{self.family.name}-"
            text = str(task_id)
            num = text[len(prefix) :] if text.startswith(prefix) else text
            if not num.isdigit():
                raise ValueError(f"task_id must look like '{prefix}<int>' or be an int, got {task_id!r}")
            return int(num)
        if seed is not None:
            return int(seed)
        return int(self.np_random.integers(_MAX_SEED))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: ``seed`` picks the task, or ``options={"task_id": ...}`` names it."""
        unknown = sorted(map(str, set(options or ()) - set(RESET_OPTIONS)))
        if unknown:
            close = difflib.get_close_matches(unknown[0], RESET_OPTIONS, n=1)
            raise ValueError(
                f"unknown reset option(s) {unknown}; the valid options are {list(RESET_OPTIONS)}."
                + (f" Did you mean {close[0]!r}?" if close else "")
            )
        super().reset(seed=seed)
        task_id = (options or {}).get("task_id")
        if task_id is not None and self.family.by_id is not None:
            task = self.family.by_id(str(task_id), self.trace_spec.params)
            self._task_seed = seed if seed is not None else -1
        else:
            self._task_seed = self._task_seed_for(seed, options)
            task = self.family.generate(Random(self._task_seed), self.trace_spec.params, seed=self._task_seed)
        self.task = task
        db = Database({name: Table(records) for name, records in task.tables.items()})
        self._log = EpisodeLog(task=task, db=db, initial_db=db)
        self.scripted_user = ScriptedUser(task)
        self._user: User = self.scripted_user
        if self.user_model is not None:
            self._user = ExternalUser(self.scripted_user, self.user_model)
        opening = self._user.opening(self._log)
        self._policy = task.policy or self.domain.policy
        self._messages = [
            {"role": "system", "content": self._policy},
            {"role": "user", "content": opening},
        ]
        self._shaped_now = dict.fromkeys(self._shaped, 0.0)
        self._over = False
        s = self.trace_spec
        self._base_info = {
            "env_id": s.id,
            "spec_version": s.version,
            "capability": s.capability,
            "task_id": task.task_id,
            "seed": self._task_seed,
            "tools": self.tool_schemas,
        }
        obs = self.renderer.first(self._policy, self._tool_list, opening)
        self._last_obs = obs
        self._shown = 0
        if self.render_mode == "human":
            self.render()
        info = dict(
            self._base_info,
            step=0,
            messages=list(self._messages),
            reward_components=dict(self._zero),
            capabilities=list(task.capabilities),
        )
        if self.admissible.on:
            self._admissible = AdmissibleActions(
                self.tool_schemas, near_misses=self.admissible.near_misses, max_actions=self.admissible.max_actions
            )
            info["admissible_actions"] = self._admissible.update(self._messages)
        return obs, info

    # ------------------------------------------------------------------ step
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        log = self._log
        if log is None or self._over:
            raise ResetNeeded(
                "call reset() before step()" if log is None else "the episode is over; call reset() before step()"
            )
        log.step += 1
        parsed = parse_action(action)
        terminated = False
        parse_error = None
        if parsed.kind == "message":
            self._messages.append({"role": "assistant", "content": parsed.text})
            log.agent_texts.append(parsed.text)
            reply, terminated = self._user.respond(parsed.text, log)
            log.last_user_text = reply
            self._messages.append({"role": "user", "content": reply})
            if terminated:
                log.ended_by = "user"
            obs = self.renderer.user(reply)
        elif parsed.kind == "tool":
            obs, terminated, parse_error = self._call_tool(parsed.name, parsed.arguments, parsed.text)
        else:
            parse_error = parsed.error
            obs = self._format_error(parsed.text, parsed.error)
        truncated = not terminated and log.step >= self.max_turns
        if truncated:
            log.ended_by = "max_turns"
        components = dict(self._zero)
        weights = self.trace_spec.weights
        reward = 0.0
        for name in self._shaped:
            value = COMPONENTS[name].value(log, None)
            delta = weights[name] * (value - self._shaped_now[name]) + 0.0  # no -0.0 in logs
            self._shaped_now[name] = value
            components[name] = delta
            reward += delta
        info = dict(self._base_info, step=log.step, messages=list(self._messages), reward_components=components)
        if parse_error is not None:
            info["parse_error"] = parse_error
        if terminated or truncated:
            self._over = True
            reward += self._finish(log, components, info)
        if self._admissible is not None:  # nothing is admissible once the episode is over
            info["admissible_actions"] = [] if self._over else self._admissible.update(self._messages)
        self._last_obs = obs
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, truncated, info

    def _call_tool(self, name: str, arguments: Any, raw: str) -> tuple[str, bool, str | None]:
        log = self._log
        call_id = f"call_{log.step}"
        call = Call(name, arguments)
        try:
            # The canonical key doubles as the message's argument text: one encode per call.
            args_text = call.key[len(name) :]
        except (RecursionError, ValueError) as exc:  # parseable but absurd JSON, e.g. 900 levels deep
            return (
                self._format_error(raw, f"arguments cannot be re-encoded ({type(exc).__name__}); use flat JSON values"),
                False,
                "arguments too deeply nested",
            )
        self._messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args_text}}],
            }
        )
        tool = self.tools.get(name)
        parse_error = None
        terminated = False
        if tool is None:
            close = difflib.get_close_matches(name, self.tools, n=1)
            parse_error = f"unknown tool {name[:80]!r}." + (f" Did you mean {close[0]!r}?" if close else "")
        else:
            parse_error = check_arguments(tool, arguments)
        if parse_error is not None:
            log.format_errors += 1
            if tool is not None and tool.kind == "write":
                self._record_write(call, ok=False)
            content = f"Error: {parse_error}"
        else:
            try:
                result = tool.fn(log.db, **arguments)
                ok = True
            except ToolError as exc:
                result, ok = str(exc), False
            except Exception as exc:  # a tool bug must not end the agent's episode
                result, ok = f"Error: internal tool failure ({type(exc).__name__})", False
            if not ok:
                log.tool_errors += 1
                content = result if result.startswith("Error") else f"Error: {result}"
            else:
                content = result if isinstance(result, str) else dumps(result)
            if tool.kind == "write":
                self._record_write(call, ok)
            elif ok and tool.kind == "read":
                log.reads.setdefault(call.key, log.step)
                if name in _AUTH_TOOLS and result == self.task.user.user_id and log.auth_step is None:
                    log.auth_step = log.step
            elif tool.kind == "terminal":
                terminated = True
                log.ended_by = "transfer"
        self._messages.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": content})
        return self.renderer.tool(name, content), terminated, parse_error

    def _format_error(self, text: str, error: str) -> str:
        """Log an unusable action: the agent sees the error as a tool result."""
        self._log.format_errors += 1
        self._messages.append({"role": "assistant", "content": text[:4000]})
        content = f"Error: {error}"
        self._messages.append({"role": "tool", "name": "error", "content": content})
        return self.renderer.tool("error", content)

    def _record_write(self, call: Call, ok: bool) -> None:
        log = self._log
        req_index = log.request_for(call)
        exact = confirmed = False
        if req_index is not None:
            req = self.task.requests[req_index]
            gold = req.gold
            exact = gold is not None and gold.key == call.key
            confirmed = req.desired is not None and req.desired.key in log.confirmed
            log.mark_handled(req_index)
        if ok:
            log.done_writes.add(call.key)
        log.writes.append(
            WriteAttempt(
                step=log.step,
                call=call,
                ok=ok,
                request=req_index,
                exact=exact,
                confirmed=confirmed,
                authenticated=log.auth_step is not None,
            )
        )

    # ------------------------------------------------------------------ episode end
    def gold_db(self) -> Database:
        """The initial database with every gold write applied."""
        log = self._log
        if log is None:
            raise ResetNeeded("call reset() first")
        gold = Database({name: Table(t._base) for name, t in log.db.tables.items()})
        for call in self.task.gold_calls:
            try:
                self.domain.tools[call.name].fn(gold, **call.arguments)
            except ToolError:
                pass  # a gold write the tools refuse leaves the DB as it was (as in τ²-bench)
        return gold

    def _finish(self, log: EpisodeLog, components: dict[str, float], info: dict[str, Any]) -> float:
        gold = self.gold_db()
        end = End(gold_db=gold, db_diff=diff_keys(log.db, gold))
        weights = self.trace_spec.weights
        final = dict(self._shaped_now)
        reward = 0.0
        for name in self._outcome:
            value = COMPONENTS[name].value(log, end)
            final[name] = value
            components[name] = weights[name] * value
            reward += weights[name] * value
        info["return_components"] = final
        info["success"] = all(final[n] >= 1.0 for n in self.trace_spec.success)
        info["episode_return"] = sum(weights[n] * final[n] for n in weights)
        info.update(annotate(log, end))
        info["user_errors"] = getattr(self._user, "errors", 0)
        return reward

    # ------------------------------------------------------------------ misc
    def _transcript(self, start: int = 0) -> str:
        """Messages ``start`` on, one line each, as :meth:`render` shows them."""
        lines = []
        for m in self._messages[start:]:
            if m.get("tool_calls"):
                f = m["tool_calls"][0]["function"]
                lines.append(f"assistant -> {f['name']}({f['arguments']})")
            else:
                tag = m["role"] if m["role"] != "tool" else f"tool {m.get('name', '')}"
                lines.append(f"{tag}: {m['content']}")
        return "\n".join(lines)

    def render(self) -> str | None:
        """The conversation so far as plain text.

        ``render_mode="ansi"`` returns it. ``"human"`` prints it to stdout as it happens
        (reset and every step print the new lines, as Gymnasium's human mode renders during
        ``step``) and returns None; calling ``render()`` then prints only what is not yet shown.
        """
        if self.render_mode == "ansi":
            return self._transcript()
        if self.render_mode == "human" and self._shown < len(self._messages):
            print(self._transcript(self._shown), flush=True)
            self._shown = len(self._messages)
        return None

    def use_user(self, user: User) -> None:
        """Let another user answer the rest of this episode (e.g. a PettingZoo user agent).

        Requests are then all treated as stated: the new user states them in its own words.
        """
        if self._log is None:
            raise ResetNeeded("call reset() before use_user()")
        self._user = user
        self._log.stated = [True] * len(self._log.stated)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The OpenAI-format history of the current episode (a copy)."""
        return list(self._messages)

    @property
    def log(self) -> EpisodeLog | None:
        """The current episode's log (for oracles and analysis; treat as read-only)."""
        return self._log
