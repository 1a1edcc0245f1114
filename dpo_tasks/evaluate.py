"""Stage `evaluate`: the candidate adapter against a baseline on the persona's held-out cases.

Both models answer every evaluation case (`dpo_tasks/data/eval/<persona>.jsonl`)
with the serving system prompt, sampled at `evaluation.temperature` with the
same seeds. The judge (`evaluation.judge`: checklist, rules or gemini) sees each
pair in both orders; a win counts only when both orders agree, anything else is a
tie. Win rate counts ties as half, with a Wilson 95% interval (`dpo_tasks.stats`).

The default judge, `checklist`, checks each answer against its case's written
expectations and is independent of the labeling judge. Whatever the judge, the
checklist judge also reports each model's usable-answer rate (every check
passed), and when the evaluation judge is not the rule judge the rule judge's
verdicts are kept as a second opinion with the agreement rate. The summary names
the labeling judge and the evaluation judge (`same_judge` when they are one:
the gate then refuses unless `gate.allow_same_judge`).

Baselines (`--baseline`):
    base     the base model with `model.sft_adapter` when set (what DPO started from)
    latest   the persona's published LATEST version from the store, downloaded into
             a cache keyed by version; the base model when nothing is published (said so
             in the summary)
    PATH     an adapter directory, or a version directory holding `adapter/`

Outputs in `<run_dir>/eval/`:
    responses.jsonl          every generated answer, appended as batches finish (a rerun
                             reuses them: keyed by model weights, prompt and sampling settings)
    detailed_results.json    per case: both answers, per-criterion scores, outcome, verdicts
    summary_stats.json       judge, n, wins, losses, ties, win_rate, ci_low, ci_high,
                             per_category, criteria_means, confidence, baseline, candidate,
                             eval_judge, label_judge, same_judge, usable_rate, second_opinion,
                             failed, failed_cases, judged_fraction, checklists_written,
                             truncation_rate (per model: answers that hit max_new_tokens), ...
    evaluation_report.html   offline HTML report with charts (dpo_tasks.report)

`--part answers` only generates the answers (needs the models: the GPU pod with the kubernetes
runner) and `--part judge` only judges answers already in `responses.jsonl` (no model is loaded:
the Airflow worker); `--part all`, the default, does both.

Usage:
    python -m dpo_tasks evaluate --persona persona_e_mexican_vegan --run-dir runs/demo [--baseline latest] [--part all]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.judges.base import CRITERIA, Judge, PairItem
from dpo_tasks.runs import JsonlAppender, Progress, RunDir, read_json, read_jsonl, sha256_file, write_json

log = logging.getLogger(__name__)

STATUS_OUTCOME = {"a": "win", "b": "loss", "tie": "tie"}


def _adapter_fingerprint(adapter: Path | None) -> str | None:
    """Content hash of an adapter's files, so cached answers never outlive the weights that wrote them."""
    if adapter is None:
        return None
    h = hashlib.sha256()
    for p in sorted(Path(adapter).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(adapter).as_posix().encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def resolve_baseline(persona: Persona, baseline: str, *, store_uri: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """-> {kind, label, base, adapter (path or None), version, note}."""
    from dpo_tasks.models import resolve_adapter

    # A gs:// SFT adapter is pulled (small files, no model loaded): its answers are keyed by its content.
    base, sft = persona.config.model.base, resolve_adapter(persona.config.model.sft_adapter)
    as_base = {"kind": "base", "label": "base model" + (" + SFT adapter" if sft else ""), "base": base, "adapter": sft, "version": None, "note": ""}
    if baseline == "base":
        return as_base
    if baseline == "latest":
        from dpo_tasks.models import cache_dir
        from dpo_tasks.store import open_store

        store = open_store(store_uri)
        namespace = namespace or persona.id
        version = store.latest(namespace)
        if version is None:
            note = f"no version of {namespace!r} is published in {store.uri!r} yet; compared against the base model instead"
            log.warning("baseline latest: %s", note)
            return as_base | {"requested": "latest", "note": note}
        local = store.download(namespace, version, cache_dir() / "store" / namespace / version)
        return {"kind": "latest", "label": f"published {version}", "base": base, "adapter": str(local / "adapter"),
                "version": version, "store": store.uri, "note": ""}
    path = Path(baseline)
    if (path / "adapter_config.json").is_file():
        return {"kind": "path", "label": str(path), "base": base, "adapter": str(path), "version": None, "note": ""}
    if (path / "adapter" / "adapter_config.json").is_file():
        return {"kind": "path", "label": str(path), "base": base, "adapter": str(path / "adapter"), "version": path.name, "note": ""}
    raise ConfigError(
        f"--baseline {baseline!r} is not 'base', 'latest' or a directory holding a LoRA adapter "
        "(adapter_config.json, or adapter/adapter_config.json)"
    )


def _conversation(persona: Persona, prompt: str) -> list[dict[str, str]]:
    from dpo_tasks.prompts import system_prompt

    return [{"role": "system", "content": system_prompt(persona, "serving")}, {"role": "user", "content": prompt}]


def _answer_key(model_id: dict[str, Any], conversation: list[dict[str, str]], sampling: dict[str, Any]) -> str:
    blob = json.dumps({"model": model_id, "conversation": conversation, "sampling": sampling}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def generate_answers(
    persona: Persona, cases: list[dict[str, Any]], *, role: str, base: str, adapter: str | None, out: Path,
    may_generate: bool = True,
) -> tuple[dict[str, str], dict[str, bool | None]]:
    """Answers of one model for every case, reusing `out` (responses.jsonl) and appending new batches.

    Returns (answers, cut_off) by case id; cut_off is None for answers cached before it was recorded.
    With `may_generate=False` every answer must already be in `out` (no model is loaded).
    """
    cfg = persona.config
    revision = cfg.model.revision
    model_id = {"base": base, "adapter": _adapter_fingerprint(Path(adapter)) if adapter else None}
    if revision:
        model_id["revision"] = revision
    batch = cfg.generation.batch_size
    plan = []
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        # Per-batch seed from its position: a resumed run samples exactly what the first would have.
        sampling = {"temperature": cfg.evaluation.temperature, "top_p": cfg.generation.top_p,
                    "max_new_tokens": cfg.evaluation.max_new_tokens, "seed": cfg.evaluation.seed + start}
        convs = [_conversation(persona, c["prompt"]) for c in chunk]
        plan.append((chunk, convs, sampling, [_answer_key(model_id, conv, sampling) for conv in convs]))
    records = {r["key"]: r for r in read_jsonl(out, tolerate_torn_tail=True) if r.get("role") == role}
    cached = {k: r["response"] for k, r in records.items()}
    answers = {c["id"]: cached[k] for chunk, _, _, keys in plan for c, k in zip(chunk, keys) if k in cached}
    cut_off = {c["id"]: records[k].get("cut_off") for chunk, _, _, keys in plan for c, k in zip(chunk, keys) if k in cached}
    todo = [p for p in plan if not all(k in cached for k in p[3])]
    if not todo:
        log.info("evaluate: %s answers for %d cases reused from %s", role, len(cases), out)
        return answers, cut_off
    if not may_generate:
        raise ConfigError(
            f"evaluate --part judge: {sum(len(p[0]) for p in todo)} of {len(cases)} {role} answers are not in "
            f"{str(out)!r} (for these weights and sampling settings); run evaluate --part answers first"
        )
    from dpo_tasks.generate import generate
    from dpo_tasks.models import load_policy

    model, tokenizer = load_policy(base, adapter, revision=revision)
    progress = Progress(f"evaluate: {role} answers", sum(len(p[0]) for p in todo), unit="answers")
    try:
        with JsonlAppender(out) as sink:
            for chunk, convs, sampling, keys in todo:
                outs = generate(model, tokenizer, convs, temperature=sampling["temperature"], top_p=sampling["top_p"],
                                max_new_tokens=sampling["max_new_tokens"], batch_size=batch, seed=sampling["seed"],
                                label=f"evaluate:{role}")
                for case, key, g in zip(chunk, keys, outs):
                    sink.write({"key": key, "role": role, "id": case["id"], "response": g.text, "cut_off": g.cut_off})
                    answers[case["id"]] = g.text
                    cut_off[case["id"]] = g.cut_off
                progress.advance(len(chunk))
    finally:
        del model
    return answers, cut_off


def make_eval_judge(persona: Persona, rd: RunDir, cases: list[dict[str, Any]] | None = None, cut_off: list[str] = ()) -> Judge:
    from dpo_tasks.judges import make_judge
    from dpo_tasks.label import judge_options

    kind = persona.config.evaluation.judge
    options = judge_options(kind, rd)
    if kind == "checklist":
        if cases is not None:
            options["cases"] = cases
        options["cut_off"] = cut_off
    return make_judge(kind, persona, **options)


def labeling_judge(persona: Persona, rd: RunDir) -> str:
    """The judge that labeled this run's pairs: the label stage's record, else the config."""
    path = rd.stage_summary("label")
    if path.exists():
        try:
            recorded = read_json(path).get("judge")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            return recorded
    return persona.config.labeling.judge


def _checklist_view(judge: Judge, persona: Persona, cases: list[dict[str, Any]], cut_off: list[str]) -> Any:
    """The checklist judge that measures usable answers: the evaluation judge when it is one."""
    from dpo_tasks.judges.checklist import ChecklistJudge

    return judge if isinstance(judge, ChecklistJudge) else ChecklistJudge(cases=cases, cut_off=cut_off)


def _truncation_rate(flags: dict[str, bool | None]) -> float | None:
    known = [f for f in flags.values() if f is not None]
    return round(sum(known) / len(known), 4) if known else None


def _second_opinion(persona: Persona, items: list[PairItem], outcomes: dict[str, str]) -> dict[str, Any] | None:
    """The rule judge on the same pairs, and how often it agrees with the evaluation judge."""
    from dpo_tasks.judges.rules import RuleJudge
    from dpo_tasks.stats import win_rate

    rules = {j.id: (STATUS_OUTCOME[j.winner] if j.winner is not None else "failed")
             for j in RuleJudge().judge_pairs(persona, items, both_orders=True)}
    both = [i for i in outcomes if outcomes[i] != "failed" and rules.get(i, "failed") != "failed"]
    agree = sum(outcomes[i] == rules[i] for i in both)
    return {
        "judge": "rules",
        **win_rate(rules[i] for i in rules if rules[i] != "failed").as_dict(),
        "agreement": round(agree / len(both), 4) if both else None,
        "agreement_n": len(both),
        "outcomes": rules,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(persona: Persona, details: list[dict[str, Any]], *, judge: str) -> dict[str, Any]:
    from dpo_tasks.stats import win_rate

    judged = [d for d in details if d["outcome"] in ("win", "loss", "tie")]
    overall = win_rate(d["outcome"] for d in judged)
    per_category: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(d["category"] for d in details):
        per_category[cat] = win_rate(d["outcome"] for d in judged if d["category"] == cat).as_dict()
    criteria_means = {
        model: {c: _mean([d[f"scores_{model}"][c] for d in judged if d.get(f"scores_{model}")]) for c in CRITERIA}
        for model in ("candidate", "baseline")
    }
    return {
        "persona": persona.id,
        "judge": judge,
        **overall.as_dict(),
        "failed": len(details) - len(judged),
        "failed_cases": [d["id"] for d in details if d["outcome"] not in ("win", "loss", "tie")],
        "judged_fraction": round(len(judged) / len(details), 4) if details else 0.0,
        "disagreements": sum(1 for d in details if d["status"] == "disagree"),
        "per_category": per_category,
        "criteria_means": criteria_means,
        "confidence": dict(Counter(d["confidence"] for d in judged if d.get("confidence"))),
    }


def run(
    persona: Persona,
    run_dir: str | Path | RunDir,
    *,
    baseline: str = "base",
    candidate: str | Path | None = None,
    store_uri: str | None = None,
    namespace: str | None = None,
    judge: Judge | None = None,
    part: str = "all",
) -> dict[str, Any]:
    from dpo_tasks.prompts import load_eval_cases

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg = persona.config
    candidate_adapter = Path(candidate) if candidate else rd.adapter
    if not (candidate_adapter / "adapter_config.json").is_file():
        raise ConfigError(f"no candidate adapter at {str(candidate_adapter)!r}; run the train stage first or pass --candidate")
    cases = load_eval_cases(persona.id)
    if not cases:
        raise ConfigError(f"persona {persona.id!r} has no evaluation cases")
    base_info = resolve_baseline(persona, baseline, store_uri=store_uri, namespace=namespace)
    responses = rd.eval / "responses.jsonl"
    may_generate = part != "judge"
    cand, cand_cut = generate_answers(persona, cases, role="candidate", base=cfg.model.base, adapter=str(candidate_adapter),
                                      out=responses, may_generate=may_generate)
    base_answers, base_cut = generate_answers(persona, cases, role="baseline", base=base_info["base"], adapter=base_info["adapter"],
                                              out=responses, may_generate=may_generate)
    if part == "answers":
        summary = {"persona": persona.id, "cases": len(cases), "responses": str(responses), "baseline": base_info["label"]}
        write_json(rd.stage_summary("evaluate_answers"), summary)
        log.info("evaluate: answers of both models to %d cases in %s", len(cases), responses)
        return summary
    from dpo_tasks.report import render_report

    cut = {"candidate": cand_cut, "baseline": base_cut}
    cut_texts = [text for answers, flags in ((cand, cand_cut), (base_answers, base_cut)) for i, text in answers.items() if flags.get(i)]

    owns_judge = judge is None
    judge = judge or make_eval_judge(persona, rd, cases, cut_off=cut_texts)
    items = [PairItem(id=c["id"], prompt=c["prompt"], response_a=cand[c["id"]], response_b=base_answers[c["id"]]) for c in cases]
    progress = Progress("evaluate: judging", len(items), unit="pairs")
    try:
        judgements = {j.id: j for j in judge.judge_pairs(persona, items, both_orders=True, progress=progress)}
        accounting = judge.accounting()
    finally:
        if owns_judge and hasattr(judge, "close"):
            judge.close()

    checker = _checklist_view(judge, persona, cases, cut_texts)
    checked = {c["id"]: {role: checker.check(persona, c["prompt"], answers[c["id"]]).as_dict()
                         for role, answers in (("candidate", cand), ("baseline", base_answers))} for c in cases}
    outcomes = {c["id"]: STATUS_OUTCOME[judgements[c["id"]].winner] if judgements[c["id"]].winner is not None else "failed"
                for c in cases}
    second = _second_opinion(persona, items, outcomes) if judge.name != "rules" else None

    details = []
    for c in cases:
        j = judgements[c["id"]]
        details.append({
            "id": c["id"],
            "category": c.get("category", "uncategorised"),
            "prompt": c["prompt"],
            "candidate_response": cand[c["id"]],
            "baseline_response": base_answers[c["id"]],
            "outcome": outcomes[c["id"]],
            "status": j.status,
            "scores_candidate": j.scores_a.as_dict() if j.scores_a else None,
            "scores_baseline": j.scores_b.as_dict() if j.scores_b else None,
            "margin": j.margin,
            "confidence": j.confidence,
            "reason": j.reason,
            "source": j.source,
            "verdicts": j.verdicts,
            "cut_off_candidate": cand_cut.get(c["id"]),
            "cut_off_baseline": base_cut.get(c["id"]),
            "checks_candidate": checked[c["id"]]["candidate"],
            "checks_baseline": checked[c["id"]]["baseline"],
            **({"second_opinion_outcome": second["outcomes"][c["id"]]} if second else {}),
        })
    summary = summarise(persona, details, judge=judge.name)
    label_judge = labeling_judge(persona, rd)
    summary |= {
        "eval_judge": judge.name,
        "label_judge": label_judge,
        "same_judge": judge.name == label_judge,
        "cases": len(cases),
        "checklists_written": sum("checklist" in c for c in cases),
        "usable_rate": {role: round(sum(checked[c["id"]][role]["usable"] for c in cases) / len(cases), 4)
                        for role in ("candidate", "baseline")},
        "second_opinion": {k: v for k, v in second.items() if k != "outcomes"} if second else None,
        # Share of answers that ran into evaluation.max_new_tokens (None: answers cached before it was recorded).
        "truncation_rate": {role: _truncation_rate(flags) for role, flags in cut.items()},
        "baseline": base_info,
        "candidate": {"kind": "candidate", "label": "DPO adapter", "base": cfg.model.base, "adapter": str(candidate_adapter)},
        "sampling": {"temperature": cfg.evaluation.temperature, "max_new_tokens": cfg.evaluation.max_new_tokens, "seed": cfg.evaluation.seed},
        "judge_accounting": accounting,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "report": str(rd.eval / "evaluation_report.html"),
    }
    write_json(rd.eval / "detailed_results.json", details)
    write_json(rd.eval / "summary_stats.json", summary)
    (rd.eval / "evaluation_report.html").write_text(render_report(summary, details), encoding="utf-8")
    write_json(rd.stage_summary("evaluate"), summary)
    log.info(
        "evaluate %s vs %s: win rate %.3f (95%% CI %.3f-%.3f) over %d cases by the %s judge (labels by %s): "
        "%d wins, %d ties, %d losses, %d not judged; usable answers %.0f%% candidate, %.0f%% baseline",
        persona.id, base_info["label"], summary["win_rate"], summary["ci_low"], summary["ci_high"],
        summary["n"], summary["eval_judge"], summary["label_judge"], summary["wins"], summary["ties"], summary["losses"],
        summary["failed"], 100 * summary["usable_rate"]["candidate"], 100 * summary["usable_rate"]["baseline"],
    )
    return summary


def make_parser(command: str = "evaluate") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser)
    parser.add_argument("--baseline", default="base", help="base, latest, or an adapter/version directory (default: %(default)s)")
    parser.add_argument("--candidate", default=None, help="candidate adapter dir (default: RUN_DIR/train/adapter)")
    parser.add_argument("--store", default=None, help="store URI for --baseline latest (default: $PERSONA_DPO_STORE or ./store)")
    parser.add_argument("--namespace", default=None, help="store namespace for --baseline latest (default: the persona id)")
    parser.add_argument("--part", choices=("all", "answers", "judge"), default="all",
                        help="answers: generate only; judge: judge the stored answers only, loading no model (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args

    s = run(persona_from_args(args), args.run_dir, baseline=args.baseline, candidate=args.candidate,
            store_uri=args.store, namespace=args.namespace, part=args.part)
    if args.part == "answers":
        print(f"evaluate: answers of the candidate and {s['baseline']} to {s['cases']} cases in {s['responses']}")
        return 0
    print(
        f"evaluate: win rate {s['win_rate']:.3f} (95% CI {s['ci_low']:.3f}-{s['ci_high']:.3f}) vs {s['baseline']['label']} "
        f"over {s['n']} cases ({s['wins']} wins, {s['ties']} ties, {s['losses']} losses) by the {s['eval_judge']} judge "
        f"(labels by {s['label_judge']}); usable answers {s['usable_rate']['candidate']:.0%} candidate, "
        f"{s['usable_rate']['baseline']:.0%} baseline; report: {s['report']}"
    )
    return 0
