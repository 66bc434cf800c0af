"""``trace bootstrap``: a base agent with known weaknesses, trained on a plain CPU.

1. Build (or reuse) the tiny preset: a tokenizer trained on env text and a small
   Qwen2-architecture model (:mod:`trace_agents.models`), or start from ``--model``.
2. Demonstrations: :class:`trace_envs.OraclePolicy` with a deficit profile plays the
   retail target and the four capability envs. Its mistakes are the ground truth that
   later analysis must recover.
3. Supervised fine-tuning with TRL's ``SFTTrainer``, loss on assistant tokens only.
   Conversations are tokenized here with TRL's generation-tagged Qwen2.5 training
   template, because Arrow would turn tool-call arguments of different shapes into one
   struct padded with nulls.
4. Evaluation on held-out seeds; everything is saved under ``--out``.

Demonstrations sample mistakes at each decision point with the profile's rates, so the
agent learns them as probabilities: evaluate it with sampling (the default temperature
is 1.0) to see the profile, since greedy decoding hides any deficit below 0.5.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trace_agents import eval_mode, no_activation_checkpointing, require_train_extra
from trace_agents.evaluate import CAPABILITY_ENVS as EVAL_CAPABILITY_ENVS

# Clear, different weaknesses, and one capability without any as a control.
# With these rates the oracle itself succeeds on about 40% of retail-v0 tasks, so an agent
# that imitated it well would sit inside the success band of ``acceptance``.
DEFAULT_DEFICITS: dict[str, float] = {
    "precondition_verification": 0.35,
    "structured_data_reasoning": 0.2,
    "tool_calling_precision": 0.1,
    "multi_step_completion": 0.0,
}
TARGET = "trace/retail-v0"
CAPABILITY_ENVS = tuple(EVAL_CAPABILITY_ENVS.values())  # one env per capability


def check_demonstrations(deficits: dict[str, float], target_share: float) -> None:
    """Refuse a deficit profile or target share that cannot make demonstrations (both agent kinds)."""
    from trace_envs import CAPABILITIES

    for cap, rate in deficits.items():
        if cap not in CAPABILITIES:
            raise ValueError(f"unknown capability {cap!r} in deficits; use {list(CAPABILITIES)}")
        if not 0 <= rate <= 1:
            raise ValueError(f"deficit rate of {cap} must be in [0, 1], got {rate}")
    if not 0 <= target_share <= 1:
        raise ValueError(f"target_share must be in [0, 1], got {target_share}")


@dataclass
class BootstrapConfig:
    """Settings of ``trace bootstrap``; every field is a CLI flag."""

    out: str = field(default="runs/bootstrap", metadata={"help": "output directory"})
    preset: str = field(default="tiny", metadata={"help": "model preset to build: tiny (CPU) or small (GPU)"})
    model: str | None = field(default=None, metadata={"help": "start from this HF model path instead of a preset"})
    deficits: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_DEFICITS),
        metadata={"help": "capability=rate pairs for the demonstrations"},
    )
    demos: int = field(default=900, metadata={"help": "demonstration episodes (split over the envs)"})
    target_share: float = field(default=0.5, metadata={"help": "share of demos on the retail target"})
    max_length: int = field(default=4096, metadata={"help": "training sequences are cut to this many tokens"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the demonstrations"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs)"})
    batch_size: int = field(default=4, metadata={"help": "sequences per optimizer step"})
    micro_batch: int = field(
        default=1,
        metadata={
            "help": "sequences per forward pass (1 on CPU: no padding, so attention takes the fast causal kernel)"
        },
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate (cosine decay)"})
    eval_episodes: int = field(default=20, metadata={"help": "held-out episodes per evaluated env"})
    eval_seed_start: int = field(default=1_000_000, metadata={"help": "first held-out seed (demos use 0..)"})
    eval_envs: list[str] = field(
        default_factory=lambda: [TARGET, *CAPABILITY_ENVS], metadata={"help": "envs to evaluate on"}
    )
    probe_episodes: int = field(
        default=10,
        metadata={
            "help": "held-out oracle target episodes on which to measure how well the agent copies ids (0: skip)"
        },
    )
    eval_batch_size: int = field(default=20, metadata={"help": "episodes generated for at once in evaluation"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the saved agent"})
    max_new_tokens: int = field(default=160, metadata={"help": "longest generated turn in tokens"})
    seed: int = field(default=0, metadata={"help": "seed for demos, training and sampling"})

    def __post_init__(self) -> None:
        check_demonstrations(self.deficits, self.target_share)
        if self.demos < 1 or self.batch_size < 1 or self.max_length < 128 or self.max_new_tokens < 1:
            raise ValueError("demos, batch_size and max_new_tokens must be >= 1 and max_length >= 128")
        if self.micro_batch < 1 or self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch must divide batch_size; got {self.micro_batch} and {self.batch_size}")
        # Checked here, not after the fine-tune: a typo must not cost a training run.
        for name in ("eval_episodes", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_episodes < 0 or self.temperature < 0:
            raise ValueError(
                f"probe_episodes and temperature must be >= 0, got {self.probe_episodes} and {self.temperature}"
            )
        if self.learning_rate <= 0 or (self.epochs <= 0 and self.max_steps <= 0):
            raise ValueError(
                f"learning_rate must be > 0 and epochs > 0 (or max_steps > 0); got "
                f"{self.learning_rate}, {self.epochs} and {self.max_steps}"
            )
        from trace_envs.registration import check_id

        for env_id in self.eval_envs:
            check_id(env_id)


def demonstrations(deficits: dict[str, float], n: int, target_share: float, seed: int = 0) -> list[dict[str, Any]]:
    """Oracle conversations: the target gets ``target_share``, the capability envs the rest."""
    from trace_envs import OraclePolicy

    # At most n // len(CAPABILITY_ENVS) each, so the target's count is never negative.
    per_cap = min(round(n * (1 - target_share) / len(CAPABILITY_ENVS)), n // len(CAPABILITY_ENVS))
    plan = [(TARGET, n - per_cap * len(CAPABILITY_ENVS))] + [(e, per_cap) for e in CAPABILITY_ENVS]
    oracle = OraclePolicy(deficits=deficits, seed=seed)
    return [demo for env_id, count in plan for demo in _play(oracle, env_id, range(count))]


def _play(oracle: Any, env_id: str, seeds: range) -> list[dict[str, Any]]:
    """One oracle conversation per seed, with its outcome and the oracle's mistakes."""
    import gymnasium as gym

    from trace_agents.trajectories import NOT_ANNOTATIONS

    env = gym.make(env_id)
    out = []
    for s in seeds:
        obs, info = env.reset(seed=s)
        oracle.reset(env)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(oracle.act(obs, info))
            done = terminated or truncated
        out.append(
            {
                "env_id": env_id,
                "seed": s,
                "messages": info["messages"],
                "tools": info["tools"],
                "success": info["success"],
                "mistakes": dict(oracle.mistakes),
                "annotations": {k: v for k, v in info.items() if k not in NOT_ANNOTATIONS},
            }
        )
    env.close()
    return out


def tokenize_demos(
    demos: list[dict[str, Any]], tokenizer: Any, max_length: int, obs_format: str = "compact"
) -> tuple[dict[str, list[list[int]]], int]:
    """input_ids and assistant masks per conversation, cut to ``max_length``; returns them and how many were cut.

    A conversation cut before its first assistant turn has nothing to learn from and is left out.

    Long episodes are cut rather than dropped: dropping would leave only the short tasks,
    and the agent would never see how a long one goes on.
    """
    from trl.chat_template_utils import get_training_chat_template

    from trace_agents.chat import template_tools, to_chat

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the model's tokenizer has no chat template: trace bootstrap --model needs a chat model "
            "(a chat_template in its tokenizer_config.json or chat_template.jinja)"
        )
    template = get_training_chat_template(tokenizer) or tokenizer.chat_template
    ids, masks, cut = [], [], 0
    for demo in demos:
        out = tokenizer.apply_chat_template(
            to_chat(demo["messages"], demo["tools"], obs_format),
            tools=template_tools(demo["tools"], obs_format),
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        cut += len(out["input_ids"]) > max_length
        if not any(out["assistant_masks"][:max_length]):
            continue  # cut before the first assistant turn: nothing to learn from
        ids.append(list(out["input_ids"][:max_length]))
        masks.append(list(out["assistant_masks"][:max_length]))
    return {"input_ids": ids, "assistant_masks": masks}, cut


def copy_probe(
    model: Any, tokenizer: Any, episodes: int = 10, seed_start: int = 1_000_000, max_length: int = 4096
) -> dict[str, Any]:
    """How well ``model`` copies the digit strings its turns need, teacher-forced on oracle episodes.

    A retail agent copies order, item and user ids from the conversation into its tool
    calls; the oracle never makes one up. The probe plays ``episodes`` target seeds with a
    mistake-free oracle and reads the model's greedy prediction at each digit token of an
    assistant turn, given the true text before it:

    - ``continuation_accuracy``: digits after the first of a run (the first picks *which*
      id; the rest only copy it). Chance is about 0.1 with one-digit tokens.
    - ``runs_exact``: digit runs with every token right.

    An agent near chance here cannot succeed on the target whatever else it learned.
    """
    import torch

    from trace_envs import OraclePolicy

    data, _ = tokenize_demos(
        _play(OraclePolicy(), TARGET, range(seed_start, seed_start + episodes)), tokenizer, max_length
    )
    is_digit: dict[int, bool] = {}

    def digit(token: int) -> bool:
        if token not in is_digit:
            is_digit[token] = tokenizer.decode([token]).strip().isdigit()
        return is_digit[token]

    right = total = runs = exact = 0
    device = next(model.parameters()).device
    with eval_mode(model), torch.inference_mode():
        for ids, mask in zip(data["input_ids"], data["assistant_masks"], strict=True):
            logits = model(torch.tensor([ids], device=device)).logits[0, :-1]
            hits = (logits.argmax(-1).cpu() == torch.tensor(ids[1:])).tolist()
            run: list[bool] = []  # hits of the digit run being read
            for t in range(1, len(ids) + 1):
                if t < len(ids) and mask[t] and digit(ids[t]):
                    run.append(hits[t - 1])
                    continue
                if run:
                    runs, exact = runs + 1, exact + all(run)
                    right, total = right + sum(run[1:]), total + len(run) - 1
                    run = []
    return {
        "episodes": len(data["input_ids"]),
        "continuation_tokens": total,
        "continuation_accuracy": right / total if total else None,
        "runs": runs,
        "runs_exact": exact / runs if runs else None,
    }


def run(config: BootstrapConfig) -> dict[str, Any]:
    """Build, demonstrate, fine-tune, evaluate and save; returns the report."""
    require_train_extra("trl")
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trace_agents import evaluate as ev
    from trace_agents.models import load, tiny_preset
    from trace_agents.policy import HFPolicy

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source = config.model or str(tiny_preset(config.preset))
    model, tokenizer = load(source)
    timings["preset"] = time.perf_counter() - t0

    t = time.perf_counter()
    demos = demonstrations(config.deficits, config.demos, config.target_share, config.seed)
    with open(out / "demos.jsonl", "w", encoding="utf-8") as f:
        for d in demos:
            f.write(json.dumps(d) + "\n")
    data, cut = tokenize_demos(demos, tokenizer, config.max_length)
    timings["demos"] = time.perf_counter() - t
    print(
        f"[bootstrap] {len(demos)} demonstrations, {cut} cut to {config.max_length} tokens; "
        f"oracle success {sum(d['success'] for d in demos) / len(demos):.3f}"
    )

    t = time.perf_counter()
    torch.manual_seed(config.seed)
    args = SFTConfig(
        output_dir=str(out / "sft"),
        per_device_train_batch_size=config.micro_batch,
        gradient_accumulation_steps=config.batch_size // config.micro_batch,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        max_length=None,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        # Batches of several sequences are grouped by length to waste little on padding.
        train_sampling_strategy="group_by_length" if config.micro_batch > 1 else "random",
        # SFTConfig turns activation checkpointing on by default; a model this small has the
        # memory to spare, and recomputing activations would cost a third of the step time.
        **no_activation_checkpointing(SFTConfig),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data), processing_class=tokenizer)
    train_out = trainer.train()
    timings["sft"] = time.perf_counter() - t
    model_dir = out / "model"
    trainer.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    t = time.perf_counter()
    policy = HFPolicy(
        trainer.model,
        tokenizer,
        temperature=config.temperature,
        seed=config.seed,
        max_new_tokens=config.max_new_tokens,
        name=str(model_dir),
    )
    summaries = [
        ev.evaluate(policy, env_id, config.eval_episodes, config.eval_seed_start, batch_size=config.eval_batch_size)
        for env_id in config.eval_envs
    ]
    timings["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    probe = (
        copy_probe(trainer.model, tokenizer, config.probe_episodes, config.eval_seed_start, config.max_length)
        if config.probe_episodes
        else None
    )
    timings["probe"] = time.perf_counter() - t
    profile = ev.profile_agreement(config.deficits, summaries)
    checks = acceptance(summaries, profile)
    timings["total"] = time.perf_counter() - t0
    report = {
        "config": asdict(config),
        "source": source,
        "model_dir": str(model_dir),
        "train_loss": train_out.training_loss,
        "steps": train_out.global_step,
        "sequences": len(data["input_ids"]),
        "cut_to_max_length": cut,
        "evaluation": summaries,
        "profile": profile,
        "checks": checks,
        "copy_probe": probe,
        "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report))
    print(ev.format_table(summaries) + format_checks(checks) + format_probe(probe))
    return report


# What the base agent is for: later stages need an agent that mostly acts well-formed,
# fails often enough to learn from, and fails in the injected pattern.
SUCCESS_BAND = (0.15, 0.60)
MIN_WELL_FORMED = 0.8


def acceptance(summaries: list[dict[str, Any]], profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The base agent's acceptance checks, each with its measured value and whether it passed."""
    checks: dict[str, dict[str, Any]] = {}
    target = next((s for s in summaries if s["env_id"] == TARGET), None)
    if target is not None:
        lo, hi = SUCCESS_BAND
        checks["target_success_in_band"] = {
            "value": target["success"],
            "band": list(SUCCESS_BAND),
            "passed": lo <= target["success"] <= hi,
        }
        checks["well_formed"] = {
            "value": target["well_formed_rate"],
            "min": MIN_WELL_FORMED,
            "passed": target["well_formed_rate"] >= MIN_WELL_FORMED,
        }
    if profile["measured"]:
        checks["profile_follows_deficits"] = {
            "value": profile["measured"],
            "discordant": profile["discordant"],
            "passed": profile["follows"],
        }
    return checks


def format_checks(checks: dict[str, dict[str, Any]]) -> str:
    """One line per acceptance check."""
    lines = []
    for name, c in checks.items():
        value = c["value"]
        shown = (
            ", ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in value.items())
            if isinstance(value, dict)
            else f"{value:.3f}"
        )
        lines.append(f"- {'PASS' if c['passed'] else 'FAIL'} {name}: {shown}")
    return "\n".join(lines) + "\n"


def format_report(report: dict[str, Any]) -> str:
    """report.md: the evaluation table, the acceptance checks and the timings."""
    from trace_agents import evaluate as ev

    timings = ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items())
    return (
        f"# Bootstrap\n\nModel: `{report['model_dir']}` (from `{report['source']}`), "
        f"{report['steps']} optimizer steps on {report['sequences']} demonstrations, "
        f"final train loss {report['train_loss']:.3f}.\n\n"
        f"Injected deficits: {json.dumps(report['config']['deficits'])}\n\n"
        + ev.format_table(report["evaluation"])
        + "\n## Checks\n\n"
        + format_checks(report["checks"])
        + format_probe(report.get("copy_probe"))
        + f"\nTimings (s): {timings}\n"
    )


def format_probe(probe: dict[str, Any] | None) -> str:
    """The copy probe as a markdown section ('' when it was skipped)."""
    if not probe or not probe["runs"]:
        return ""

    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    return (
        "\n## Copying ids\n\n"
        f"Teacher-forced on {probe['episodes']} held-out oracle episodes of `{TARGET}`: "
        f"digits after the first of a run right {share(probe['continuation_accuracy'])} "
        f"(n={probe['continuation_tokens']}; chance about 0.1 with one-digit tokens), "
        f"whole digit runs right {share(probe['runs_exact'])} (n={probe['runs']}). "
        "The agent's tool calls need ids copied from the conversation; near chance here, it cannot "
        "succeed on the target.\n"
    )
