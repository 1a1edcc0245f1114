"""Groq labeling: throughput under a requests-per-minute limit, and API calls saved by the hard-constraint rule.

    python bench/labeling.py                       # ~1.5 min on a laptop once the variants exist
    python bench/labeling.py --rpm 120 --seconds 60 --variants runs/demo-persona_e_mexican_vegan/variants.jsonl

1. Throughput. A local server speaking Groq's chat-completions wire format
   enforces `--rpm` requests per sliding 60 s window (429 with `retry-after`
   above it) and answers in 0.2-0.6 s. The Groq labeler (real `groq` SDK, the
   package's limiter and retries, `requests_per_minute` = the limit) labels
   enough pairs to keep it busy for `--seconds`. Printed: requests accepted per
   minute as a fraction of the limit (goal >= 0.9), 429s received, failed
   items (goal 0).
2. Rule share. On the default persona's generated variants (`--variants`, else
   `runs/bench-labeling/<persona>-<n>/variants.jsonl`: `--prompts` prompts
   (default 16) generated once with the embedded model on the persona's
   defaults, then reused), the share of API calls the hard-constraint rule
   saves (a forbidden ingredient in exactly one variant decides the pair).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "dpo_tasks" / "judges")]

from dpo_tasks.config import DEFAULT_PERSONA, load_persona, with_overrides  # noqa: E402
from dpo_tasks.judges.base import PairItem  # noqa: E402
from dpo_tasks.judges.groq import GroqJudge  # noqa: E402
from dpo_tasks.runs import read_jsonl  # noqa: E402
from fake_servers import FakeLLMServer, Reply, default_judge  # noqa: E402


def latency_judge(req, attempt):
    # Deterministic 0.2-0.6 s "model time" per request.
    return Reply(text=default_judge(req).text, delay_s=0.2 + (int(req.digest[:4], 16) % 400) / 1000)


def throughput(persona, rpm: int, seconds: float, concurrency: int, workdir: Path) -> dict:
    n_items = max(1, int(rpm * seconds / 60 / 2))  # both orders: two requests per item
    items = [PairItem(f"t{i}", f"Request {i}: tacos with black beans?", f"Black bean tacos, version {i}, with avocado and lime.", f"Tacos {i}.")
             for i in range(n_items)]
    with FakeLLMServer("groq", latency_judge, rpm_limit=rpm, window_s=60.0) as srv:
        os.environ["GROQ_BASE_URL"] = srv.url
        p = with_overrides(persona, {"labeling": {"groq": {"requests_per_minute": rpm, "tokens_per_minute": 100_000_000,
                                                           "max_concurrency": concurrency, "hard_constraint_shortcut": False}}})
        judge = GroqJudge(p.config.labeling.groq, cache_dir=workdir / "throughput", api_key="gsk_bench")
        out = judge.judge_pairs(p, items)
        judge.close()
        accepted = [r.time for r in srv.requests if r.status == 200]
        limited = sum(r.status == 429 for r in srv.requests)
    span = max(accepted) - min(accepted)
    # n requests evenly spaced at the limit span (n - 1) intervals.
    achieved_rpm = (len(accepted) - 1) / span * 60 if span > 0 else float("nan")
    return {"items": n_items, "requests": len(accepted), "span_s": span, "achieved_rpm": achieved_rpm, "fraction": achieved_rpm / rpm,
            "rate_limited": limited, "failed": sum(j.status == "failed" for j in out), "invalid": sum(j.status == "invalid" for j in out)}


def default_variants(persona_id: str, prompts: int) -> Path:
    """The generate stage's variants on the persona's defaults (resumable, so a cut-short run continues)."""
    from dpo_tasks import generate

    persona = with_overrides(load_persona(persona_id), {"generation": {"num_prompts": prompts}})
    need = persona.config.generation.num_prompts
    run_dir = ROOT / "runs" / "bench-labeling" / f"{persona_id}-{need}"
    if len(read_jsonl(run_dir / "variants.jsonl", tolerate_torn_tail=True)) < need:
        print(f"generating {need} prompts x 2 variants for {persona_id} once with {persona.config.model.base} "
              f"(cached in {run_dir}; minutes on a CPU) ...", flush=True)
        generate.run(persona, run_dir)
    return run_dir / "variants.jsonl"


def rule_share(persona, variants: Path, workdir: Path) -> dict:
    rows = read_jsonl(variants)
    items = [PairItem(r["id"], r["prompt"], r["variant_a"], r["variant_b"]) for r in rows]
    with FakeLLMServer("groq") as srv:
        os.environ["GROQ_BASE_URL"] = srv.url
        p = with_overrides(persona, {"labeling": {"groq": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000,
                                                           "hard_constraint_shortcut": True}}})
        judge = GroqJudge(p.config.labeling.groq, cache_dir=workdir / "rules", api_key="gsk_bench")
        judge.judge_pairs(p, items)
        judge.close()
    a = judge.accounting()
    needed = a["calls_made"] + a["calls_saved_rule"]
    return {"pairs": len(items), "decided_by_rule": a["calls_saved_rule"] // 2, "calls_saved": a["calls_saved_rule"],
            "calls_needed_without_rule": needed, "share": a["calls_saved_rule"] / needed if needed else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persona", default=DEFAULT_PERSONA)
    ap.add_argument("--rpm", type=int, default=300, help="the server's requests-per-minute limit (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=75, help="work for about this long at the limit (default %(default)s)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--variants", type=Path, default=None, help="variants.jsonl of a generate run (default: generated once)")
    ap.add_argument("--prompts", type=int, default=16,
                    help="prompts to generate when --variants is not given (default %(default)s keeps the first run short; "
                         "the pipeline default is 60)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-labeling" / "work")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)  # a warm verdict cache would make the run free
    persona = load_persona(args.persona)

    t = throughput(persona, args.rpm, args.seconds, args.concurrency, args.workdir)
    print(f"throughput: {t['requests']} requests accepted in {t['span_s']:.1f} s = {t['achieved_rpm']:.1f}/min "
          f"against a limit of {args.rpm}/min -> {t['fraction']:.3f} of the limit (goal >= 0.9); "
          f"429s received {t['rate_limited']}; items {t['items']}, failed {t['failed']} (goal 0), invalid {t['invalid']}")

    variants = args.variants or default_variants(args.persona, args.prompts)
    r = rule_share(persona, variants, args.workdir)
    print(f"hard-constraint rule on {args.persona} ({variants}): {r['decided_by_rule']}/{r['pairs']} pairs decided without the API, "
          f"{r['calls_saved']}/{r['calls_needed_without_rule']} calls saved = {r['share']:.3f} of calls")
    return 0 if t["fraction"] >= 0.9 and t["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
