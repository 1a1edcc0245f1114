"""Data lineage with DVC: `params.yaml` for the DVC pipeline, and dataset versions pushed to a DVC remote.

`dvc-params` derives `params.yaml` (what `dvc.yaml`'s `foreach` iterates over
and what each stage's `params:` track) from personas.yaml: one entry per
persona with its profile and its effective pipeline settings, so editing a
persona's overrides reruns exactly the stages that read them.

`version-data` versions a run's datasets (prompt sample, labeled pairs, DPO
set, feedback exports) with DVC and pushes them to the DVC remote
(`--remote`, `$PERSONA_DPO_DVC_REMOTE`, default `./dvc-remote`; `gs://bucket/dvc`
in production). Each run directory is its own small DVC project (`dvc init
--no-scm`), so parallel persona runs never wait on, or fail on, a shared
repository lock; the remote is content-addressed, so they share it safely and
identical data is stored once. It writes `data_versions.json` (per file: DVC
md5, sha256, size, remote), which is what ties a published model's card to the
exact data that trained it. Reruns only push what the remote lacks.

Usage:
    python -m dpo_tasks dvc-params                 # rewrite params.yaml from personas.yaml
    python -m dpo_tasks dvc-params --check         # exit 1 when params.yaml is stale
    python -m dpo_tasks version-data --persona persona_e_mexican_vegan --run-dir runs/demo
    cd runs/demo && dvc pull                       # later: the exact datasets back from the remote
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from dpo_tasks.config import ConfigError, load_personas_lenient
from dpo_tasks.runs import RunDir, sha256_file, write_json

log = logging.getLogger(__name__)

PARAMS_HEADER = (
    "# Generated from personas.yaml by `python -m dpo_tasks dvc-params`; do not edit by hand.\n"
    "# dvc.yaml iterates over `personas` and each stage tracks the sections it reads.\n"
)
PROFILE_FIELDS = ("name", "description", "cuisines", "dietary_restrictions", "forbidden", "allowed", "preferred_ingredients", "style_keywords")
# The sections a DVC run reads; schedule and feedback only drive Airflow.
PIPELINE_SECTIONS = ("model", "generation", "labeling", "sft", "training", "evaluation", "gate")
DATA_VERSIONS = "data_versions.json"
DVC_REMOTE_NAME = "store"


def build_params(personas_file: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(params, errors): params for every valid persona; a bad persona is reported, not fatal."""
    loaded = load_personas_lenient(personas_file)
    personas = {}
    for pid, persona in loaded.personas.items():
        config = persona.config.model_dump(mode="json")
        entry: dict[str, Any] = {"profile": persona.model_dump(mode="json", include=set(PROFILE_FIELDS))}
        entry.update({section: config[section] for section in PIPELINE_SECTIONS})
        personas[pid] = entry
    return {"personas_file": str(personas_file or "personas.yaml"), "personas": personas}, loaded.errors


def render_params(params: dict[str, Any]) -> str:
    return PARAMS_HEADER + yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=120)


def dataset_files(rd: RunDir) -> list[Path]:
    """The run's datasets that exist, in pipeline order."""
    return [p for p in (rd.feedback_prompts, rd.feedback_pairs, rd.prompts, rd.labeled, rd.dpo) if p.is_file()]


def _remote_url(remote: str | None) -> str:
    remote = remote or os.environ.get("PERSONA_DPO_DVC_REMOTE") or "dvc-remote"
    if "://" in remote:
        return remote
    return str(Path(remote).expanduser().resolve())


def version_data(persona_id: str, run_dir: str | os.PathLike[str] | RunDir, *, remote: str | None = None) -> dict[str, Any]:
    """`dvc add` the run's datasets in the run's own DVC project and `dvc push` them; returns the summary."""
    from dvc.repo import Repo

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    files = dataset_files(rd)
    if not files:
        raise ConfigError(f"no dataset in run dir {str(rd.root)!r} to version (expected prompts.jsonl, labeled.jsonl or dpo.jsonl)")
    url = _remote_url(remote)
    root = str(rd.root.resolve())
    if not (rd.root / ".dvc").is_dir():
        Repo.init(root, no_scm=True)
    with Repo(root) as repo:
        with repo.config.edit("repo") as conf:
            conf["core"]["remote"] = DVC_REMOTE_NAME
            conf["core"]["analytics"] = False
            conf["remote"][DVC_REMOTE_NAME] = {"url": url}
    # A fresh Repo reads the remote just configured.
    with Repo(root) as repo:
        repo.add([str(p.resolve()) for p in files])
        pushed = repo.push(remote=DVC_REMOTE_NAME)
    versions = {}
    for path in files:
        out = yaml.safe_load((path.parent / f"{path.name}.dvc").read_text())["outs"][0]
        versions[path.name] = {"md5": out["md5"], "size": out["size"], "sha256": sha256_file(path), "dvc_file": f"{path.name}.dvc"}
    summary = {"persona": persona_id, "remote": url, "files": versions, "pushed_objects": pushed}
    write_json(rd.root / DATA_VERSIONS, summary)
    write_json(rd.stage_summary("version-data"), summary)
    log.info("versioned %d datasets of %s in %s (%d new objects pushed)", len(versions), persona_id, url, pushed)
    return summary


def make_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    if command == "dvc-params":
        parser.add_argument("--personas-file", default=None, help="personas.yaml path (default: the package's, or $PERSONA_DPO_PERSONAS)")
        parser.add_argument("--output", default="params.yaml", help="where to write (default: %(default)s)")
        parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when OUTPUT differs from what personas.yaml gives")
    else:
        from dpo_tasks.cli import add_persona_args

        add_persona_args(parser)
        parser.add_argument("--remote", default=None, help="DVC remote URL or dir (default: $PERSONA_DPO_DVC_REMOTE or ./dvc-remote)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.command == "version-data":
        from dpo_tasks.cli import persona_from_args

        persona = persona_from_args(args)
        summary = version_data(persona.id, args.run_dir, remote=args.remote)
        print(f"version-data: {len(summary['files'])} datasets of {persona.id} in {summary['remote']} ({summary['pushed_objects']} new objects)")
        return 0
    params, errors = build_params(args.personas_file)
    for message in errors.values():
        print(f"error: skipped a persona: {message}", file=sys.stderr)
    text = render_params(params)
    output = Path(args.output)
    if args.check:
        if not output.is_file() or output.read_text() != text:
            print(f"{args.output} is out of date with {params['personas_file']}; run: python -m dpo_tasks dvc-params", file=sys.stderr)
            return 1
        return 1 if errors else 0
    output.write_text(text)
    print(f"dvc-params: wrote {len(params['personas'])} personas to {args.output}")
    return 1 if errors else 0
