"""GRPO LoRA adapters on the project's multi-turn envs, with TRL's ``GRPOTrainer``.

>>> from trace_agents.training import GRPOConfig, train_adapter
>>> summary = train_adapter(GRPOConfig(out="runs/x/adapters/precondition",
...                                      env_ids=["trace/precondition-v0"]), model="runs/bootstrap/model")

## Why ``rollout_func`` and not ``environment_factory``
TRL offers two ways to train on environments. ``environment_factory`` exposes an
environment's *methods* as tools and lets TRL's tool loop parse the model's calls. Our
envs are different: one ``step(text)`` takes the agent's whole turn (a tool call *or* a
message to the user), and the env itself parses it, answers as the tool or as the
simulated user, scores the episode and decides when it ends. The tool loop could not play
the user, and it would parse calls with TRL's parser instead of the env's.

``rollout_func`` hands the whole episode to us. For each prompt (one ``(env_id, seed)``
task; TRL repeats it ``num_generations`` times) it runs the episode with
:class:`~trace_agents.policy.HFPolicy` over the model being trained, batched over all
rollouts of the step, then returns:

- ``prompt_ids``: the chat-template tokens before the agent's first turn;
- ``completion_ids``: the rest of the conversation up to the agent's last turn;
- ``env_mask``: 1 on the agent's tokens, 0 on tool results and user turns. TRL multiplies
  it into the loss mask, so only the agent's tokens get a gradient. The tokens come from
  the same generation-tagged template as SFT's ``assistant_masks``.

## What the loss is
Every agent turn is a sample that carries its episode's return: the completion holds all
turns, and GRPO gives every token of it the group-normalized advantage of the episode's
return (K rollouts of the same seed form a group; ``scale_rewards="group"``). That is the
per-turn objective with all turns of an episode sharing one credit, computed in one
forward pass per episode. A group whose returns are all equal has no advantage to learn
from: its ``env_mask`` is zeroed, so it is dropped from the loss and from the token count
that normalizes it (``loss_type="dapo"``), instead of diluting the other groups.

The conversation is re-tokenized from its text, so a token the sampler split differently
gets the canonical split; GRPO's ratio is computed on those ids by the trainer itself
(``logprobs`` are not passed), so it stays exact. That is also what lets the episodes be
generated elsewhere: with ``vllm_url`` (``trace train --vllm-url``), :class:`ServedRollouts`
loads each step's adapter into a vLLM server and plays the episodes there.

## Artefacts (``out/``)
- ``adapter/``: the LoRA adapter, PEFT's standard layout (``adapter_config.json`` +
  ``adapter_model.safetensors``), loadable by PEFT and vLLM;
- ``checkpoint-N/``: HF Trainer checkpoints (adapter, optimizer, scheduler, RNG); a run
  killed at any point resumes from the last one with ``resume=True``;
- ``log.jsonl``: one line per logging step: loss, reward, success, component means,
  dropped groups and ``rollouts_used``;
- ``summary.json``: settings, steps, rollouts used and timing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trace_agents import no_activation_checkpointing, require_train_extra


@dataclass
class GRPOConfig:
    """One GRPO LoRA training run; every field is a ``trace train`` flag."""

    out: str = field(default="runs/train", metadata={"help": "output directory (adapter, checkpoints, log)"})
    env_ids: list[str] = field(
        default_factory=lambda: ["trace/precondition-v0"],
        metadata={"help": "env ids to train on (tasks are drawn round-robin over them)"},
    )
    seed_start: int = field(default=0, metadata={"help": "first training seed of each env"})
    max_steps: int = field(default=20, metadata={"help": "optimizer steps"})
    num_generations: int = field(default=4, metadata={"help": "rollouts per task: GRPO's group size K"})
    groups_per_step: int = field(default=2, metadata={"help": "tasks (groups of K rollouts) per optimizer step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of the LoRA weights"})
    lr_scheduler: str = field(default="constant", metadata={"help": "transformers scheduler name"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: str = field(
        default="all-linear",
        metadata={"help": "modules that get LoRA: 'all-linear' or comma-separated names (q_proj,v_proj)"},
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient against the base model (0: no reference)"})
    epsilon: float = field(default=0.2, metadata={"help": "PPO-style clip range of the ratio"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of rollouts"})
    max_new_tokens: int = field(default=160, metadata={"help": "longest agent turn in tokens"})
    max_length: int = field(default=4096, metadata={"help": "episodes are cut to this many tokens for the loss"})
    obs_format: str = field(default="compact", metadata={"help": "compact (tiny models) or chat"})
    max_turns: int = field(default=0, metadata={"help": "override the envs' turn limit (0: each spec's own)"})
    rollout_batch_size: int = field(default=16, metadata={"help": "episodes generated for at once"})
    save_steps: int = field(default=5, metadata={"help": "checkpoint every this many steps"})
    logging_steps: int = field(default=1, metadata={"help": "log every this many steps"})
    seed: int = field(default=0, metadata={"help": "seed of the LoRA init, the task order and sampling"})
    vllm_url: str = field(
        default="",
        metadata={
            "help": "generate rollouts on this OpenAI-compatible vLLM server (e.g. http://host:8000/v1) serving the "
            "same base model, started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; the "
            "adapter is loaded into it at every step (empty: generate in-process)"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.env_ids, str):
            self.env_ids = [self.env_ids]
        if not self.env_ids:
            raise ValueError("env_ids is empty; name at least one env to train on")
        for name in (
            "max_steps",
            "num_generations",
            "groups_per_step",
            "lora_r",
            "max_new_tokens",
            "rollout_batch_size",
            "save_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: GRPO's advantage compares rollouts of one task")
        if self.obs_format not in ("compact", "chat"):
            raise ValueError(f"obs_format must be 'compact' or 'chat', got {self.obs_format!r}")
        if self.max_length < 64:
            raise ValueError(f"max_length must be >= 64, got {self.max_length}")
        if self.temperature <= 0:  # TRL refuses it too, but only after a step's rollouts are played
            raise ValueError(f"temperature must be > 0: GRPO samples its rollouts, got {self.temperature}")

    @property
    def rollouts_per_step(self) -> int:
        """Env episodes one optimizer step runs."""
        return self.num_generations * self.groups_per_step

    @property
    def rollouts(self) -> int:
        """Env episodes the whole run uses: the budget it is charged."""
        return self.rollouts_per_step * self.max_steps

    def tasks(self) -> list[tuple[str, int]]:
        """The distinct ``(env_id, seed)`` tasks of the run, env ids interleaved."""
        n = self.groups_per_step * self.max_steps
        per_env = math.ceil(n / len(self.env_ids))
        return [(e, self.seed_start + i) for i in range(per_env) for e in self.env_ids][:n]


def task_prompt(env_id: str, seed: int) -> str:
    """A dataset row's ``prompt``: the task key, as JSON (data, never code)."""
    return json.dumps({"env_id": env_id, "seed": seed}, sort_keys=True)


@functools.lru_cache(maxsize=8)
def _generation_header(tokenizer: Any) -> tuple[int, ...]:
    """The tokens the chat template adds to open an assistant turn (``<|im_start|>assistant\n``).

    Rendered once per tokenizer: every episode of every GRPO step needs it.
    """
    probe = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=True, return_dict=False)
    without = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=True, return_dict=False)
    return tuple(with_header[len(without) :])


def episode_sample(
    info: Mapping[str, Any], tokenizer: Any, obs_format: str = "compact", max_length: int = 4096
) -> tuple[list[int], list[int], list[int]]:
    """``(prompt_ids, completion_ids, env_mask)`` of one finished episode (its last info).

    The prompt ends where the agent's first turn begins; the completion ends with the
    agent's last token, and ``env_mask`` is 1 exactly on the agent's tokens.
    """
    from trace_agents.bootstrap import tokenize_demos

    data, _ = tokenize_demos(
        [{"messages": info["messages"], "tools": info["tools"]}],
        tokenizer,
        max_length=max_length,
        obs_format=obs_format,
    )
    if not data["input_ids"]:
        raise ValueError(
            f"episode of {info.get('env_id')} seed {info.get('seed')} has no agent turn within "
            f"{max_length} tokens; raise max_length"
        )
    ids, mask = data["input_ids"][0], list(data["assistant_masks"][0])
    # The template may tag part of the assistant header ("\n" after "<|im_start|>assistant")
    # as the agent's; generation starts after the header, so the header is the env's.
    header = list(_generation_header(tokenizer))
    n = len(header)
    for p in range(len(ids) - n + 1) if n else ():
        if ids[p] == header[0] and ids[p : p + n] == header:
            mask[p : p + n] = [0] * n
    first = mask.index(1)
    end = len(mask) - mask[::-1].index(1)
    # The template tags "<|im_end|>\n" as the agent's; end on the end-of-turn token, as
    # generation does, so the trainer sees a finished (not a truncated) completion.
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids[first:end]:
        end = first + len(ids[first:end]) - ids[first:end][::-1].index(eos)
    return ids[:first], ids[first:end], mask[first:end]


def group_samples(
    tasks: Sequence[tuple[str, int]],
    episodes: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    tokenizer: Any,
    obs_format: str = "compact",
    max_length: int = 4096,
    group_size: int = 0,
) -> dict[str, list[Any]]:
    """The ``rollout_func`` output for ``tasks`` (TRL's row order) from finished ``(record, info)`` episodes.

    Each task's episodes are its group; row i takes the next unused episode of task i. A
    group whose returns are all equal gets an all-zero ``env_mask``: it is dropped. Only
    whole groups (at least ``group_size`` episodes) are judged: a part of a group that
    another process holds the rest of may look constant when the group is not.

    Args:
        tasks: TRL's rows, one ``(env_id, seed)`` per completion; a task appears once per
            member of its group.
        episodes: Finished ``(record, last info)`` pairs, at least as many of each task as it has rows.
        tokenizer: The trained model's tokenizer; its chat template renders the episodes.
        obs_format: The format the episodes were played in: ``"compact"`` or ``"chat"``.
        max_length: The most tokens of an episode kept (its first agent turn must fit).
        group_size: The size of a whole group (GRPO's ``num_generations``); 0: every group is judged.
    """
    by_task: dict[tuple[str, int], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for record, info in episodes:
        by_task.setdefault((record["env_id"], record["seed"]), []).append((record, info))
    out: dict[str, list[Any]] = {
        k: []
        for k in (
            "prompt_ids",
            "completion_ids",
            "env_mask",
            "episode_return",
            "success",
            "components",
            "group_dropped",
        )
    }
    used: dict[tuple[str, int], int] = {}
    for task in tasks:
        group = by_task.get(task, [])
        k = used.get(task, 0)
        if k >= len(group):
            raise ValueError(f"task {task} appears {k + 1} times but only {len(group)} episodes of it ran")
        used[task] = k + 1
        record, info = group[k]
        returns = [r["return"] for r, _ in group]
        dropped = len(group) >= group_size and max(returns) - min(returns) < 1e-9
        prompt_ids, completion_ids, env_mask = episode_sample(info, tokenizer, obs_format, max_length)
        out["prompt_ids"].append(prompt_ids)
        out["completion_ids"].append(completion_ids)
        out["env_mask"].append([0] * len(env_mask) if dropped else env_mask)
        out["episode_return"].append(float(record["return"]))
        out["success"].append(bool(record["success"]))
        out["components"].append(dict(record["return_components"]))
        out["group_dropped"].append(dropped)
    return out


# (tasks, repeats, model, step) -> finished (record, last info) pairs, `repeats` per task.
PlayFunc = Callable[[list[tuple[str, int]], int, Any, int], list[tuple[dict[str, Any], dict[str, Any]]]]


def step_seed(settings: GRPOConfig, step: int) -> int:
    """The sampling seed of a step's rollouts: it follows the step, so a resumed run samples what it would have."""
    return settings.seed * 1_000_003 + step * 7919


def play_episodes(
    policy: Any, tasks: list[tuple[str, int]], repeats: int, settings: GRPOConfig, adapter: str | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``repeats`` episodes of every task with ``policy``: (record, last info) pairs."""
    from trace_agents.rollout import rollout, turn_limit

    result = rollout(
        policy,
        tasks,
        None,
        repeats=repeats,
        batch_size=settings.rollout_batch_size,
        keep_infos=True,
        progress=False,
        adapters=(lambda env_id, seed: adapter) if adapter else None,
        env_kwargs=turn_limit(settings.max_turns),
    )
    return list(zip(result.records, result.final_infos or [], strict=True))


class ServedRollouts:
    """A :data:`PlayFunc` that generates GRPO's rollouts on a vLLM server instead of in-process.

    At every step the trained LoRA adapter is saved under ``root`` and loaded into the
    server under a name of its own (the run, the step and the process rank), the step's
    episodes are played through :class:`~trace_agents.endpoint.EndpointPolicy` with that
    adapter, and the adapter is unloaded again. The server samples from the weights being
    trained, so the rollouts stay on-policy; the trainer still computes the log-probs on
    the re-tokenized episodes. ``root`` must be a path the server can read (a shared disk
    when it runs elsewhere). A name a killed run left loaded is unloaded first, so a
    resumed run can load its step again.
    """

    def __init__(
        self, settings: GRPOConfig, root: str | os.PathLike[str], api_key: str | None = None, concurrency: int = 64
    ) -> None:
        import hashlib

        if not settings.vllm_url:
            raise ValueError("ServedRollouts needs settings.vllm_url, the server's OpenAI-compatible base URL")
        self.settings, self.root = settings, Path(root).resolve()
        self.api_key, self.concurrency = api_key, concurrency
        self.run_id = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]  # runs sharing a server differ

    def __call__(
        self, tasks: list[tuple[str, int]], repeats: int, model: Any, step: int
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        from trace_agents.endpoint import VLLM_ROLLOUTS, EndpointPolicy

        s = self.settings
        rank = int(os.environ.get("RANK", "0"))
        name = f"grpo-{self.run_id}-step-{step}-rank{rank}"
        path = self.root / name
        model.save_pretrained(path)  # a PeftModel saves its adapter alone
        # Each rank samples with its own seeds: a group split over ranks must not repeat itself.
        policy = EndpointPolicy(
            s.vllm_url,
            name,
            api_key=self.api_key,
            obs_format=s.obs_format,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            seed=step_seed(s, step) + 10_000_019 * rank,
            concurrency=self.concurrency,
            extra_body=VLLM_ROLLOUTS,
        )
        try:
            policy.load_adapter(name, path)  # unloads first a name a killed run left loaded
            return play_episodes(policy, tasks, repeats, s, adapter=name)
        finally:
            policy.close()  # an unload that fails warns: it must not hide why playing failed
            shutil.rmtree(path, ignore_errors=True)


class EpisodeRollouts:
    """TRL's ``rollout_func``: plays each prompt's task with the model being trained.

    ``play`` replaces who plays the episodes (default: the model being trained, on
    policy); tests pass a scripted player. :attr:`rollouts` counts the episodes run, which
    is what the budget charges.
    """

    def __init__(self, settings: GRPOConfig, tokenizer: Any, play: PlayFunc | None = None) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.play = play or self.play_on_policy
        self.rollouts = 0

    def play_on_policy(
        self, tasks: list[tuple[str, int]], repeats: int, model: Any, step: int
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``repeats`` episodes of every task with :class:`~trace_agents.policy.HFPolicy` over ``model``."""
        from trace_agents.policy import HFPolicy

        s = self.settings
        # A fresh policy per step: no KV cache made with older weights survives an update,
        # and the sampling seed follows the step, so a resumed run samples what it would have.
        policy = HFPolicy(
            model,
            self.tokenizer,
            obs_format=s.obs_format,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=step_seed(s, step),
            name="grpo",
        )
        return play_episodes(policy, tasks, repeats, s)

    def __call__(self, prompts: Sequence[str], trainer: Any) -> dict[str, Any]:
        s = self.settings
        tasks = [(k["env_id"], int(k["seed"])) for k in map(json.loads, prompts)]
        counts = Counter(tasks)
        played = []
        # TRL's unwrap gathers ZeRO-3's sharded weights for the whole play (each process then
        # plays its own episodes with full weights, no collective per forward pass); under
        # DDP it is a plain unwrap.
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            # One process normally holds whole groups (K copies of a task); under several
            # processes a group may be split, so tasks are played as often as they appear here.
            for repeats in sorted(set(counts.values())):
                same = [t for t in counts if counts[t] == repeats]
                played += self.play(same, repeats, model, trainer.state.global_step)
        self.rollouts += len(played)
        out: dict[str, Any] = group_samples(
            tasks, played, self.tokenizer, s.obs_format, s.max_length, group_size=s.num_generations
        )
        out["logprobs"] = None  # the trainer computes them on these exact ids
        return out


def episode_return(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    episode_return: Sequence[float],
    success: Sequence[bool] = (),
    components: Sequence[Mapping[str, float]] = (),
    group_dropped: Sequence[bool] = (),
    log_metric: Any = None,
    **_: Any,
) -> list[float]:
    """The reward TRL normalizes per group: the episode's return (logs success and components too).

    Args:
        prompts: TRL's prompts (unused).
        completions: TRL's completions (unused).
        episode_return: Per row, its episode's return: the reward.
        success: Per row, whether its episode succeeded (logged as a rate).
        components: Per row, its episode's return components (each logged as a mean).
        group_dropped: Per row, whether its group was dropped (logged as the share of rows).
        log_metric: TRL's ``log_metric(name, value)``; None: nothing is logged.
        **_: The other columns and callbacks TRL passes (ignored).
    """
    if log_metric is not None and episode_return:
        n = len(episode_return)
        log_metric("success", sum(success) / n if success else 0.0)
        log_metric("groups_dropped", sum(group_dropped) / n if group_dropped else 0.0)
        names = sorted({k for c in components for k in c})
        for name in names:
            values = [c[name] for c in components if name in c]
            log_metric(f"components/{name}", sum(values) / len(values))
    return [float(r) for r in episode_return]


def checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of the ``checkpoint-N`` directories under ``out``, newest first (complete or not)."""
    found = []
    for d in Path(out).glob("checkpoint-*"):
        step = d.name.partition("-")[2]
        if d.is_dir() and step.isdigit():
            found.append((int(step), d))
    return sorted(found, reverse=True)


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last: a checkpoint without a readable one was cut by a kill."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(out: str | Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` under ``out``, or None.

    transformers' own ``get_last_checkpoint`` takes the highest N even when a kill cut its
    save short, and resuming from it would fail.
    """
    return next((d for _, d in checkpoints(out) if _complete(d)), None)


def prepare_out(out: Path, resume: bool) -> Path | None:
    """Make ``out`` ready for a training run; returns the checkpoint to resume from (or None).

    Resuming removes the checkpoints a kill cut short (the run writes them again); starting
    afresh refuses a directory that already holds a run.
    """
    checkpoint = last_checkpoint(out) if resume else None
    if resume:
        for _, d in checkpoints(out):
            if d != checkpoint and not _complete(d):
                shutil.rmtree(d)
    if not resume and (out / "log.jsonl").exists():
        raise FileExistsError(
            f"{out} already holds a training run; pass resume=True (--resume) to continue it, or choose another out"
        )
    out.mkdir(parents=True, exist_ok=True)
    return checkpoint


def trim_log(path: Path, step: int) -> None:
    """Drop the ``log.jsonl`` lines past ``step`` (and any torn by a kill): a resumed run writes them again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if entry.get("step", 0) <= step:
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


def _log_callback(path: Path, settings: GRPOConfig) -> Any:
    from transformers import TrainerCallback

    class JSONLLog(TrainerCallback):
        """Appends each log to ``log.jsonl``; on resume, drops lines past the checkpoint's step."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                trim_log(path, state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
            if not logs or not state.is_world_process_zero:  # one writer under several processes
                return
            entry = {
                "step": state.global_step,
                "rollouts_used": state.global_step * settings.rollouts_per_step,
                **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
            }
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()

    return JSONLLog()


def _quiet_progress(trainer: Any) -> None:
    """Keep the Trainer's progress bar but not its printing of every log dict (log.jsonl has them)."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress())


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The ``log.jsonl`` entries of a training run (torn lines skipped)."""
    path = Path(out) / "log.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def train_adapter(
    settings: GRPOConfig,
    model: Any,
    tokenizer: Any = None,
    resume: bool = False,
    progress: bool = True,
    play: PlayFunc | None = None,
) -> dict[str, Any]:
    """Train one LoRA adapter with GRPO; returns the run summary (also in ``out/summary.json``).

    ``model`` is a model directory or id (see :func:`trace_agents.models.load`) or a loaded
    causal LM with its ``tokenizer``. The base weights are never changed. ``play``: see
    :class:`EpisodeRollouts`. A saved scorer agent (or a loaded
    :class:`~trace_agents.scorer.agent.ScorerPolicy`) trains with the scorer's own GRPO
    (:func:`trace_agents.scorer.grpo.train_scorer_adapter`): same settings, same artefacts.

    Args:
        settings: The run: env ids, steps, sampling, LoRA and GRPO settings, and ``out``.
        model: A model directory or hub id, a loaded causal LM, a saved scorer's directory, or
            a loaded :class:`~trace_agents.scorer.agent.ScorerPolicy`.
        tokenizer: The loaded LM's tokenizer (required with one; ignored otherwise).
        resume: Continue from the newest complete checkpoint under ``settings.out``; without it,
            an ``out`` that already holds a run is refused.
        progress: Show the trainer's progress bar.
        play: Who plays each step's episodes (:data:`PlayFunc`); None: the model being trained,
            in-process or on ``settings.vllm_url``. A scorer takes none.
    """
    from trace_agents.scorer.agent import ScorerPolicy, is_scorer

    if isinstance(model, ScorerPolicy) or isinstance(model, (str, os.PathLike)) and is_scorer(model):
        if settings.vllm_url:
            raise ValueError(
                "--vllm-url generates text; a scorer chooses among admissible actions in-process (drop --vllm-url)"
            )
        if play is not None:
            raise ValueError("a scorer plays its own episodes (it chooses among admissible actions); drop play=")
        from trace_agents.scorer.grpo import train_scorer_adapter

        return train_scorer_adapter(settings, model, resume=resume, progress=progress)
    require_train_extra("trl")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    import trace_envs
    from trace_agents.models import load

    out = Path(settings.out)
    for env_id in settings.env_ids:
        trace_envs.make(env_id).close()  # an unknown id fails here, with a did-you-mean
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        model, tokenizer = load(model)
    else:
        source = str(getattr(model, "name_or_path", type(model).__name__))
        if tokenizer is None:
            raise ValueError("pass the tokenizer with a loaded model")
    checkpoint = prepare_out(out, resume)
    targets: Any = settings.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    # Under `accelerate launch` the groups of a step are shared out over the processes, so a
    # step plays the same episodes (and is charged the same budget) however many there are.
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    if settings.groups_per_step % world:
        raise ValueError(
            f"groups_per_step ({settings.groups_per_step}) must be a multiple of the number of processes ({world})"
        )
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=0,
        weight_decay=0.0,
        per_device_train_batch_size=settings.num_generations,
        gradient_accumulation_steps=settings.groups_per_step // world,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_length,
        temperature=settings.temperature,
        top_p=settings.top_p,
        beta=settings.beta,
        epsilon=settings.epsilon,
        loss_type="dapo",
        scale_rewards="group",
        mask_truncated_completions=False,
        save_strategy="steps",
        save_steps=settings.save_steps,
        logging_steps=settings.logging_steps,
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        **no_activation_checkpointing(GRPOConfig),
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        log_completions=False,
        save_only_model=False,
    )
    dataset = Dataset.from_dict({"prompt": [task_prompt(e, s) for e, s in settings.tasks()]})
    if play is None and settings.vllm_url:
        play = ServedRollouts(settings, out / "served")
    rollouts = EpisodeRollouts(settings, tokenizer, play)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # PEFT reads transformers' deprecated `is_gradient_checkpointing`; nothing a caller can fix.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        # TRL marks rollout_func experimental and says so on every run; we pin TRL's range and test it.
        warnings.filterwarnings("ignore", message="You are using 'rollout_func'", category=UserWarning)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[episode_return],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            rollout_func=rollouts,
            callbacks=[_log_callback(out / "log.jsonl", settings)],
        )
        _quiet_progress(trainer)
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    adapter_dir = out / "adapter"
    start = int(checkpoint.name.split("-")[1]) if checkpoint else 0
    summary = {
        "settings": asdict(settings),
        "model": source,
        "adapter": str(adapter_dir),
        "steps": result.global_step,
        "rollouts_used": result.global_step * settings.rollouts_per_step,
        "rollouts_this_run": (result.global_step - start) * settings.rollouts_per_step,
        "processes": trainer.accelerator.num_processes,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_loss": result.training_loss,
        "seconds": time.perf_counter() - t0,
    }
    # The Trainer's save gathers sharded weights (ZeRO-3), so every process takes part; it
    # writes the adapter in PEFT's layout and the tokenizer, and the main process writes.
    trainer.save_model(str(adapter_dir))
    if trainer.accelerator.is_main_process:
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: nothing here reads it
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
