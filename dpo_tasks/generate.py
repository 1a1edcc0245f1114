"""Stage `generate`: two responses per prompt from the SFT policy, the raw material of preference pairs.

Prompts: the persona's feedback prompts (`feedback_prompts.jsonl`, if the run has
one) first, then a seeded sample of the pool, `generation.num_prompts` in all ->
`prompts.jsonl` (kept on rerun, so a resumed run samples nothing new). The pool is
`--pool`, else `generation.prompt_pool` (a path or gs:// URI of {id, prompt} lines,
minus prompts too close to an evaluation case), else the shipped one. The seed is
`run_seed`: `generation.seed` with the persona and the run directory's name, so
each Airflow run samples differently and a rerun of one run samples the same.

Variants per prompt (`variants.jsonl`):
    variant_a  system prompt with every persona constraint, at `strong_temperature` (0.7)
    variant_b  a generic cooking-assistant system prompt,   at `weak_temperature`   (0.9)
    variant_c, variant_d, ...  only with `labeling.judge: reward`: `labeling.reward.num_candidates`
               samples in all, alternating the two system prompts, for the reward model to rank

Every variant records whether it was cut off: `variant_a_cut_off` is true when
the answer ran into `generation.max_new_tokens` without ending its turn.

Generation is batched with left padding. Each batch of `generation.batch_size`
prompts is seeded from (the run's seed, batch number, variant), and the
batches are fixed by the order of `prompts.jsonl`, so a rerun after a kill skips
the prompts already in `variants.jsonl` and regenerates the rest exactly as an
uninterrupted run would have.

Usage:
    python -m dpo_tasks generate --persona persona_e_mexican_vegan --run-dir runs/demo
    python -m dpo_tasks generate ... --set generation.num_prompts=8 --set generation.max_new_tokens=64
    python -m dpo_tasks generate ... --pool my_prompts.jsonl        # {id, prompt} per line
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.prompts import SystemKind, load_prompt_pool, system_prompt
from dpo_tasks.runs import JsonlAppender, Progress, RunDir, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantSpec:
    """One response per prompt: the output field, the system prompt it sees, its temperature."""

    field: str
    system: SystemKind
    temperature: float


def variant_specs(persona: Persona) -> list[VariantSpec]:
    gen = persona.config.generation
    specs = [
        VariantSpec("variant_a", "strong", gen.strong_temperature),
        VariantSpec("variant_b", "weak", gen.weak_temperature),
    ]
    if persona.config.labeling.judge == "reward":
        # Reward labeling ranks N samples per prompt; the extra ones alternate the two system prompts.
        for i in range(2, persona.config.labeling.reward.num_candidates):
            like = specs[i % 2]
            specs.append(VariantSpec(f"variant_{chr(ord('a') + i)}", like.system, like.temperature))
    return specs


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from its parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _new_token_counts(new_tokens: Any, stop_ids: set[int]) -> list[tuple[int, bool]]:
    """Per row: tokens generated up to and including its first stop token (the rest is padding),
    and whether it stopped at all (False: it ran into `max_new_tokens`, cut off)."""
    counts = []
    for row in new_tokens.tolist():
        n, stopped = len(row), False
        for i, tok in enumerate(row):
            if tok in stop_ids:
                n, stopped = i + 1, True
                break
        counts.append((n, stopped))
    return counts


@dataclass(frozen=True)
class Generated:
    """One completion: its text, and whether it stopped at the token limit instead of ending its turn."""

    text: str
    cut_off: bool


def generate_texts(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], **kwargs: Any) -> list[str]:
    """`generate` without the cut-off flags."""
    return [g.text for g in generate(model, tokenizer, conversations, **kwargs)]


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    label: str = "generate",
    stats: dict[str, float] | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
) -> list[Generated]:
    """One completion per conversation (chat template + generation prompt), in input order.

    Batched and left-padded; batch i is seeded with `seed + i`, so the same
    inputs give the same outputs. temperature 0 is greedy. `stats`, if given,
    receives `new_tokens`, `seconds` and `cut_off` (added to what it holds).
    A completion is cut off when it generated `max_new_tokens` tokens without
    an end-of-turn or EOS token: the answer did not finish.
    """
    import torch

    if not conversations:
        return []
    extra: dict[str, Any] = {}
    if repetition_penalty is not None:
        extra["repetition_penalty"] = repetition_penalty
    if no_repeat_ngram_size:
        extra["no_repeat_ngram_size"] = no_repeat_ngram_size
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]
    # The template already carries the special tokens; a tokenizer that adds BOS would double it.
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Similar lengths share a batch: less padding to compute. Stable, so still deterministic.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = model.generation_config.eos_token_id
    stop_ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    stop_ids.discard(None)

    outputs: list[Generated] = [Generated("", False)] * len(texts)
    cut_total = 0
    device = next(model.parameters()).device
    progress = Progress(label, len(texts), unit="responses")
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    start = time.monotonic()
    new_tokens_total = 0
    try:
        for b, lo in enumerate(range(0, len(order), batch_size)):
            idx = order[lo : lo + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
            torch.manual_seed(seed + b)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
            with torch.inference_mode():
                out = model.generate(
                    **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling, **extra
                )
            new = out[:, batch["input_ids"].shape[1] :]
            counts = _new_token_counts(new, stop_ids)
            new_tokens_total += sum(n for n, _ in counts)
            for i, text, (n, stopped) in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), counts):
                cut = not stopped and n >= max_new_tokens
                cut_total += cut
                outputs[i] = Generated(text.strip(), cut)
            progress.advance(len(idx))
    finally:
        tokenizer.padding_side = saved_side
    if stats is not None:
        stats["new_tokens"] = stats.get("new_tokens", 0) + new_tokens_total
        stats["seconds"] = stats.get("seconds", 0.0) + time.monotonic() - start
        stats["cut_off"] = stats.get("cut_off", 0) + cut_total
    return outputs


def _valid_prompts(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Rows with an id and a non-empty prompt; the others are reported and skipped."""
    good = []
    for n, row in enumerate(rows, start=1):
        prompt, pid = row.get("prompt"), row.get("id")
        if not isinstance(prompt, str) or not prompt.strip() or pid in (None, ""):
            log.warning("%s row %d: skipped, needs a non-empty 'prompt' and an 'id' (got id=%r, prompt=%r)", where, n, pid, prompt)
            continue
        good.append({"id": str(pid), "prompt": prompt.strip(), "source": row.get("source") or "pool"})
    return good


def run_seed(persona: Persona, rd: RunDir) -> int:
    """This run's sampling seed: `generation.seed` with the persona and the run directory's name.

    The run directory is named after the Airflow run id, so a scheduled run draws other prompts
    and other samples than the last one, while a rerun (or retry) of the same run draws the same.
    """
    return derive_seed(persona.config.generation.seed, persona.id, rd.root.name)


def load_pool(persona: Persona, rd: RunDir, pool_path: str | Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run's prompt pool and where it came from: `pool_path`, else `generation.prompt_pool`, else the shipped one.

    A user's pool (a path or a gs:// URI, fetched into the run directory) loses the prompts that
    near-duplicate one of the persona's evaluation cases: training on them would leak the test.
    """
    source = str(pool_path) if pool_path is not None else persona.config.generation.prompt_pool
    if source is None:
        pool = _valid_prompts(load_prompt_pool(persona.id), f"prompt pool of {persona.id!r}")
        return pool, {"pool": "shipped", "pool_rows": len(pool), "pool_held_out": 0}
    from dpo_tasks.prompts import load_eval_cases, read_prompt_pool
    from dpo_tasks.textsim import Index

    local: str | Path = source.removeprefix("file://")
    if source.startswith("gs://"):
        from dpo_tasks.store.sync import fetch_file

        try:
            local = fetch_file(source, rd.root / "prompt_pool.jsonl")
        except FileNotFoundError as exc:
            raise ConfigError(f"prompt pool {source!r}: {exc}") from None
    rows = read_prompt_pool(local, shown=source)
    cases = Index((c["id"], c["prompt"]) for c in load_eval_cases(persona.id))
    pool = []
    held_out = 0
    for row in rows:
        match = cases.matches(row["prompt"])
        if match:
            held_out += 1
            log.warning("prompt pool %s: %r skipped, too close to evaluation case %s", source, row["id"], match[0][0])
            continue
        pool.append({**row, "source": "pool"})
    if not pool:
        raise ConfigError(f"prompt pool {source!r}: every prompt is a near-duplicate of an evaluation case")
    return pool, {"pool": source, "pool_rows": len(rows), "pool_held_out": held_out}


def select_prompts(persona: Persona, rd: RunDir, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feedback prompts first, then a sample of `pool` seeded by `run_seed`; `num_prompts` in all."""
    gen = persona.config.generation
    feedback = [{**r, "source": "feedback"} for r in _valid_prompts(read_jsonl(rd.feedback_prompts), str(rd.feedback_prompts))]
    chosen: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    for row in feedback:
        if row["prompt"] not in seen_text and row["id"] not in seen_ids and len(chosen) < gen.num_prompts:
            chosen.append(row)
            seen_ids.add(row["id"])
            seen_text.add(row["prompt"])
    rest = [r for r in pool if r["prompt"] not in seen_text and r["id"] not in seen_ids]
    k = min(gen.num_prompts - len(chosen), len(rest))
    chosen += random.Random(run_seed(persona, rd)).sample(rest, k)
    if not chosen:
        raise ConfigError(f"no usable prompt for persona {persona.id!r}: the pool and the feedback prompts are empty")
    if len(chosen) < gen.num_prompts:
        log.warning("only %d prompts available for %r (generation.num_prompts=%d)", len(chosen), persona.id, gen.num_prompts)
    return chosen


def run(persona: Persona, run_dir: str | Path | RunDir, *, pool_path: str | Path | None = None) -> dict[str, Any]:
    from dpo_tasks.models import load_policy

    rd = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).ensure()
    gen = persona.config.generation
    seed = run_seed(persona, rd)
    pool_info: dict[str, Any] = {}
    if rd.prompts.exists():
        prompts = read_jsonl(rd.prompts)
        log.info("reusing %d prompts from %s", len(prompts), rd.prompts)
    else:
        pool, pool_info = load_pool(persona, rd, pool_path)
        prompts = select_prompts(persona, rd, pool)
        write_jsonl(rd.prompts, prompts)

    done = {r["id"] for r in read_jsonl(rd.variants, tolerate_torn_tail=True)}
    todo_batches = [
        (b, prompts[lo : lo + gen.batch_size])
        for b, lo in enumerate(range(0, len(prompts), gen.batch_size))
        if any(p["id"] not in done for p in prompts[lo : lo + gen.batch_size])
    ]
    resumed = sum(p["id"] in done for p in prompts)
    if resumed:
        log.info("resuming: %d of %d prompts already have variants", resumed, len(prompts))

    specs = variant_specs(persona)
    systems = {s.system: system_prompt(persona, s.system) for s in specs}
    stats: dict[str, float] = {}
    written = 0
    cut_off = {spec.field: 0 for spec in specs}
    if todo_batches:
        mc = persona.config.model
        model, tokenizer = load_policy(mc.base, mc.sft_adapter, revision=mc.revision)
        progress = Progress(f"generate {persona.id}", len(prompts) - resumed, unit="prompts")
        with JsonlAppender(rd.variants) as out:
            for b, batch in todo_batches:
                responses = {}
                for v, spec in enumerate(specs):
                    conversations = [[{"role": "system", "content": systems[spec.system]}, {"role": "user", "content": p["prompt"]}] for p in batch]
                    responses[spec.field] = generate(
                        model, tokenizer, conversations,
                        temperature=spec.temperature, top_p=gen.top_p, max_new_tokens=gen.max_new_tokens,
                        batch_size=len(batch), seed=derive_seed(seed, b, v), label=f"batch {b} {spec.field}", stats=stats,
                    )
                for i, p in enumerate(batch):
                    if p["id"] in done:
                        continue
                    record = {"id": p["id"], "prompt": p["prompt"], "source": p.get("source", "pool")}
                    record.update({f"system_{kind}": text for kind, text in systems.items()})
                    record.update({field: out_i[i].text for field, out_i in responses.items()})
                    record.update({f"{field}_cut_off": out_i[i].cut_off for field, out_i in responses.items()})
                    for field, out_i in responses.items():
                        cut_off[field] += out_i[i].cut_off
                    out.write(record)
                    written += 1
                    progress.advance()

    seconds = stats.get("seconds", 0.0)
    summary = {
        "stage": "generate",
        "persona": persona.id,
        "model": persona.config.model.base,
        "sft_adapter": persona.config.model.sft_adapter,
        "prompts": len(prompts),
        "feedback_prompts": sum(p.get("source") == "feedback" for p in prompts),
        "seed": seed,
        **pool_info,
        "variants_written": written,
        # Answers of this run's new records that hit max_new_tokens; label drops pairs whose chosen one did.
        "cut_off": cut_off,
        "resumed": resumed,
        "new_tokens": int(stats.get("new_tokens", 0)),
        "generation_seconds": round(seconds, 2),
        "tokens_per_s": round(stats.get("new_tokens", 0) / seconds, 2) if seconds else None,
        "variants": str(rd.variants),
    }
    write_json(rd.stage_summary("generate"), summary)
    log.info("generate %s: %d prompts, %d variant records written, %d resumed", persona.id, len(prompts), written, resumed)
    return summary


def make_parser(command: str = "generate") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    parser.add_argument("--pool", default=None, help="prompt pool JSONL ({id, prompt} per line) instead of the shipped one")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    summary = run(persona_from_args(args), args.run_dir, pool_path=args.pool)
    print(
        f"generate: {summary['prompts']} prompts ({summary['feedback_prompts']} from feedback), "
        f"{summary['variants_written']} written, {summary['resumed']} resumed -> {summary['variants']}"
    )
    return 0
