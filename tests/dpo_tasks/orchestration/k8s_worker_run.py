"""One persona DAG run in Kubernetes mode, task by task, as the worker would execute it.

Run with `worker_site/` on PYTHONPATH (no torch, transformers, trl or peft can be imported, here
or in any stage subprocess). A task whose pod would run is executed as the rendered pod's
container: its command, args and env (secret refs resolved from TEST_SECRETS), every volume mount
path mapped to a fresh directory of its own (so the pod shares nothing with the worker but the
staging area), in a subprocess WITHOUT the block: the pod is the only place the training stack exists.

    python k8s_worker_run.py PERSONA PERSONAS_FILE FEEDBACK_PAIRS_JSONL  -> prints a JSON report
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace

from airflow.sdk.exceptions import AirflowSkipException

from dpo_tasks.config import load_persona
from dpo_tasks.orchestration import factory, tasks
from dpo_tasks.orchestration.operators import StageOperator
from dpo_tasks.orchestration.pod import StagePodOperator, build_pod_operator

HEAVY = ("torch", "transformers", "trl", "peft")


def run_pod(pod, name: str) -> None:
    (container,) = pod.spec.containers
    root = tempfile.mkdtemp(prefix=f"pod-{name}-")
    mounts = {m.mount_path: os.path.join(root, m.name, (m.sub_path or "").strip("/"))
              for m in container.volume_mounts if m.mount_path != "/dev/shm"}

    def mapped(value: str) -> str:
        for path in sorted(mounts, key=len, reverse=True):
            if value == path or value.startswith(path + "/"):
                return mounts[path] + value[len(path):]
        return value

    for local in mounts.values():
        os.makedirs(local, exist_ok=True)
    secrets = json.loads(os.environ.get("TEST_SECRETS", "{}"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TEST_SECRETS")}
    for e in container.env:
        if e.value_from is not None:
            ref = e.value_from.secret_key_ref
            env[e.name] = secrets[ref.name][ref.key]
        else:
            env[e.name] = mapped(e.value)
    command = [sys.executable if c == "python" else c for c in container.command]
    subprocess.run([*command, *(mapped(a) for a in container.args)], check=True, env=env, timeout=600)
    shutil.rmtree(root)


def main(persona_id: str, personas_file: str, feedback_pairs: str) -> dict:
    dag = factory.build_persona_dag(load_persona(persona_id, personas_file), personas_file)
    ctx = {"params": dict(dag.params.dump()) | {"dry_run": False}, "dag_run": SimpleNamespace(conf={}),
           "run_id": "manual__2026-12-03T07:00:00+00:00", "dag": dag}
    tasks._context = lambda: ctx
    run, report = None, {"worker": [], "pod": [], "skipped": []}
    for task in dag.topological_sort():
        if isinstance(task, StagePodOperator) and tasks.runs_on_pod(task.stage, run):
            staging = tasks.stage_pod_inputs(task.stage, run)
            run_pod(build_pod_operator(run, task.stage, staging).build_pod_request_obj(dry_run=True), task.task_id)
            tasks.fetch_pod_outputs(task.stage, run)
            report["pod"].append(task.task_id)
            continue
        if isinstance(task, StagePodOperator):
            try:
                value = StagePodOperator(task_id=task.task_id, stage=task.stage, run=run).execute({})
            except AirflowSkipException:  # a disabled optional stage (sft): Airflow marks it skipped
                report["skipped"].append(task.task_id)
                continue
        else:
            assert isinstance(task, StageOperator), task
            value = StageOperator(task_id=task.task_id, call=task.call, args=task.args,
                                  run=run if task.run is not None else None).execute({})
        report["worker"].append(task.task_id)
        if task.task_id == "prepare":
            run = value
            # What a feedback-triggered run's export leaves: the tiny model's own answers tie under
            # the rule judge, so the pairs come from users' ratings.
            shutil.copyfile(feedback_pairs, os.path.join(run["run_dir"], "feedback_pairs.jsonl"))
    report["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    report["run_dir"] = run["run_dir"]
    return report


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
