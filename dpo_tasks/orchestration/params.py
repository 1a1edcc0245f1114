"""The trigger form of a persona DAG: validated params, and how they become CLI `--set` overrides.

Defaults come from the persona's effective config (personas.yaml defaults + overrides), so an
untouched form reproduces the scheduled run. Each form field maps to one config key; the stage
CLIs receive them as `--set key=value`, exactly as a user would type them.

A run's conf is untrusted: the form's fields and its `overrides` reach only the keys
`config.RUN_SETTABLE` allows. Where the run executes (the runner, images, namespaces, connections,
models, stores) comes from the deployment, so the form offers no field for it.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Param

from dpo_tasks.config import ConfigError, PipelineConfig, check_run_overrides
from dpo_tasks.loaders import brief

# form field -> dotted config key it overrides
PARAM_KEYS: dict[str, str] = {
    "num_prompts": "generation.num_prompts",
    "prompt_pool": "generation.prompt_pool",
    "judge": "labeling.judge",
    "eval_judge": "evaluation.judge",
    "eval_samples": "evaluation.samples_per_case",
    "min_win_rate_lower_bound": "gate.min_win_rate_lower_bound",
    "epochs": "training.epochs",
    "sft": "sft.enabled",
}


def _choices(default: str, *allowed: str) -> list[str]:
    # A persona configured with a judge the form does not offer (e.g. "reward") keeps it selectable.
    return list(allowed) if default in allowed else [default, *allowed]


def persona_params(cfg: PipelineConfig) -> dict[str, Param]:
    """The trigger form of a persona DAG, defaulting to that persona's effective config."""
    return {
        "num_prompts": Param(
            cfg.generation.num_prompts, type="integer", minimum=1, maximum=100_000,
            title="Number of prompts",
            description="Prompts sampled from the persona's pool; each gives one chosen/rejected pair at most.",
        ),
        "prompt_pool": Param(
            None, type=["null", "string"], title="Prompt pool",
            description="Your own prompts instead of the persona's pool: a JSONL file of {\"id\", \"prompt\"} lines, "
            "a gs:// URI under the deployment's $PERSONA_DPO_POOL_PREFIX (or a path under $PERSONA_DPO_LOCAL_POOL_ROOT). "
            "Empty: the pool the persona is configured with.",
        ),
        "judge": Param(
            cfg.labeling.judge, type="string", enum=_choices(cfg.labeling.judge, "rules", "groq"),
            title="Labeling judge",
            description="rules: the offline persona rule judge. groq: Llama 70B on Groq (connection groq_default, pool "
            "persona_dpo_groq).",
        ),
        "eval_judge": Param(
            cfg.evaluation.judge, type="string", enum=_choices(cfg.evaluation.judge, "checklist", "rules", "gemini"),
            title="Evaluation judge",
            description="checklist: each case's own expectations, offline and independent of the labeling judge. "
            "rules: the offline rule judge (the gate refuses when it also labeled, unless gate.allow_same_judge). "
            "gemini: Gemini on Vertex AI (connection google_cloud_default).",
        ),
        "eval_samples": Param(
            cfg.evaluation.samples_per_case, type="integer", minimum=1, maximum=8,
            title="Evaluation: answers per case",
            description="Each model answers every evaluation case this many times (own seed each) and every answer pair "
            "is judged: a narrower interval for the gate, at this many times the generation time and judge calls. The "
            "interval counts the samples of one case as one cluster, never as independent cases.",
        ),
        "min_win_rate_lower_bound": Param(
            cfg.gate.min_win_rate_lower_bound, type="number", minimum=0, maximum=1,
            title="Gate: minimum win-rate lower bound",
            description="Publish only when the lower end of the 95% Wilson interval of the win rate vs the current "
            "model reaches this.",
        ),
        "epochs": Param(
            cfg.training.epochs, type="number", exclusiveMinimum=0, maximum=100,
            title="Training epochs", description="DPO epochs over the labeled pairs.",
        ),
        "sft": Param(
            cfg.sft.enabled, type="boolean", title="SFT before DPO",
            description="Fine-tune a LoRA adapter on the run's best strong-prompt answers first (TRL SFTTrainer), then "
            "train DPO from it. Its settings: sft.* in the overrides below (docs/configuration.md).",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Run everything up to and including the gate, but do not publish.",
        ),
        "overrides": Param(
            {}, type="object", title="Advanced: extra overrides",
            description='More config overrides as {"dotted.key": value}, e.g. {"training.learning_rate": 1e-4}; '
            "applied after the fields above. Only counts, hyperparameters, judge kinds and the gate threshold "
            "(see docs/security.md); deployment settings are refused.",
        ),
    }


def _set_arg(key: str, value: Any) -> str:
    # JSON is valid YAML, so the CLI's YAML parsing of VALUE reads back exactly this value.
    return f"{key}={json.dumps(value)}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def overrides_from_params(params: dict[str, Any]) -> list[str]:
    """The run's `--set` arguments (without the flag), in a stable order: one per dotted key.

    `overrides` may be dotted (`{"training.beta": 0.2}`) or nested (`{"training": {"beta": 0.2}}`)
    and wins over the form's fields for the same key. ConfigError names any key the run may not set
    (`config.RUN_SETTABLE`).
    """
    values = {key: params[name] for name, key in PARAM_KEYS.items() if params.get(name) is not None}
    extra = params.get("overrides") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"run conf 'overrides' = {brief(extra)} must be an object of dotted.key: value")
    for key in extra:
        if not isinstance(key, str) or not key.strip() or key.startswith(".") or key.endswith(".") or ".." in key or "=" in key:
            raise ConfigError(f"run conf 'overrides' has a bad key {brief(key)}; expected a dotted config key")
    check_run_overrides(extra, where="run conf 'overrides'")
    flat = _flatten(extra)
    conflicts = sorted(k for k in flat if any(o.startswith(k + ".") for o in flat))
    if conflicts:
        raise ConfigError(f"run conf 'overrides' sets {brief(conflicts[0])} both as a value and as a section; give one")
    values.update(flat)
    # The form's fields too: a value can be refused by where it points (generation.prompt_pool).
    check_run_overrides(values, where="run conf")
    return [_set_arg(key, values[key]) for key in [*(k for k in PARAM_KEYS.values() if k in values), *sorted(set(values) - set(PARAM_KEYS.values()))]]
