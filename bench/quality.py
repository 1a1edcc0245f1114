"""Quality of the trained models, all personas: does DPO make answers better, by a judge that did not label?

For each persona, runs the whole pipeline (`python -m dpo_tasks run`, one subprocess
per persona, sequentially: the box has 2 cores) at the demo's settings (the
Makefile's DEMO_SETTINGS; `--full` for the personas.yaml defaults), with a store
of its own under the output directory and `--dry-run` (nothing moves a LATEST),
then prints one table from the run's summaries:

    pairs kept       labeled pairs kept for training (label)
    cut off          chosen answers dropped for hitting the token limit (label), and the share of
                     evaluation answers cut off, base / DPO (evaluate)
    usable           share of evaluation answers a cook could use (checklist judge), base / DPO
    win rate         DPO vs base by the evaluation judge, ties half, with the Wilson 95% interval
    rules            the rule judge's win rate on the same pairs (the labeling judge's view)
    agree            share of cases where the two judges give the same outcome

A field a run's summary lacks (an evaluation judge without usable-answer rates) prints as n/a.
Runs already in the output directory are resumed, not redone (`--fresh` starts over).

    python bench/quality.py                                 # all six personas, demo settings
    python bench/quality.py --personas persona_e_mexican_vegan --json quality.json
    python bench/quality.py --full                          # the personas.yaml defaults (hours on CPU)
    python bench/quality.py --personas persona_a_korean_spicy --set generation.num_prompts=4 ...   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JSON_FIELDS = ("persona", "win_rate", "ci_low", "ci_high", "usable_rate_base", "usable_rate_dpo", "eval_judge", "label_judge")


def demo_settings(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The `--set k=v` arguments of the Makefile's DEMO_SETTINGS: one definition of the demo's scale."""
    text = makefile.read_text()
    match = re.search(r"^DEMO_SETTINGS \?=((?:.*\\\n)*.*)$", text, flags=re.M)
    if not match:
        raise SystemExit(f"{makefile}: no DEMO_SETTINGS definition")
    return shlex.split(match.group(1).replace("\\\n", " "))


def merge_sets(base: list[str], extra: list[str]) -> list[str]:
    """`--set` arguments: `base` pairs, each replaced by an `extra` one with the same key (the CLI refuses a key twice)."""
    merged: dict[str, str] = {}
    for arg in [a for a in base if a != "--set"] + extra:
        merged[arg.split("=", 1)[0].strip()] = arg
    return [a for value in merged.values() for a in ("--set", value)]


def run_persona(persona: str, out: Path, settings: list[str], threads: int) -> tuple[float, int]:
    run_dir = out / persona
    cmd = [sys.executable, "-m", "dpo_tasks", "run", "--persona", persona, "--run-dir", str(run_dir),
           "--store", str(out / "store"), "--dry-run", *settings]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"== {persona}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    if done.returncode != 0:
        print(f"!! {persona}: the run exited with {done.returncode}; its row shows what it wrote", file=sys.stderr)
    return time.monotonic() - start, done.returncode


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def row_for(persona: str, run_dir: Path, seconds: float | None = None) -> dict[str, Any]:
    label = _read(run_dir / "summaries" / "label.json")
    ev = _read(run_dir / "eval" / "summary_stats.json")
    usable = ev.get("usable_rate") or {}
    cut = ev.get("truncation_rate") or {}
    second = ev.get("second_opinion") or {}
    return {
        "persona": persona,
        "win_rate": ev.get("win_rate"),
        "ci_low": ev.get("ci_low"),
        "ci_high": ev.get("ci_high"),
        "usable_rate_base": usable.get("baseline"),
        "usable_rate_dpo": usable.get("candidate"),
        "eval_judge": ev.get("eval_judge") or ev.get("judge"),
        "label_judge": ev.get("label_judge") or label.get("judge"),
        "n": ev.get("n"),
        "samples_per_case": ev.get("samples_per_case", 1),
        "cases_judged": ev.get("cases_judged"),
        "effective_n": ev.get("effective_n"),
        "failed": ev.get("failed"),
        "pairs_kept": label.get("kept"),
        "pairs_input": label.get("input_pairs"),
        "chosen_cut_off_dropped": (label.get("dropped") or {}).get("chosen_cut_off"),
        "truncation_base": cut.get("baseline"),
        "truncation_dpo": cut.get("candidate"),
        "rules_win_rate": second.get("win_rate"),
        "agreement": second.get("agreement"),
        "seconds": round(seconds, 1) if seconds is not None else None,
        "run_dir": str(run_dir),
    }


def _f(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'persona':<30} {'pairs kept':>10} {'cut off':>7} {'trunc base/DPO':>14} {'usable base/DPO':>15} "
            f"{'win rate [95% CI]':>22} {'rules':>5} {'agree':>5}  judges (eval / label)")
    lines = [head, "-" * len(head)]
    for r in rows:
        kept = f"{r['pairs_kept']}/{r['pairs_input']}" if r["pairs_kept"] is not None else "n/a"
        win = f"{_f(r['win_rate'], '.3f')} [{_f(r['ci_low'], '.3f')}-{_f(r['ci_high'], '.3f')}]"
        lines.append(
            f"{r['persona']:<30} {kept:>10} {_f(r['chosen_cut_off_dropped'], 'd'):>7} "
            f"{_f(r['truncation_base']) + '/' + _f(r['truncation_dpo']):>14} {_f(r['usable_rate_base']) + '/' + _f(r['usable_rate_dpo']):>15} "
            f"{win:>22} {_f(r['rules_win_rate']):>5} {_f(r['agreement']):>5}  {r['eval_judge']} / {r['label_judge']}"
        )
    above = sum(1 for r in rows if r["ci_low"] is not None and r["ci_low"] > 0.5)
    samples = rows[0].get("samples_per_case") or 1 if rows else 1
    each = (f"n={rows[0]['n'] if rows else 0} cases each" if samples == 1 else
            f"{samples} samples per case, n={rows[0]['n']} pairs from {rows[0].get('cases_judged')} cases, "
            f"effective n {rows[0].get('effective_n')} for the first")
    lines.append(f"lower bound above 0.5 for {above} of {len(rows)} personas (evaluation judge; {each})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from dpo_tasks.config import load_personas

    all_personas = sorted(load_personas().personas)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--personas", default=",".join(all_personas), help="comma-separated persona ids (default: all)")
    parser.add_argument("--full", action="store_true", help="the personas.yaml defaults instead of the demo's DEMO_SETTINGS")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="extra override, after the settings (repeatable)")
    parser.add_argument("--out", default="runs/quality", help="where the runs and their store go (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="delete the personas' earlier runs in --out first")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for each run (default 1; see the Makefile's DEMO_THREADS)")
    parser.add_argument("--json", dest="json_file", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    personas = [p.strip() for p in args.personas.split(",") if p.strip()]
    unknown = sorted(set(personas) - set(all_personas))
    if unknown:
        parser.error(f"unknown persona(s) {', '.join(map(repr, unknown))}; known: {', '.join(all_personas)}")
    settings = merge_sets([] if args.full else demo_settings(), args.sets)
    out = Path(args.out)
    rows = []
    failed = []
    for persona in personas:
        if args.fresh:
            shutil.rmtree(out / persona, ignore_errors=True)
        seconds, rc = run_persona(persona, out, settings, args.threads)
        rows.append(row_for(persona, out / persona, seconds))
        if rc:
            failed.append(persona)
    print()
    print(f"settings: {'personas.yaml defaults' if args.full else 'demo (Makefile DEMO_SETTINGS)'}"
          + (f" + {' '.join(args.sets)}" if args.sets else ""))
    print(table(rows))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"rows -> {args.json_file}")
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
