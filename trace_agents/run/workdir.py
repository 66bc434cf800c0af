"""The run directory (:class:`Run`: stage markers, JSON artefacts, the log) and the agent every stage plays with."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trace_agents.run.config import RunConfig

# Settings that say where work runs, not what it computes: a run may resume with others.
_TRANSPORT = frozenset({"vllm_url"})


class Run:
    """One run directory: stage markers, JSON artefacts and the log."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dir = config.dir
        (self.dir / "stages").mkdir(parents=True, exist_ok=True)
        saved = self.dir / "config.json"
        mine = config.flags()  # flat, as the flags are spelled: the same file as before configs nested
        if saved.exists():
            before = json.loads(saved.read_text(encoding="utf-8"))
            changed = sorted(k for k in mine if k in before and before[k] != mine[k] and k not in _TRANSPORT)
            if changed:
                raise ValueError(
                    f"{self.dir} holds a run with other settings ({', '.join(changed)}); resume it "
                    f"with the same flags or choose another --name"
                )
        saved.write_text(json.dumps(mine, indent=2) + "\n", encoding="utf-8")

    def done(self, stage: str) -> dict[str, Any] | None:
        path = self.dir / "stages" / f"{stage}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def finish(self, stage: str, result: Mapping[str, Any]) -> dict[str, Any]:
        path = self.dir / "stages" / f"{stage}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # atomic: a stage is done or not
        return dict(result)

    def log(self, message: str) -> None:
        line = f"[run {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(self.dir / "run.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def stage(self, name: str, fn: Any) -> dict[str, Any]:
        found = self.done(name)
        if found is not None:
            self.log(f"{name}: done before, skipped")
            return found
        t = time.perf_counter()
        self.log(f"{name}: start")
        result = fn()
        result["seconds"] = round(time.perf_counter() - t, 1)
        self.log(f"{name}: done in {result['seconds']:.0f} s")
        return self.finish(name, result)


def load_agent(model_path: str, config: RunConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the ``lm`` kind, or ``(ScorerPolicy, None)`` for a saved scorer."""
    from trace_agents.scorer.agent import ScorerPolicy, is_scorer

    if is_scorer(model_path):
        return ScorerPolicy.from_pretrained(model_path, temperature=config.temperature, seed=config.seed), None
    from trace_agents.models import load

    return load(model_path)


def _policy(model: Any, tokenizer: Any, config: RunConfig, *, system_prompt: str | None = None) -> Any:
    """The agent every stage plays with: ``model`` in-process, or ``config.model`` on ``config.vllm_url``
    (``model`` may then be None). A scorer (from :func:`load_agent`) is its own policy."""
    from trace_agents.scorer.agent import ScorerPolicy

    if isinstance(model, ScorerPolicy):
        return model
    if config.vllm_url:
        return _served_policy(config, system_prompt)
    from trace_agents.policy import HFPolicy

    return HFPolicy(
        model,
        tokenizer,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
        system_prompt=system_prompt,
    )


def _served_policy(config: RunConfig, system_prompt: str | None) -> Any:
    """An :class:`~trace_agents.endpoint.EndpointPolicy` on the base model the server lists (checked
    against ``config.model``), with this run's adapters loaded under names of its own (runs
    sharing a server do not collide)."""
    import hashlib
    import warnings

    from trace_agents.endpoint import VLLM_ROLLOUTS, EndpointPolicy, served_base_model

    base = served_base_model(config.vllm_url)
    served, ours = str(base.get("root") or base["id"]), str(config.model)
    local = Path(served).exists(), Path(ours).exists()
    if all(local) and Path(served).resolve() != Path(ours).resolve() or not any(local) and served != ours:
        raise ValueError(
            f"the server at {config.vllm_url} serves {served}, but this run's base model is {ours}: "
            f"serve {ours} there (the adapters are trained on it)"
        )
    if any(local) and not all(local):
        warnings.warn(
            f"cannot tell whether {served}, served at {config.vllm_url}, is this run's base model {ours} "
            f"(one is a local path, the other is not)",
            stacklevel=2,
        )
    run_id = hashlib.sha1(str(config.dir.resolve()).encode()).hexdigest()[:8]
    return EndpointPolicy(
        config.vllm_url,
        str(base["id"]),
        obs_format="compact",
        temperature=config.temperature,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
        system_prompt=system_prompt,
        adapter_prefix=f"trace-{run_id}:",
        name=ours,
        extra_body=VLLM_ROLLOUTS,
    )
