"""Task callables of the persona and community DAGs.

Every stage runs as `python -m dpo_tasks <stage> ...` in a subprocess of the worker: the exact
command a user, DVC and the trainer pod run, and a process whose torch memory is returned to the
worker when the stage ends. Its output is streamed line by line into the task log.

XCom carries the run description from `prepare_*` (`run_dir`, the CLI arguments every stage
shares, the runner) and each stage's small summary (`summaries/<stage>.json`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona, PipelineConfig, check_run_overrides, default_personas_path, load_persona, with_overrides
from dpo_tasks.orchestration.common import run_dir_for, safe_run_id
from dpo_tasks.orchestration.custom import check_custom_conf
from dpo_tasks.orchestration.params import overrides_from_params
from dpo_tasks.runs import RunDir, read_json, write_json, write_jsonl

log = logging.getLogger(__name__)

# `python -m dpo_tasks` exits with 2 on a ConfigError (bad settings or input).
CONFIG_ERROR_RC = 2
# Summaries larger than this are not XCom material; the task returns their path instead.
MAX_XCOM_SUMMARY_BYTES = 32_768


def _context() -> dict[str, Any]:
    from airflow.sdk import get_current_context

    return get_current_context()


# DAG task -> the part of `evaluate` it runs: the answers need the model (a pod with the
# kubernetes runner), the judging needs only the answers and the judge (the worker).
EVALUATE_PARTS = {"evaluate_answers": "answers", "evaluate": "judge"}


def stage_argv(stage: str, run: dict[str, Any]) -> list[str]:
    """The CLI call of `stage` (a DAG task's stage) for this run: what the local runner and the pod execute."""
    if stage in EVALUATE_PARTS:
        # Against the model users get now (the base model until a first version is published).
        return ["evaluate", *run["args"], "--baseline", "latest", "--namespace", run["namespace"], "--part", EVALUATE_PARTS[stage]]
    return [stage, *run["args"]]


def common_args(persona_id: str, personas_file: Path, run_dir: Path, sets: list[str]) -> list[str]:
    args = ["--persona", persona_id, "--personas-file", str(personas_file), "--run-dir", str(run_dir)]
    for item in sets:
        args += ["--set", item]
    return args


def _snapshot_personas(personas_file: str | None, rd: RunDir) -> Path:
    # The run keeps the config it started with: an edit of personas.yaml mid-run does not change
    # what later stages, their retries or the pod see.
    snapshot = rd.root / "personas.yaml"
    shutil.copyfile(personas_file or default_personas_path(), snapshot)
    return snapshot


def _check_overrides(persona_id: str, personas_file: Path, sets: list[str]) -> Persona:
    """The persona as this run will use it; ConfigError for a key a run may not set or a bad value."""
    from dpo_tasks.cli import parse_overrides

    overrides = parse_overrides(sets)
    check_run_overrides(overrides, where="run conf")
    return with_overrides(load_persona(persona_id, personas_file), overrides)


def no_retry_on_bad_input(fn):
    """Bad config or conf fails the task at once: a retry would fail the same way."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@no_retry_on_bad_input
def prepare_persona_run(persona_id: str, personas_file: str | None = None) -> dict[str, Any]:
    """Create the run directory, snapshot the config and turn the trigger form into CLI overrides.

    A run conf may carry `feedback: {persona_id, from_id, to_id}` (the feedback monitor's trigger);
    it is recorded in `trigger.json` for the stages and the model card.
    """
    ctx = _context()
    params = dict(ctx["params"])
    conf = dict(getattr(ctx["dag_run"], "conf", None) or {})
    # Everything about the conf is checked before the run dir exists: a refused run leaves nothing behind.
    sets = overrides_from_params(params)
    feedback = _check_feedback_window(conf.get("feedback"), persona_id)
    _check_overrides(persona_id, Path(personas_file or default_personas_path()), sets)
    rd = RunDir(run_dir_for(persona_id, ctx["run_id"])).ensure()
    snapshot = _snapshot_personas(personas_file, rd)
    persona = _check_overrides(persona_id, snapshot, sets)
    write_json(rd.root / "trigger.json", {"run_id": ctx["run_id"], "params": params, "feedback": feedback, "sets": sets})
    run = {
        "dag_id": ctx["dag"].dag_id if ctx.get("dag") is not None else f"dpo_{persona_id}",
        "namespace": persona_id,
        "persona": persona_id,
        "run_dir": str(rd.root),
        "run_id": safe_run_id(ctx["run_id"]),
        "args": common_args(persona_id, snapshot, rd.root, sets),
        # The deployment's choice (personas.yaml); a run's conf cannot move the model stages elsewhere.
        "runner": persona.config.runner,
        "dry_run": bool(params.get("dry_run")),
        "feedback": feedback,
    }
    log.info("run dir %s; overrides: %s", rd.root, " ".join(sets) or "(none)")
    return run


def _check_feedback_window(feedback: Any, persona_id: str) -> dict[str, Any] | None:
    """The feedback monitor's window (`{persona_id, from_id, to_id, ...}`, a `Claim`); ConfigError otherwise."""
    if feedback is None:
        return None
    ok = (
        isinstance(feedback, dict)
        and feedback.get("persona_id", persona_id) == persona_id
        and all(isinstance(feedback.get(k), int) and not isinstance(feedback.get(k), bool) and feedback[k] >= 0 for k in ("from_id", "to_id"))
        and feedback["from_id"] <= feedback["to_id"]
    )
    if not ok:
        raise ConfigError(
            f"run conf 'feedback' = {feedback!r} must be {{'persona_id': {persona_id!r}, 'from_id': int, 'to_id': int}} "
            "with 0 <= from_id <= to_id"
        )
    return feedback


def run_persona(run: dict[str, Any]) -> Persona:
    """The persona config this run uses: the run's personas.yaml snapshot with the run's overrides."""
    from dpo_tasks.cli import parse_overrides

    args = run["args"]
    snapshot = args[args.index("--personas-file") + 1]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return with_overrides(load_persona(run["persona"], snapshot), parse_overrides(sets))


def deployment_persona_config(persona_id: str, personas_file: str | Path) -> "PipelineConfig":
    """The persona's config as the deployment wrote it, without the run's overrides: where a run
    executes (runner, image, namespace, service account) is never up to its conf."""
    return load_persona(persona_id, personas_file).config


def run_deployment_config(run: dict[str, Any]) -> "PipelineConfig":
    args = run["args"]
    return deployment_persona_config(run["persona"], args[args.index("--personas-file") + 1])


def export_feedback(run: dict[str, Any]) -> dict[str, Any]:
    """Feedback-triggered runs: the window's ratings become pairs and prompts in the run dir.

    In-process (psycopg2 only, no model) so the Airflow connection `feedback_db` is reachable.
    """
    from dpo_tasks.feedback.export import run as export

    if not run.get("feedback"):
        log.info("no feedback window in the run conf: nothing to export")
    return export(run_persona(run), run["run_dir"], window=run.get("feedback"))


def _stage_env(stage: str) -> dict[str, str]:
    """Secrets the stage needs, taken from Airflow connections into the subprocess's environment only."""
    env = dict(os.environ)
    if stage == "label" and "GROQ_API_KEY" not in env:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection("groq_default")
        except AirflowNotFoundException:
            return env
        if conn.password:
            env["GROQ_API_KEY"] = conn.password
        if conn.host:
            env.setdefault("GROQ_BASE_URL", conn.host)
    return env


def run_cli(argv: list[str], *, env: dict[str, str] | None = None) -> None:
    """Run `python -m dpo_tasks ARGV`, streaming its output to the task log; raise on failure."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    cmd = [sys.executable, "-m", "dpo_tasks", *argv]
    log.info("running: %s", " ".join(cmd[1:]))
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log.info("%s", line)
            tail = (tail + [line])[-5:]
        rc = proc.wait()
    if rc != 0:
        last = next((ln for ln in reversed(tail) if ln.strip()), "(no output)")
        if rc == CONFIG_ERROR_RC:
            # Bad settings or input fail the same way on every try: no retry.
            raise AirflowFailException(f"{argv[0]}: {last}")
        raise AirflowException(f"{argv[0]} exited with code {rc}: {last}")


def _summary(rd: RunDir, stage: str) -> dict[str, Any]:
    path = rd.stage_summary(stage)
    if not path.exists():
        return {"summary": None}
    if path.stat().st_size > MAX_XCOM_SUMMARY_BYTES:
        return {"summary": str(path)}
    return read_json(path)


def use_tracking_connection() -> str:
    """The MLflow tracking URI of this deployment, exported so the stages' subprocesses use it too.

    `$MLFLOW_TRACKING_URI`, else the `mlflow_default` connection (its host: a URL, or host + port),
    else an embedded store beside the run dirs. Deployment settings, never the run's conf.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from dpo_tasks.orchestration.common import runs_root

        try:
            conn = BaseHook.get_connection("mlflow_default")
        except AirflowNotFoundException:
            conn = None
        if conn is not None and conn.host:
            uri = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}:{conn.port or 5000}"
        else:
            runs_root().parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{runs_root().parent / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def track(run: dict[str, Any], *, finish: bool = False) -> dict[str, Any] | None:
    """Add the stages this DAG run finished so far to its MLflow run (one per DAG run); never fails the task."""
    from dpo_tasks.tracking import RunTracker

    try:
        ctx = _context()
        tracker = RunTracker(
            RunDir(run["run_dir"]), persona=run_persona(run), namespace=run["namespace"],
            tags={"community": run.get("community"), "dag_id": ctx["dag"].dag_id, "airflow_run_id": ctx["run_id"]},
        )
        tracker.log_new()
        if finish:
            info = tracker.finish()
            log.info("tracking: %s run %s", info["tracking_uri"], info["run_id"])
            return info
    except Exception:
        log.warning("MLflow tracking of %s failed; the run goes on", run.get("run_dir"), exc_info=True)
    return None


def skip_reason(stage: str, run: dict[str, Any]) -> str | None:
    """Why this task of this run does nothing (Airflow shows it skipped), or None.

    `sft` is in every persona DAG, since a run's conf may turn it on; off, it is skipped before
    a subprocess or a pod starts, and train (trigger rule none_failed) starts from the configured model."""
    if stage == "sft" and not run_persona(run).config.sft.enabled:
        return "sft.enabled is false: DPO starts from the configured model (turn it on in personas.yaml or the run's overrides)"
    return None


def skip_if_disabled(stage: str, run: dict[str, Any]) -> None:
    reason = skip_reason(stage, run)
    if reason is not None:
        from airflow.sdk.exceptions import AirflowSkipException

        log.info("%s: %s", stage, reason)
        raise AirflowSkipException(reason)


def run_stage(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    """One pipeline stage through its CLI; returns its summary for XCom."""
    skip_if_disabled(stage, run)
    use_tracking_connection()
    run_cli(stage_argv(stage, run), env=_stage_env(stage))
    track(run)
    return _summary(RunDir(run["run_dir"]), stage)


def publish_if_promoted(run: dict[str, Any]) -> dict[str, Any]:
    """Publish when the gate promoted and this is not a dry run; otherwise skip, saying why."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from dpo_tasks.gate import read_gate

    rd = RunDir(run["run_dir"])
    gate = read_gate(rd.gate)
    if gate is None:
        raise AirflowFailException(f"no gate decision at {str(rd.gate)!r}: the gate task did not write one")
    use_tracking_connection()
    if gate.get("decision") != "promote":
        track(run, finish=True)
        raise AirflowSkipException(f"not publishing: the gate rejected the candidate: {gate.get('reason')}")
    if run["dry_run"]:
        track(run, finish=True)
        raise AirflowSkipException(f"not publishing: dry run (the gate would promote: {gate.get('reason')})")
    argv = ["publish", *run["args"], "--namespace", run["namespace"], "--run-id", run["run_id"]]
    run_cli(argv)
    # The last task of the DAG run: retry what MLflow missed and end the MLflow run.
    track(run, finish=True)
    published = read_json(rd.publish)
    if published.get("latest_moved"):
        from dpo_tasks.orchestration.assets import emit_promotion

        # Airflow records the event when this task succeeds: deployment DAGs scheduled on the asset run.
        emit_promotion(_context(), run, published)
    return _summary(rd, "publish")


def cleanup_run_data(run: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Teardown of every run: its copies of community and feedback data go, as $PERSONA_DPO_RETENTION says.

    Without a run (prepare failed), there is nothing: prepare removes what it fetched when it fails.
    """
    from dpo_tasks.retention import cleanup_run

    if not run:
        log.info("prepare did not describe a run: nothing to clean up")
        return None

    staging = staging_uri(run) if run.get("runner") == "kubernetes" else None
    return cleanup_run(run["run_dir"], community=bool(run.get("community")), staging=staging)


# --- model stages on pods, through the artifact store (kubernetes runner) ----------------------

# DAG task -> (run-dir files the pod needs, those it produces). Optional inputs are staged when
# present; every output must exist or the pod's `remote` call fails.
POD_STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generate": (("personas.yaml", "feedback_prompts.jsonl", "prompts.jsonl"),
                 ("prompts.jsonl", "variants.jsonl", "summaries/generate.json")),
    "label": (("personas.yaml", "variants.jsonl", "feedback_pairs.jsonl"), ("labeled.jsonl", "summaries/label.json")),
    # The base model's tokenizer renders the chat template: transformers, which the worker lacks.
    "format": (("personas.yaml", "labeled.jsonl"), ("dpo.jsonl", "summaries/format.json")),
    "sft": (("personas.yaml", "labeled.jsonl"), ("sft", "summaries/sft.json")),
    # sft/adapter: present when the run's sft stage trained one (train then continues it).
    "train": (("personas.yaml", "dpo.jsonl", "sft/adapter"), ("train", "summaries/train.json")),
    "evaluate_answers": (("personas.yaml", "train/adapter", "eval/responses.jsonl"),
                         ("eval/responses.jsonl", "summaries/evaluate_answers.json")),
}
REQUIRED_POD_INPUTS = {"personas.yaml", "variants.jsonl", "labeled.jsonl", "dpo.jsonl", "train/adapter"}
# Which `kubernetes.<stage>` pod resources a task's pod uses.
# SFT trains like DPO (same model, LoRA, GPU): it runs with the train pod's resources.
POD_RESOURCES = {"generate": "generate", "label": "label", "format": "format", "sft": "train", "train": "train", "evaluate_answers": "evaluate"}
# Labeling judges that load a model (the others call an API or apply rules on the worker).
MODEL_JUDGES = frozenset({"reward"})


def runs_on_pod(stage: str, run: dict[str, Any]) -> bool:
    """Whether this task of this run executes in a pod: the model stages with the kubernetes runner;
    `label` only when its judge (which a run may choose) is a model."""
    if run["runner"] != "kubernetes" or stage not in POD_STAGES or skip_reason(stage, run) is not None:
        return False
    return stage != "label" or run_persona(run).config.labeling.judge in MODEL_JUDGES


def staging_uri(run: dict[str, Any]) -> str:
    """Where a run's pod inputs and outputs are exchanged: $PERSONA_DPO_STAGING, else <store>/_staging."""
    root = os.environ.get("PERSONA_DPO_STAGING") or f"{(os.environ.get('PERSONA_DPO_STORE') or 'store').rstrip('/')}/_staging"
    return f"{root.rstrip('/')}/{run['namespace']}/{run['run_id']}"


def staging_for(run: dict[str, Any], stage: str) -> dict[str, str]:
    base = f"{staging_uri(run)}/{stage}"
    return {"inputs": f"{base}/inputs", "outputs": f"{base}/outputs"}


def stage_pod_inputs(stage: str, run: dict[str, Any]) -> dict[str, str]:
    from dpo_tasks.store.sync import push

    staging = staging_for(run, stage)
    root = Path(run["run_dir"])
    inputs, _ = POD_STAGES[stage]
    missing = [rel for rel in inputs if rel in REQUIRED_POD_INPUTS and not (root / rel).exists()]
    if missing:
        raise FileNotFoundError(f"{stage}: the pod's input(s) {', '.join(missing)} are missing from {str(root)!r}")
    present = [rel for rel in inputs if (root / rel).exists()]
    push(root, present, staging["inputs"])
    log.info("staged %s for the %s pod at %s", ", ".join(present), stage, staging["inputs"])
    return staging


def fetch_pod_outputs(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    from dpo_tasks.store.sync import pull

    staging = staging_for(run, stage)
    rd = RunDir(run["run_dir"])
    pulled = pull(staging["outputs"], rd.root)
    log.info("fetched %d files of the %s pod's output from %s", pulled, stage, staging["outputs"])
    _, outputs = POD_STAGES[stage]
    missing = [rel for rel in outputs if not (rd.root / rel).exists()]
    if missing:
        raise FileNotFoundError(f"the {stage} pod left no {', '.join(missing)} at {staging['outputs']!r}")
    return _summary(rd, stage)


# --- the community flow (dpo_custom) ---------------------------------------------------------


@no_retry_on_bad_input
def prepare_custom_run(personas_file: str | None = None) -> dict[str, Any]:
    """Check the community conf, fetch the dataset, validate it into `dpo.jsonl` (bad rows logged)."""
    from dpo_tasks.store.sync import fetch_file
    from dpo_tasks.validate import load_records, validate_records

    ctx = _context()
    params = dict(ctx["params"])
    request = check_custom_conf(params)
    community, base_persona, namespace, sets = request.community, request.persona, request.namespace, request.sets
    # SFT learns from a run's generated strong-prompt answers; a community dataset has none, so a
    # community run trains DPO alone whatever personas.yaml or the conf say about sft (the last --set wins).
    if any(item.startswith("sft.enabled=") and item.split("=", 1)[1].strip().lower() in ("true", "1", "yes") for item in sets):
        log.warning("dpo_custom: sft.enabled ignored: SFT needs the generated answers of a persona run; this run trains DPO alone")
    sets = [*sets, "sft.enabled=false"]
    # The base persona and the overrides' values too, before the run dir exists.
    _check_overrides(base_persona, Path(personas_file or default_personas_path()), sets)
    rd = RunDir(run_dir_for(namespace, ctx["run_id"])).ensure()
    snapshot = _snapshot_personas(personas_file, rd)
    persona = _check_overrides(base_persona, snapshot, sets)
    try:
        if request.dataset_uri is not None:
            records, where, unparsed = load_records(fetch_file(request.dataset_uri, rd.root / "community_dataset.raw"))
        else:
            records, where, unparsed = request.dataset, None, []
        result = validate_records(records, where=where)
        problems = [*unparsed, *result.problems]
        for problem in problems:
            log.warning("dataset row rejected: %s", problem)
        total = len(records) + len(unparsed)
        log.info("dataset for community %r: %d rows, %d usable, %d problems", community, total, len(result.good), len(problems))
        if not result.good:
            raise ConfigError(f"community {community!r}: no usable row in the dataset ({len(problems)} problems; see the log)")
        write_jsonl(rd.dpo, result.good)
    except BaseException:
        # No run follows, so no cleanup task either: the copies go now (as the retention policy says).
        from dpo_tasks.retention import cleanup_run

        cleanup_run(rd.root, community=True)
        raise
    summary = {"community": community, "rows": total, "usable": len(result.good), "problems": len(problems)}
    write_json(rd.stage_summary("validate"), summary)
    return {
        "dag_id": ctx["dag"].dag_id if ctx.get("dag") is not None else "dpo_custom",
        "namespace": namespace,
        "persona": base_persona,
        "community": community,
        "run_dir": str(rd.root),
        "run_id": safe_run_id(ctx["run_id"]),
        "args": common_args(base_persona, snapshot, rd.root, sets),
        "runner": persona.config.runner,
        "dry_run": bool(params.get("dry_run")),
        "dataset": summary,
    }
