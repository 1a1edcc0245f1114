"""Check a DPO dataset, and write a small synthetic one.

    python -m dpo_tasks validate data.jsonl [--stats] [--max-chars 20000] [--max-tokens 512 --tokenizer BASE]
    python -m dpo_tasks toy-data --out toy.jsonl --size 50 [--persona ID] [--seed 0]

`validate` accepts JSONL (one record per line) or a JSON list, each record a
`{prompt, chosen, rejected}` object in plain text or ChatML, the shape a
community uploads and the shape `format` writes; other keys are kept. Every bad
record is printed with its line number (JSONL) or list index (JSON) and the
command exits 1 when any record is bad. `--stats` adds counts and length
statistics.

`validate_records(records)` is the same check for records already in memory
(the `dpo_custom` DAG's inline dataset): it returns the good records and the
problems, so a caller can skip bad rows and fail only when nothing is usable.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dpo_tasks import loaders
from dpo_tasks.config import DEFAULT_PERSONA, EMBEDDED_MODEL, Persona, load_persona

FIELDS = ("prompt", "chosen", "rejected")
DEFAULT_MAX_CHARS = 20_000
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
_CONTROL_TOKEN = re.compile(r"<\|(?:im_start|im_end|im_sep|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\|>")
_CHATML_MARK = re.compile(r"<\|im_(?:start|end)\|>(?:(?:system|user|assistant)\n)?")


@dataclass(frozen=True)
class Problem:
    where: str  # "line 3" (JSONL) or "item 2" (JSON list)
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ValidationResult:
    good: list[dict[str, Any]]
    problems: list[Problem]
    total: int
    # where each good record came from, for messages downstream
    good_where: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return len({p.where for p in self.problems})

    def summary(self) -> dict[str, Any]:
        return {"total": self.total, "good": len(self.good), "bad": self.bad,
                "problems": [str(p) for p in self.problems]}


def content(text: str) -> str:
    """The text without ChatML role markers, stripped: what "empty" and "identical" are judged on."""
    return _CHATML_MARK.sub("", text).strip()


def is_chatml(record: dict[str, Any]) -> bool:
    return any("<|im_start|>" in record[f] or "<|im_end|>" in record[f] for f in FIELDS)


def _check(record: Any, max_chars: int, count_tokens: Callable[[str], int] | None, max_tokens: int | None) -> list[str]:
    if not isinstance(record, dict):
        return [f"expected an object with {', '.join(FIELDS)}, got {type(record).__name__} {_short(record)}"]
    errors = []
    for f in FIELDS:
        if f not in record:
            errors.append(f"missing field {f!r}")
        elif not isinstance(record[f], str):
            errors.append(f"field {f!r} must be a string, got {type(record[f]).__name__} {_short(record[f])}")
        elif not content(record[f]):
            errors.append(f"field {f!r} is empty")
        elif len(record[f]) > max_chars:
            errors.append(f"field {f!r} is {len(record[f])} characters, over the limit of {max_chars}")
    for f in ("chosen", "rejected"):
        if f in record and isinstance(record[f], str):
            token = _control_token_inside(record[f])
            if token:
                errors.append(f"field {f!r} contains the chat control token {token!r} inside the completion "
                              "(only one end-of-turn token at its very end is allowed)")
    if errors:
        return errors
    if content(record["chosen"]) == content(record["rejected"]):
        errors.append("'chosen' and 'rejected' are identical")
    if count_tokens is not None and max_tokens is not None:
        for f in ("chosen", "rejected"):
            n = count_tokens(record["prompt"] + record[f])
            if n > max_tokens:
                errors.append(f"prompt + {f} is {n} tokens, over the limit of {max_tokens}")
    return errors


def _control_token_inside(text: str) -> str | None:
    """The first chat-template control token in a completion other than one trailing end-of-turn token.

    A completion that opens a new turn (`<|im_start|>user ...`) or closes one half way would
    teach the model to write the other side of the conversation.
    """
    body = text.rstrip()
    for eot in _END_OF_TURN:
        if body.endswith(eot):
            body = body[: -len(eot)]
            break
    m = _CONTROL_TOKEN.search(body)
    return m.group(0) if m else None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_records(
    records: Sequence[Any],
    *,
    where: Sequence[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> ValidationResult:
    """Check `{prompt, chosen, rejected}` records; bad ones are reported, not raised.

    `where` names each record in messages (default "item 0", "item 1", ...).
    A record identical to an earlier good one is reported as a duplicate of it.
    """
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"a dataset must be a list of {{prompt, chosen, rejected}} records, got {type(records).__name__} {_short(records)}")
    where = list(where) if where is not None else [f"item {i}" for i in range(len(records))]
    good, good_where, problems = [], [], []
    first_seen: dict[tuple[str, str, str], str] = {}
    for loc, record in zip(where, records):
        errors = _check(record, max_chars, count_tokens, max_tokens)
        if not errors:
            key = tuple(record[f] for f in FIELDS)
            if key in first_seen:
                errors = [f"duplicate of {first_seen[key]}"]
            else:
                first_seen[key] = loc
        if errors:
            problems += [Problem(loc, e) for e in errors]
        else:
            good.append(record)
            good_where.append(loc)
    return ValidationResult(good=good, problems=problems, total=len(records), good_where=good_where)


def load_records(path: str | Path) -> tuple[list[Any], list[str], list[Problem]]:
    """Records from a JSON list or a JSONL file, with where each came from; unparseable lines become problems.

    The file itself being unusable (a directory, not UTF-8 in a JSON list, too deep, ...)
    raises `InputFileError` naming it and the line.
    """
    path = loaders.check_regular_file(path, what="dataset file")
    with open(path, "rb") as fh:
        head = fh.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"["):
        text = loaders.read_text(path, what="dataset file")
        try:
            data = loaders.parse_json(text)
        except loaders.JSONProblem as exc:
            return [], [], [Problem(f"line {exc.line or 1}", str(exc))]
        return data, [f"item {i}" for i in range(len(data))], []
    records, where, problems = [], [], []
    for n, record in loaders.iter_jsonl(path, what="dataset file"):
        if isinstance(record, ValueError):
            problems.append(Problem(f"line {n}", str(record)))
        else:
            records.append(record)
            where.append(f"line {n}")
    if head.startswith(b"{") and problems and not records and problems[0].where == "line 1":
        # One object pretty-printed over several lines is a common mistake; say so.
        try:
            whole = loaders.parse_json(loaders.read_text(path, what="dataset file"))
        except ValueError:
            whole = None
        if isinstance(whole, dict):
            return [], [], [Problem("line 1", f"one JSON object with keys {loaders.brief(sorted(whole))} spread over several lines; "
                                              "expected a JSON list or JSONL (one record per line)")]
    return records, where, problems


def validate_file(path: str | Path, **limits: Any) -> ValidationResult:
    records, where, parse_problems = load_records(path)
    result = validate_records(records, where=where, **limits)
    result.problems = sorted(parse_problems + result.problems, key=lambda p: int(p.where.split()[-1]))
    result.total += len(parse_problems)
    return result


def stats(result: ValidationResult) -> dict[str, Any]:
    good = result.good
    out: dict[str, Any] = {
        "records": result.total,
        "good": len(good),
        "bad": result.bad,
        "chatml": sum(is_chatml(r) for r in good),
        "distinct_prompts": len({content(r["prompt"]) for r in good}),
    }
    for f in FIELDS:
        lengths = [len(content(r[f])) for r in good]
        if lengths:
            out[f"{f}_chars"] = {"min": min(lengths), "median": statistics.median(lengths),
                                 "mean": round(statistics.fmean(lengths), 1), "max": max(lengths)}
    return out


# Toy data: plausible recipe pairs where "chosen" keeps the persona's rules and
# "rejected" breaks them, so a DPO run on it has a signal to learn.
_DISHES = ("skillet", "bowl", "stew", "taco plate", "salad", "soup", "stir-fry", "traybake", "wrap", "skewer platter")
_TIMES = (15, 20, 25, 30, 40, 45)


def toy_records(persona: Persona, size: int, *, seed: int = 0) -> list[dict[str, str]]:
    """`size` distinct, valid records flavoured by `persona` (deterministic for a seed)."""
    if size < 1:
        raise ValueError(f"size={size!r} must be at least 1")
    rng = random.Random(seed)
    preferred = list(persona.preferred_ingredients)
    forbidden = [w for words in persona.forbidden.values() for w in words] or ["plain boiled", "unseasoned"]
    cuisine = persona.cuisines[0].title()
    records, seen = [], set()
    while len(records) < size:
        main, second, third = rng.sample(preferred, 3)
        dish, minutes = rng.choice(_DISHES), rng.choice(_TIMES)
        prompt = f"I have {main} and {second}. Suggest a {cuisine} {dish} ready in {minutes} minutes."
        if prompt in seen:
            # Few preferred ingredients: number the request to keep records distinct.
            prompt = f"{prompt} (idea {len(records) + 1})"
        seen.add(prompt)
        chosen = (
            f"{cuisine} {main} {dish}\n\nIngredients:\n- {main}\n- {second}\n- {third}\n\n"
            f"Steps:\n1. Prepare the {main} and {second}.\n2. Cook with {third} for {minutes - 5} minutes.\n"
            f"3. Taste, adjust and serve hot."
        )
        bad = rng.choice(forbidden)
        rejected = f"Just cook the {main} with some {bad} and {second} until done."
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def make_parser(command: str = "validate") -> argparse.ArgumentParser:
    if command == "toy-data":
        p = argparse.ArgumentParser(description="Write a small synthetic DPO dataset (JSONL, plain text).")
        p.add_argument("--out", required=True, help="output JSONL file")
        p.add_argument("--size", type=int, default=50, help="number of records (default: %(default)s)")
        p.add_argument("--persona", default=DEFAULT_PERSONA, help="persona whose ingredients flavour the data")
        p.add_argument("--personas-file", default=None)
        p.add_argument("--seed", type=int, default=0)
        return p
    p = argparse.ArgumentParser(description="Check a DPO dataset file (JSONL or a JSON list of {prompt, chosen, rejected}).")
    p.add_argument("file", help="the dataset file")
    p.add_argument("--stats", action="store_true", help="print counts and length statistics")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="longest allowed field (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=None, help="longest allowed prompt + response in tokens (needs a tokenizer)")
    p.add_argument("--tokenizer", default=EMBEDDED_MODEL, help="model id or path whose tokenizer counts tokens (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> int:
    if getattr(args, "command", "validate") == "toy-data":
        persona = load_persona(args.persona, args.personas_file)
        try:
            records = toy_records(persona, args.size, seed=args.seed)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        from dpo_tasks.runs import write_jsonl

        write_jsonl(args.out, records)
        print(f"wrote {len(records)} records to {args.out}")
        return 0
    count_tokens = None
    if args.max_tokens is not None:
        from dpo_tasks.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    result = validate_file(args.file, max_chars=args.max_chars, max_tokens=args.max_tokens, count_tokens=count_tokens)
    for problem in result.problems:
        print(f"{args.file}: {problem}")
    if args.stats:
        print(json.dumps(stats(result), indent=2))
    print(f"{args.file}: {result.total} records, {len(result.good)} good, {result.bad} bad")
    if not result.total:
        print(f"{args.file}: no records", file=sys.stderr)
    return 1 if result.problems or not result.total else 0
