"""The run directory contract and the file helpers every stage shares.

Stages pass files, not Python objects. One run of one persona lives in one
directory; each stage reads its inputs from it and writes its outputs to it, so
Airflow, the Kubernetes pod and DVC can all run any stage from the files alone.

    <run_dir>/
      feedback_prompts.jsonl feedback export (optional) {id, prompt, source: "feedback"} joined to the pool
      feedback_pairs.jsonl   feedback export (optional) {id, prompt, chosen, rejected, source: "feedback"}
                                                       appended by label to the judged pairs
      prompts.jsonl          generate's input sample   {id, prompt, source}
      variants.jsonl         generate                  {id, prompt, system_strong, system_weak, variant_a, variant_b}
      labeled.jsonl          label                     {id, prompt, chosen, rejected, chosen_variant, margin, source, ...}
      dpo.jsonl              format                    {prompt, chosen, rejected} in ChatML
      sft/                   sft (optional)            adapter/, sft.jsonl (the examples), metrics.json
      train/                 train                     adapter/, config.yaml, metrics.json
      eval/                  evaluate                  detailed_results.json, summary_stats.json, evaluation_report.html
      gate.json              gate                      decision and the numbers behind it
      publish.json           publish                   store URI of the version, whether LATEST moved
      summaries/<stage>.json every stage                the stage's small summary (counts, metrics, paths);
                                                       also what Airflow pushes to XCom
      run_summary.json       run                       every stage's summary, in order

Each stage module exposes `run(persona, run_dir, ...) -> dict` (the summary,
also written to `summaries/<stage>.json`) and `make_parser(command)` +
`main(args)` for the CLI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from dpo_tasks import loaders

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root))

    @property
    def feedback_prompts(self) -> Path:
        return self.root / "feedback_prompts.jsonl"

    @property
    def feedback_pairs(self) -> Path:
        return self.root / "feedback_pairs.jsonl"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.jsonl"

    @property
    def variants(self) -> Path:
        return self.root / "variants.jsonl"

    @property
    def labeled(self) -> Path:
        return self.root / "labeled.jsonl"

    @property
    def dpo(self) -> Path:
        return self.root / "dpo.jsonl"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def sft_adapter(self) -> Path:
        return self.sft / "adapter"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def adapter(self) -> Path:
        return self.train / "adapter"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def gate(self) -> Path:
        return self.root / "gate.json"

    @property
    def publish(self) -> Path:
        return self.root / "publish.json"

    @property
    def summary(self) -> Path:
        return self.root / "run_summary.json"

    def stage_summary(self, stage: str) -> Path:
        return self.root / "summaries" / f"{stage}.json"

    def ensure(self) -> "RunDir":
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """A run file written by `write_json`; a damaged one is an InputFileError naming it, never a traceback."""
    return loaders.read_json(path, what="run file")


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file of objects (a missing file is empty).

    With `tolerate_torn_tail`, a last line cut short by a kill is dropped (and
    the file truncated to the last complete record) so a resumed stage appends
    cleanly; a bad line anywhere else is an InputFileError naming the file and line.
    Lines end at `\n` only: U+2028 or U+0085 inside a string are data.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    data = loaders.check_regular_file(path, what="JSONL file").read_bytes()
    lines = data.split(b"\n")
    good_bytes = 0
    for i, line in enumerate(lines, start=1):
        is_last = i == len(lines) or (i == len(lines) - 1 and lines[-1] == b"")
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            row = loaders.parse_json(loaders.decode_utf8(line, path, first_line=i))
        except (loaders.JSONProblem, loaders.InputFileError) as exc:
            # A kill can cut a line anywhere, mid-character included.
            torn = isinstance(exc, loaders.InputFileError) or exc.line is not None
            if tolerate_torn_tail and is_last and torn:
                log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(line))
                with open(path, "r+b") as fh:
                    fh.truncate(good_bytes)
                break
            if isinstance(exc, loaders.InputFileError):
                raise
            raise loaders.InputFileError(path, str(exc), line=i) from None
        if not isinstance(row, dict):
            raise loaders.InputFileError(path, f"expected a JSON object, got {type(row).__name__} {loaders.brief(row)}", line=i)
        rows.append(row)
        good_bytes += len(line) + 1
    return rows


class JsonlAppender:
    """Append records one at a time, flushed and fsynced, so a kill loses at most the record in flight."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Progress:
    """Line-based progress for logs (Airflow task logs do not render carriage returns).

    Logs at most every `every_s` seconds and at the end: done/total, rate, ETA.
    """

    def __init__(self, label: str, total: int, *, unit: str = "items", every_s: float = 5.0, logger: logging.Logger | None = None):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done = 0
        self._log = logger or log
        self._start = self._last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{remaining:.0f}s" if remaining != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self._log.info("%s: %d/%d %s (%.0f%%) %.2f %s/s, ETA %s", self.label, self.done, self.total, self.unit, pct, rate, self.unit, eta)


def trainer_progress_callback(label: str, keys: tuple[str, ...] = ("loss",), logger: logging.Logger = log) -> Any:
    """A transformers `TrainerCallback` for the SFT and DPO trainers: line-based progress and the
    per-step metrics named in `keys` in the task log of `logger` (tqdm bars do not render there)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(label, state.max_steps, unit="steps", every_s=10.0)

        def on_step_end(self, args, state, control, **kwargs):
            self.progress.advance()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                shown = " ".join(f"{k}={logs[k]:.4f}" for k in keys if k in logs)
                logger.info("%s step %d/%d %s", label, state.global_step, state.max_steps, shown)

    return ProgressCallback()


def save_trained_adapter(trainer: Any, base: str, dest: Path, scratch: Path) -> None:
    """Save only the trained LoRA adapter of an SFT or DPO trainer (not TRL's "ref" copy) to `dest`,
    atomically, then drop the trainer's `scratch` dir: a half-written adapter must never look like a
    finished one to the stages that read it (train, evaluate, publish).

    `base` becomes the adapter's `base_model_name_or_path` (the configured id, not a resolved path).
    """
    model = trainer.model
    model.peft_config["default"].base_model_name_or_path = base
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.rmtree(scratch, ignore_errors=True)
