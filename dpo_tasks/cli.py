"""`python -m dpo_tasks <command> ...` (console script: `persona-dpo`).

One entry point per stage, shared by Airflow tasks, the Kubernetes trainer pod
and DVC stages. Each command lives in its own module exposing
`make_parser(command) -> argparse.ArgumentParser` and `main(args) -> int | None`
(`command` tells modules that serve two commands which one is meant);
modules are imported only when their command runs, so light commands (gate,
validate, publish) never import torch.

Usage:
    python -m dpo_tasks run --persona persona_e_mexican_vegan --run-dir runs/demo
    python -m dpo_tasks <command> --help
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Sequence

from dpo_tasks.config import DEFAULT_PERSONA, ConfigError, Persona, load_persona, parse_yaml, with_overrides
from dpo_tasks.loaders import InputFileError, brief

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-model": ("dpo_tasks.models", "convert the embedded GGUF model to safetensors once (cached)"),
    "generate": ("dpo_tasks.generate", "two variants per prompt from the SFT policy"),
    "label": ("dpo_tasks.label", "judge variants into chosen/rejected pairs"),
    "format": ("dpo_tasks.format", "pairs -> DPO records in ChatML"),
    "validate": ("dpo_tasks.validate", "check a DPO dataset file (JSONL or JSON list)"),
    "toy-data": ("dpo_tasks.validate", "write a small synthetic DPO dataset"),
    "sft": ("dpo_tasks.sft", "optional SFT (TRL SFTTrainer + LoRA) on the best strong-prompt answers, before DPO"),
    "train": ("dpo_tasks.train", "TRL DPO + LoRA training"),
    "evaluate": ("dpo_tasks.evaluate", "pairwise evaluation of the candidate vs a baseline"),
    "gate": ("dpo_tasks.gate", "win-rate gate: promote or not"),
    "publish": ("dpo_tasks.publish", "publish a version to the store and move LATEST"),
    "rollback": ("dpo_tasks.publish", "point LATEST back to an earlier version"),
    "export": ("dpo_tasks.export", "a published version with its adapter merged into the base (plain transformers model)"),
    "run": ("dpo_tasks.pipeline", "every stage in order for one persona"),
    "report": ("dpo_tasks.cross_report", "the cross-persona report (--all): win rates with intervals per persona, overall, per category"),
    "sync": ("dpo_tasks.store.sync", "copy run files between a run dir and a store URI (gs:// or a path)"),
    "dvc-params": ("dpo_tasks.lineage", "write params.yaml (the DVC pipeline's parameters) from personas.yaml"),
    "version-data": ("dpo_tasks.lineage", "version a run's datasets with DVC and push them to the DVC remote"),
    "remote": ("dpo_tasks.orchestration.remote", "run a stage where the run dir is not shared (a stage pod): pull inputs, run, push outputs"),
    "pod-spec": ("dpo_tasks.orchestration.podspec", "print a model stage's pod as Kubernetes YAML (no cluster contacted)"),
    "db-migrate": ("dpo_tasks.feedback.db", "apply the feedback database migrations (idempotent)"),
    "ingest-feedback": ("dpo_tasks.feedback.ingest", "load feedback rows from JSONL/CSV into the feedback database"),
    "feedback-status": ("dpo_tasks.feedback.rule", "each persona's new feedback and whether the retrain rule holds"),
    "feedback-export": ("dpo_tasks.feedback.export", "feedback window -> feedback_pairs.jsonl + feedback_prompts.jsonl"),
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-steps must be at least 1, got {text!r}")
    return value


def add_max_steps_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """`--max-steps N` (N >= 1) of the training stages (sft, train)."""
    parser.add_argument("--max-steps", type=_positive_int, default=None, help=help)


def add_persona_args(parser: argparse.ArgumentParser, *, run_dir: bool = True) -> None:
    """Arguments most stages share."""
    parser.add_argument("--persona", default=DEFAULT_PERSONA, help="persona id from personas.yaml (default: %(default)s)")
    parser.add_argument("--personas-file", default=None, help="personas.yaml path (default: the package's, or $PERSONA_DPO_PERSONAS)")
    if run_dir:
        parser.add_argument("--run-dir", required=True, help="the run directory (see dpo_tasks.runs)")


    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a pipeline setting for this run, e.g. --set training.epochs=1 (repeatable; VALUE is YAML)",
    )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`["training.epochs=1", "labeling.judge=groq"]` -> nested dict, values parsed as YAML.

    A key given twice takes the later value, as repeated options do (`make demo
    DEMO_ARGS="--set k=v"` relies on it to replace one of the demo's settings). A key
    given both as a value and as a section (`training=1` and `training.epochs=2`)
    is refused: which one the caller meant is unknowable.
    """
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(parts):
            raise ConfigError(f"--set {brief(item)}: expected KEY=VALUE, e.g. training.epochs=1")
        for n in range(1, len(parts)):
            prefix = ".".join(parts[:n])
            if given.get(prefix) == "value":
                raise ConfigError(f"--set {brief(item)}: conflicts with an earlier --set of {brief(prefix)}")
        if given.get(key) == "section":
            raise ConfigError(f"--set {brief(item)}: conflicts with an earlier --set of a key inside {brief(key)}")
        for n in range(1, len(parts)):
            given[".".join(parts[:n])] = "section"
        given[key] = "value"
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_yaml(raw, f"--set {brief(key)}")
    return out


def persona_from_args(args: argparse.Namespace) -> Persona:
    """The persona with personas.yaml overrides and this run's --set overrides applied."""
    persona = load_persona(args.persona, args.personas_file)
    return with_overrides(persona, parse_overrides(getattr(args, "overrides", []) or []))


def setup_logging() -> None:
    level = os.environ.get("PERSONA_DPO_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from dpo_tasks.redact import RedactingFilter

    # Every line a stage logs (its own, a library's, an exception's text) passes through redact():
    # Airflow shows the stage's output in the task log.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # Libraries chatter at INFO; keep the stage's own progress readable.
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m dpo_tasks <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module = importlib.import_module(COMMANDS[command][0])
    parser = module.make_parser(command)
    parser.prog = f"python -m dpo_tasks {command}"
    args = parser.parse_args(rest)
    args.command = command
    try:
        rc = module.main(args)
    except (ConfigError, InputFileError, FileNotFoundError) as exc:
        # A bad setting, a missing or unusable input file: say which, without a traceback.
        from dpo_tasks.redact import redact

        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    return int(rc or 0)

