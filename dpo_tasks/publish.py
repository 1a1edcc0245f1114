"""Stages `publish` and `rollback`: versioned adapters in the artifact store, and the `LATEST` pointer.

publish: stages the run's adapter with `config.yaml`, `metrics.json`,
`eval/summary.json`, the HTML report and a `model_card.json` (lineage: base
model, SFT adapter, sha256 of the prompt/labeled/DPO files, pair counts by
source, judge, win rate and interval, gate decision), writes `MANIFEST.json`
last, uploads the version (verified against the manifest) and then moves
`LATEST` to it, guarded so that a concurrent publish or rollback cannot be
silently overwritten. Refuses when `gate.json` says reject unless `--force`;
`--dry-run` uploads and verifies the version but leaves `LATEST` alone.
Writes `publish.json` in the run dir.

rollback: points `LATEST` back at the version served before the current one (from the
namespace's promotion history, `HISTORY.jsonl`), or `--to` a named version that was served
before; a version that was never served (a dry run, a gate-rejected or a superseded upload)
needs `--to VERSION --force`, and the history and `Store.model_card` record that it was forced.

The store comes from `--store` or `$PERSONA_DPO_STORE` (default `./store`); a
path is the local store, `gs://bucket/prefix` is GCS.

Usage:
    python -m dpo_tasks publish --persona persona_e_mexican_vegan --run-dir runs/demo [--dry-run] [--force]
    python -m dpo_tasks rollback --persona persona_e_mexican_vegan [--to v20261122T031500.123456Z-1a2b3c4d [--force]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from dpo_tasks.config import ConfigError, Persona
from dpo_tasks.gate import read_gate
from dpo_tasks.runs import RunDir, read_json, read_jsonl, sha256_file, write_json

log = logging.getLogger(__name__)


class PublishRefused(ConfigError):
    """The gate rejected this candidate (or its inputs are missing); nothing was published."""


def version_name(now: datetime, content_hash: str) -> str:
    """Sortable by time, unique by content: v20261122T031500.123456Z-1a2b3c4d.

    Microseconds, fixed width: two publishes within one second must still sort
    in the order they happened, or "roll back to the previous version" picks the wrong one.
    """
    return f"v{now.astimezone(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{content_hash[:8]}"


def _data_lineage(rd: RunDir) -> tuple[dict[str, str | None], dict[str, int]]:
    hashes = {p.name: (sha256_file(p) if p.exists() else None) for p in (rd.prompts, rd.labeled, rd.dpo)}
    by_source = Counter(str(row.get("source", "generated")) for row in read_jsonl(rd.labeled))
    return hashes, dict(sorted(by_source.items()))


def model_card(persona: Persona, rd: RunDir, *, run_id: str, created: datetime, forced: bool = False) -> dict[str, Any]:
    cfg = persona.config
    hashes, by_source = _data_lineage(rd)
    evals = read_json(rd.eval / "summary_stats.json") if (rd.eval / "summary_stats.json").exists() else {}
    gate = read_gate(rd.gate) or {}
    return {
        "persona": persona.id,
        "persona_name": persona.name,
        "run_id": run_id,
        "created": created.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "base_model": cfg.model.base,
        "base_model_revision": cfg.model.revision,
        "sft_adapter": cfg.model.sft_adapter,
        "data_sha256": hashes,
        "pairs_by_source": by_source,
        "labeling_judge": evals.get("label_judge") or cfg.labeling.judge,
        "evaluation_judge": evals.get("eval_judge") or evals.get("judge"),
        "evaluation": {
            "judge": evals.get("judge"),
            "same_judge": evals.get("same_judge"),
            "usable_rate": evals.get("usable_rate"),
            "truncation_rate": evals.get("truncation_rate"),
            "second_opinion": evals.get("second_opinion"),
            "failed": evals.get("failed"),
            "baseline": evals.get("baseline"),
            "n": evals.get("n"),
            "samples_per_case": evals.get("samples_per_case", 1),
            "effective_n": evals.get("effective_n"),
            "win_rate": evals.get("win_rate"),
            "ci_low": evals.get("ci_low"),
            "ci_high": evals.get("ci_high"),
        },
        "gate": {k: gate.get(k) for k in ("decision", "reason", "threshold")} | {"published_despite_gate": forced},
        "training": cfg.training.model_dump(mode="json"),
        # The run's own SFT before DPO (the adapter above then continues it): its data and settings.
        "sft_stage": _sft_stage(rd, persona),
    }


def _sft_stage(rd: RunDir, persona: Persona) -> dict[str, Any] | None:
    path = rd.stage_summary("sft")
    summary = read_json(path) if path.is_file() else {}
    if not summary or summary.get("skipped"):
        return None
    keep = ("examples", "skipped_examples", "labeled_pairs", "score_mean", "steps", "train_loss", "started_from", "data_sha256")
    return {k: summary.get(k) for k in keep} | {"settings": persona.config.sft.model_dump(mode="json")}


def stage_version(persona: Persona, rd: RunDir, dest: Path, *, run_id: str, created: datetime, forced: bool = False) -> dict[str, Any]:
    """Lay out a version in `dest` (empty dir) and write its manifest; returns the model card."""
    from dpo_tasks.store.manifest import write_manifest

    if not (rd.adapter / "adapter_config.json").is_file():
        raise PublishRefused(f"no trained adapter at {str(rd.adapter)!r}; run the train stage first")
    shutil.copytree(rd.adapter, dest / "adapter")
    if (rd.train / "config.yaml").is_file():
        shutil.copy2(rd.train / "config.yaml", dest / "config.yaml")
    else:
        (dest / "config.yaml").write_text(yaml.safe_dump(persona.config.model_dump(mode="json"), sort_keys=False))
    metrics = rd.train / "metrics.json"
    (dest / "metrics.json").write_text(metrics.read_text() if metrics.is_file() else "{}\n")
    (dest / "eval").mkdir()
    for src, name in ((rd.eval / "summary_stats.json", "summary.json"), (rd.eval / "evaluation_report.html", "evaluation_report.html")):
        if src.is_file():
            shutil.copy2(src, dest / "eval" / name)
    card = model_card(persona, rd, run_id=run_id, created=created, forced=forced)
    (dest / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_manifest(dest)
    return card


def run(
    persona: Persona,
    run_dir: str | Path | RunDir,
    *,
    store_uri: str | None = None,
    namespace: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    from dpo_tasks.store import open_store
    from dpo_tasks.store.base import move_latest
    from dpo_tasks.store.manifest import build_manifest
    from dpo_tasks.tracking import RunTracker

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    namespace = namespace or persona.id
    run_id = run_id or rd.root.resolve().name
    gate = read_gate(rd.gate)
    if gate is None and not force:
        raise PublishRefused(f"no gate decision at {str(rd.gate)!r}; run the gate stage first (or --force)")
    if gate is not None and gate.get("decision") != "promote" and not force:
        result = {"published": False, "persona": persona.id, "reason": f"gate rejected the candidate: {gate.get('reason')}"}
        write_json(rd.publish, result)
        raise PublishRefused(f"{result['reason']}; not publishing (use --force to publish anyway)")

    forced = gate is None or gate.get("decision") != "promote"
    store = open_store(store_uri)
    created = datetime.now(timezone.utc)
    previous = store.latest(namespace)
    with tempfile.TemporaryDirectory(prefix="persona-dpo-publish-") as tmp:
        staged = Path(tmp) / "version"
        staged.mkdir()
        card = stage_version(persona, rd, staged, run_id=run_id, created=created, forced=forced)
        # The content plus the exact time: republishing the same run within a second still gets a new name.
        digest = hashlib.sha256((json.dumps(build_manifest(staged), sort_keys=True) + created.isoformat()).encode()).hexdigest()
        version = version_name(created, digest)
        log.info("uploading %s/%s to %s", namespace, version, store.uri)
        uri = store.upload_version(namespace, version, staged)
        shutil.copy2(staged / "model_card.json", rd.root / "model_card.json")
    # Registered before LATEST moves, so the promotion hook finds the model version to alias.
    RunTracker(rd, persona=persona, namespace=namespace).register_version(namespace, version, uri)
    if dry_run:
        log.info("dry run: version %s uploaded and verified; LATEST stays at %r", version, previous)
    else:
        move_latest(store, namespace, version, expected_current=previous, action="publish", forced=forced,
                    reason=f"published despite the gate: {gate.get('reason') if gate else 'no gate decision'}" if forced else None)
        log.info("LATEST of %s: %r -> %r", namespace, previous, version)
    result = {
        "published": True,
        "persona": persona.id,
        "namespace": namespace,
        "store": store.uri,
        "version": version,
        "uri": uri,
        "latest_moved": not dry_run,
        "previous": previous,
        "dry_run": dry_run,
        "forced": forced,
        "win_rate": card["evaluation"]["win_rate"],
    }
    write_json(rd.publish, result)
    write_json(rd.stage_summary("publish"), result)
    RunTracker(rd, persona=persona, namespace=namespace).log_stage("publish")
    return result


def make_parser(command: str = "publish") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser, run_dir=command == "publish")
    parser.add_argument("--store", default=None, help="store URI: a directory or gs://bucket/prefix (default: $PERSONA_DPO_STORE or ./store)")
    parser.add_argument("--namespace", default=None, help="store namespace (default: the persona id; communities use policies/<communityId>)")
    if command == "publish":
        parser.add_argument("--force", action="store_true", help="publish even when the gate rejected the candidate")
        parser.add_argument("--dry-run", action="store_true", help="upload and verify the version but do not move LATEST")
        parser.add_argument("--run-id", default=None, help="recorded in the model card (default: the run dir's name)")
    else:
        parser.add_argument("--to", default=None, metavar="VERSION", help="a version served before (default: the one served before the current)")
        parser.add_argument("--force", action="store_true", help="with --to: serve a version that was never served (recorded in the history)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args
    from dpo_tasks.store import StoreError, open_store

    persona = persona_from_args(args)
    try:
        if args.command == "rollback":
            store = open_store(args.store)
            namespace = args.namespace or persona.id
            if args.force and not args.to:
                raise PublishRefused("rollback --force needs --to VERSION: forcing applies to a named version only")
            before = store.latest(namespace)
            to = store.rollback(namespace, args.to, force=args.force)
            print(f"rollback: LATEST of {namespace} in {store.uri}: {before} -> {to}")
            note = store.model_card(namespace, to)["serving"].get("note")
            if note:
                print(f"rollback: {to}: {note}", file=sys.stderr)
            return 0
        result = run(
            persona, args.run_dir, store_uri=args.store, namespace=args.namespace,
            force=args.force, dry_run=args.dry_run, run_id=args.run_id,
        )
    except PublishRefused as exc:
        print(f"publish refused: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    moved = "LATEST now points at it" if result["latest_moved"] else f"LATEST unchanged ({result['previous']}; dry run)"
    print(f"published {result['version']} to {result['uri']}; {moved}")
    return 0
