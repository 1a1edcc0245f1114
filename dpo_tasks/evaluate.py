"""Stage `evaluate`: the candidate adapter against a baseline on the persona's held-out cases.

Both models answer every evaluation case (`dpo_tasks/data/eval/<persona>.jsonl`)
with the serving system prompt, sampled at `evaluation.temperature` with the
same seeds (`evaluation.samples_per_case` k > 1: k answers per model and case, each
sample with its own seed, judged as k pairs; the interval then treats the case as
a cluster, `dpo_tasks.stats.clustered_win_rate`). The judge (`evaluation.judge`: checklist, rules or gemini) sees each
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
from dpo_tasks.stats import describe_judged

log = logging.getLogger(__name__)

STATUS_OUTCOME = {"a": "win", "b": "loss", "tie": "tie"}

# Seed offset between the samples of a case: far above any batch offset (the case count), so no two
# (batch, sample) pairs share a seed; sample 1 uses the seeds of samples_per_case=1 (its answers are reused).
SAMPLE_SEED_STRIDE = 100_003


def unit_id(case_id: str, sample: int, samples_per_case: int) -> str:
    """Id of one judged pair: the case id with one sample per case, else '<case id>#<sample from 1>'."""
    return case_id if samples_per_case == 1 else f"{case_id}#{sample + 1}"


def sample_units(cases: list[dict[str, Any]], samples_per_case: int) -> list[tuple[str, dict[str, Any], int]]:
    """(unit id, case, sample index) for every sample of every case, case by case."""
    return [(unit_id(c["id"], j, samples_per_case), c, j) for c in cases for j in range(samples_per_case)]


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
    """Answers of one model for every sample of every case, reusing `out` (responses.jsonl) and appending new batches.

    Returns (answers, cut_off) by unit id (`unit_id`); cut_off is None for answers cached before it was recorded.
    With `may_generate=False` every answer must already be in `out` (no model is loaded).
    """
    cfg = persona.config
    revision = cfg.model.revision
    model_id = {"base": base, "adapter": _adapter_fingerprint(Path(adapter)) if adapter else None}
    if revision:
        model_id["revision"] = revision
    batch = cfg.generation.batch_size
    k = cfg.evaluation.samples_per_case
    plan = []
    for sample in range(k):
        for start in range(0, len(cases), batch):
            chunk = cases[start:start + batch]
            # Per-batch seed from its position: a resumed run samples exactly what the first would have.
            sampling = {"temperature": cfg.evaluation.temperature, "top_p": cfg.generation.top_p,
                        "max_new_tokens": cfg.evaluation.max_new_tokens,
                        "seed": cfg.evaluation.seed + start + sample * SAMPLE_SEED_STRIDE}
            if sample:
                sampling["sample"] = sample
            convs = [_conversation(persona, c["prompt"]) for c in chunk]
            ids = [unit_id(c["id"], sample, k) for c in chunk]
            plan.append((ids, convs, sampling, [_answer_key(model_id, conv, sampling) for conv in convs]))
    total = len(cases) * k
    records = {r["key"]: r for r in read_jsonl(out, tolerate_torn_tail=True) if r.get("role") == role}
    cached = {key: r["response"] for key, r in records.items()}
    answers = {u: cached[key] for ids, _, _, keys in plan for u, key in zip(ids, keys) if key in cached}
    cut_off = {u: records[key].get("cut_off") for ids, _, _, keys in plan for u, key in zip(ids, keys) if key in cached}
    todo = [p for p in plan if not all(key in cached for key in p[3])]
    if not todo:
        log.info("evaluate: %s answers for %d cases (%d per case) reused from %s", role, len(cases), k, out)
        return answers, cut_off
    if not may_generate:
        raise ConfigError(
            f"evaluate --part judge: {sum(len(p[0]) for p in todo)} of {total} {role} answers are not in "
            f"{str(out)!r} (for these weights and sampling settings); run evaluate --part answers first"
        )
    from dpo_tasks.generate import generate
    from dpo_tasks.models import load_policy

    model, tokenizer = load_policy(base, adapter, revision=revision)
    progress = Progress(f"evaluate: {role} answers", sum(len(p[0]) for p in todo), unit="answers")
    try:
        with JsonlAppender(out) as sink:
            for ids, convs, sampling, keys in todo:
                outs = generate(model, tokenizer, convs, temperature=sampling["temperature"], top_p=sampling["top_p"],
                                max_new_tokens=sampling["max_new_tokens"], batch_size=batch, seed=sampling["seed"],
                                label=f"evaluate:{role}")
                for u, key, g in zip(ids, keys, outs):
                    sink.write({"key": key, "role": role, "id": u, "response": g.text, "cut_off": g.cut_off})
                    answers[u] = g.text
                    cut_off[u] = g.cut_off
                progress.advance(len(ids))
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


def _by_case(outcomes: dict[str, str], case_of: dict[str, str], keep: set[str] | None = None) -> dict[str, list[str]]:
    """Judged outcomes grouped by case (the cluster), optionally only the units in `keep`."""
    grouped: dict[str, list[str]] = {}
    for u, o in outcomes.items():
        if o != "failed" and (keep is None or u in keep):
            grouped.setdefault(case_of.get(u, u), []).append(o)
    return grouped


def _second_opinion(persona: Persona, items: list[PairItem], outcomes: dict[str, str], case_of: dict[str, str]) -> dict[str, Any] | None:
    """The rule judge on the same pairs, and how often it agrees with the evaluation judge."""
    from dpo_tasks.judges.rules import RuleJudge
    from dpo_tasks.stats import clustered_win_rate

    rules = {j.id: (STATUS_OUTCOME[j.winner] if j.winner is not None else "failed")
             for j in RuleJudge().judge_pairs(persona, items, both_orders=True)}
    both = [i for i in outcomes if outcomes[i] != "failed" and rules.get(i, "failed") != "failed"]
    agree = sum(outcomes[i] == rules[i] for i in both)
    return {
        "judge": "rules",
        **clustered_win_rate(_by_case(rules, case_of)).as_dict(),
        "agreement": round(agree / len(both), 4) if both else None,
        "agreement_n": len(both),
        "outcomes": rules,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(persona: Persona, details: list[dict[str, Any]], *, judge: str) -> dict[str, Any]:
    """Win rate over the judged pairs, clustered by case (`case_id`; a detail without one is its own case)."""
    from dpo_tasks.stats import clustered_win_rate

    judged = [d for d in details if d["outcome"] in ("win", "loss", "tie")]
    outcomes = {d["id"]: d["outcome"] for d in judged}
    case_of = {d["id"]: d.get("case_id", d["id"]) for d in details}
    overall = clustered_win_rate(_by_case(outcomes, case_of))
    per_category: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(d["category"] for d in details):
        in_cat = {d["id"] for d in judged if d["category"] == cat}
        per_category[cat] = clustered_win_rate(_by_case(outcomes, case_of, in_cat)).as_dict()
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
        # Distinct cases with at least one judged pair: what the gate's minimum counts.
        "cases_judged": overall.clusters,
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
    samples = cfg.evaluation.samples_per_case
    units = sample_units(cases, samples)
    case_of = {u: c["id"] for u, c, _ in units}
    items = [PairItem(id=u, prompt=c["prompt"], response_a=cand[u], response_b=base_answers[u]) for u, c, _ in units]
    progress = Progress("evaluate: judging", len(items), unit="pairs")
    try:
        judgements = {j.id: j for j in judge.judge_pairs(persona, items, both_orders=True, progress=progress)}
        accounting = judge.accounting()
    finally:
        if owns_judge and hasattr(judge, "close"):
            judge.close()

    checker = _checklist_view(judge, persona, cases, cut_texts)
    checked = {u: {role: checker.check(persona, c["prompt"], answers[u]).as_dict()
                   for role, answers in (("candidate", cand), ("baseline", base_answers))} for u, c, _ in units}
    outcomes = {u: STATUS_OUTCOME[judgements[u].winner] if judgements[u].winner is not None else "failed" for u, _, _ in units}
    second = _second_opinion(persona, items, outcomes, case_of) if judge.name != "rules" else None

    details = []
    for u, c, sample in units:
        j = judgements[u]
        details.append({
            "id": u,
            "case_id": c["id"],
            "sample": sample + 1,
            "category": c.get("category", "uncategorised"),
            "prompt": c["prompt"],
            "candidate_response": cand[u],
            "baseline_response": base_answers[u],
            "outcome": outcomes[u],
            "status": j.status,
            "scores_candidate": j.scores_a.as_dict() if j.scores_a else None,
            "scores_baseline": j.scores_b.as_dict() if j.scores_b else None,
            "margin": j.margin,
            "confidence": j.confidence,
            "reason": j.reason,
            "source": j.source,
            "verdicts": j.verdicts,
            "cut_off_candidate": cand_cut.get(u),
            "cut_off_baseline": base_cut.get(u),
            "checks_candidate": checked[u]["candidate"],
            "checks_baseline": checked[u]["baseline"],
            **({"second_opinion_outcome": second["outcomes"][u]} if second else {}),
        })
    summary = summarise(persona, details, judge=judge.name)
    label_judge = labeling_judge(persona, rd)
    summary |= {
        "eval_judge": judge.name,
        "label_judge": label_judge,
        "same_judge": judge.name == label_judge,
        "cases": len(cases),
        "samples_per_case": samples,
        "checklists_written": sum("checklist" in c for c in cases),
        "usable_rate": {role: round(sum(checked[u][role]["usable"] for u, _, _ in units) / len(units), 4)
                        for role in ("candidate", "baseline")},
        "second_opinion": {k: v for k, v in second.items() if k != "outcomes"} if second else None,
        # Share of answers that ran into evaluation.max_new_tokens (None: answers cached before it was recorded).
        "truncation_rate": {role: _truncation_rate(flags) for role, flags in cut.items()},
        "baseline": base_info,
        "candidate": {"kind": "candidate", "label": "DPO adapter", "base": cfg.model.base, "adapter": str(candidate_adapter)},
        "sampling": {"temperature": cfg.evaluation.temperature, "max_new_tokens": cfg.evaluation.max_new_tokens, "seed": cfg.evaluation.seed,
                     "samples_per_case": samples},
        "judge_accounting": accounting,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "report": str(rd.eval / "evaluation_report.html"),
    }
    write_json(rd.eval / "detailed_results.json", details)
    write_json(rd.eval / "summary_stats.json", summary)
    (rd.eval / "evaluation_report.html").write_text(render_report(summary, details), encoding="utf-8")
    write_json(rd.stage_summary("evaluate"), summary)
    log.info(
        "evaluate %s vs %s: win rate %.3f (95%% CI %.3f-%.3f) over %s by the %s judge (labels by %s): "
        "%d wins, %d ties, %d losses, %d not judged; usable answers %.0f%% candidate, %.0f%% baseline",
        persona.id, base_info["label"], summary["win_rate"], summary["ci_low"], summary["ci_high"],
        describe_judged(summary), summary["eval_judge"], summary["label_judge"], summary["wins"], summary["ties"], summary["losses"],
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
        f"over {describe_judged(s)} ({s['wins']} wins, {s['ties']} ties, {s['losses']} losses) by the {s['eval_judge']} judge "
        f"(labels by {s['label_judge']}); usable answers {s['usable_rate']['candidate']:.0%} candidate, "
        f"{s['usable_rate']['baseline']:.0%} baseline; report: {s['report']}"
    )
    return 0
