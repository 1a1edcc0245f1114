"""`pod-spec`: print the pod a model stage would create, as Kubernetes YAML, without a cluster.

What reviewers and policy tools (kubernetes-validate, checkov, OPA) read. The pod is built by the
same code the DAG's `StagePodOperator` runs, for the personas file in effect
(`--personas-file`, else `$PERSONA_DPO_PERSONAS`, else the package's), with a placeholder run id.

Usage:
    python -m dpo_tasks pod-spec --persona persona_e_mexican_vegan --stage train
    python -m dpo_tasks pod-spec --community vegan-bakers --persona persona_e_mexican_vegan --stage evaluate
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dpo_tasks.config import DEFAULT_PERSONA, default_personas_path, load_persona

# CLI stage -> the DAG task whose pod it is.
STAGES = {"generate": "generate", "label": "label", "format": "format", "sft": "sft", "train": "train", "evaluate": "evaluate_answers"}
RUN_ID = "pod-spec"


def make_parser(command: str = "pod-spec") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", default=DEFAULT_PERSONA, help="persona id (the base persona for --community)")
    parser.add_argument("--personas-file", default=None, help="personas.yaml path (default: $PERSONA_DPO_PERSONAS or the package's)")
    parser.add_argument("--stage", required=True, choices=sorted(STAGES), help="which stage's pod")
    parser.add_argument("--community", default=None, help="render the dpo_custom pod of this community id")
    parser.add_argument("--run-id", default=RUN_ID, help="run id in the labels and paths (default: %(default)s)")
    return parser


def pod_run(persona_id: str, personas_file: str, *, community: str | None = None, run_id: str = RUN_ID) -> dict[str, Any]:
    """The run description `prepare` would hand the stage tasks (no run directory is created)."""
    from dpo_tasks.orchestration.common import run_dir_for, safe_run_id
    from dpo_tasks.config import ConfigError
    from dpo_tasks.orchestration.custom import COMMUNITY_ID_RE, RESERVED_COMMUNITY_IDS
    from dpo_tasks.orchestration.tasks import common_args

    persona = load_persona(persona_id, personas_file)
    if community is not None and (not COMMUNITY_ID_RE.fullmatch(community) or community in RESERVED_COMMUNITY_IDS):
        raise ConfigError(f"--community {community!r} must match {COMMUNITY_ID_RE.pattern} and not be a reserved name")
    namespace = f"policies/{community}" if community else persona_id
    run_dir = run_dir_for(namespace, run_id)
    return {
        "dag_id": "dpo_custom" if community else persona.dag_id,
        "namespace": namespace, "persona": persona_id, "community": community,
        "run_dir": str(run_dir), "run_id": safe_run_id(run_id),
        "args": common_args(persona_id, run_dir / "personas.yaml", run_dir, []),
        "runner": "kubernetes", "dry_run": False
    }


def render(persona_id: str, stage: str, *, personas_file: str | None = None, community: str | None = None,
           run_id: str = RUN_ID) -> dict[str, Any]:
    """The pod of `stage` (generate, label, train, evaluate) as a plain Kubernetes object."""
    from kubernetes.client import ApiClient

    from dpo_tasks.orchestration.pod import build_pod_operator
    from dpo_tasks.orchestration.tasks import staging_for

    personas_file = str(personas_file or default_personas_path())
    run = pod_run(persona_id, personas_file, community=community, run_id=run_id)
    task = STAGES[stage]
    op = build_pod_operator(run, task, staging_for(run, task), cfg=load_persona(persona_id, personas_file).config)
    pod = op.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def main(args: argparse.Namespace) -> int:
    import os

    import yaml

    # Airflow's task logger writes to the process's stdout; stdout must carry the YAML alone.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        pod = render(args.persona, args.stage, personas_file=args.personas_file, community=args.community, run_id=args.run_id)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    sys.stdout.write(yaml.safe_dump(pod, sort_keys=False))
    return 0
