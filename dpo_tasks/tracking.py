"""MLflow tracking and registry: one MLflow run per pipeline run, and the `champion` alias following LATEST.

A pipeline run (the `run` command, or one Airflow DAG run whose stages run as separate tasks and
processes) is ONE MLflow run. Stages are not nested runs: each finished stage adds to the same run,
so the MLflow UI shows one row per pipeline run with everything side by side:

- params: the effective config (`persona.config`, flattened, e.g. `training.learning_rate`);
- metrics: every training step (`loss`, `rewards/accuracies`, `rewards/margins`, ... at its step),
  each stage's summary numbers (`generate/prompts`, `label/kept`, `train/train_loss`, ...), the
  evaluation summary (`eval/win_rate`, `eval/ci_low`, ...) and per-category win rates
  (`eval/category/<category>/win_rate`);
- artifacts: `train/config.yaml`, `train/metrics.json`, the HTML report and the evaluation summary,
  `gate.json`, and on publish `model/` (the published version's adapter and `model_card.json`);
- tags: `persona`, `community`, `namespace`, `dag_id`, `airflow_run_id`, `gate_decision`,
  `published_version`.

Which MLflow run a run dir belongs to is kept in `<run_dir>/mlflow.json`, so every process of a
pipeline run (Airflow task subprocesses, a resumed `run`) adds to the same run.

Where: `$MLFLOW_TRACKING_URI` (production: an MLflow server; under Airflow the `mlflow_default`
connection's host, else `$AIRFLOW_HOME/persona_dpo/mlflow.db`, is passed to the stages as that
variable), else the embedded default, MLflow's own: `sqlite:///mlflow.db` in the working
directory, artifacts in `mlruns/` beside it (`mlflow ui` in the same directory shows them).
`PERSONA_DPO_TRACKING=off` turns tracking off.

The artifact store stays the source of truth: MLflow being down never fails a stage. A stage that
could not be logged is recorded as pending in `mlflow.json` (with a warning) and retried when the
run finishes (`finish`), a few times with backoff; what still fails is reported, not raised.

Registry: when LATEST of a namespace moves (publish or rollback), `on_served` makes the alias
`champion` of the registered model `persona-dpo-<namespace>` ('/' in a namespace becomes '-')
point at the model version of the served store version (registered from the run's `model/`
artifacts on publish, tagged `store_version` and `store_uri`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dpo_tasks.runs import RunDir, read_json, write_json

log = logging.getLogger(__name__)

STATE = "mlflow.json"
EXPERIMENT_PREFIX = "persona-dpo"
CHAMPION = "champion"
# Stage summaries' numbers that become metrics (others are ids, paths or lists).
_SUMMARY_STAGES = ("validate", "generate", "label", "format", "sft", "train", "evaluate", "gate", "publish")
_EVAL_METRICS = ("win_rate", "ci_low", "ci_high", "n", "wins", "ties", "losses", "failed", "judged_fraction",
                 "samples_per_case", "cases_judged", "effective_n", "design_effect")
RETRY_DELAYS_S = (1.0, 2.0, 4.0)


def enabled() -> bool:
    return os.environ.get("PERSONA_DPO_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the embedded default (an absolute path, so subprocesses agree)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def registered_model_name(namespace: str) -> str:
    return f"{EXPERIMENT_PREFIX}-{namespace.replace('/', '-')}"


def _client(uri: str) -> Any:
    # A dead server must cost seconds, not MLflow's default minutes of retries: we retry at the end.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)
    return out


def _numbers(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}/{k}": float(v) for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class RunTracker:
    """Adds a pipeline run's stages to its MLflow run; never raises for MLflow's sake."""

    def __init__(self, rd: RunDir, *, persona: Any, namespace: str | None = None, tags: dict[str, str] | None = None):
        self.rd = rd
        self.persona = persona
        self.namespace = namespace or persona.id
        self.path = rd.root / STATE
        self._load()
        self.tags = {k: v for k, v in (tags or {}).items() if v}
        self.tags.update(_airflow_tags())

    def _load(self) -> None:
        # Other processes of the same pipeline run (the publish CLI, the next Airflow task) add to the file.
        self.state: dict[str, Any] = read_json(self.path) if self.path.exists() else {}
        self.state.setdefault("tracking_uri", tracking_uri())
        self.state.setdefault("run_id", None)
        self.state.setdefault("logged", [])
        self.state.setdefault("pending", [])

    @property
    def uri(self) -> str:
        return self.state["tracking_uri"]

    @property
    def run_id(self) -> str | None:
        return self.state["run_id"]

    def _save(self) -> None:
        write_json(self.path, self.state)

    def _ensure_run(self, client: Any) -> str:
        if self.run_id:
            return self.run_id
        name = f"{EXPERIMENT_PREFIX}/{self.namespace}"
        experiment = client.get_experiment_by_name(name)
        if experiment:
            experiment_id = experiment.experiment_id
        else:
            # An embedded store keeps its artifacts beside its database, wherever the process runs.
            location = None
            if self.uri.startswith("sqlite:///"):
                location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns" / name.replace("/", "-")).as_uri()
            experiment_id = client.create_experiment(name, artifact_location=location)
        tags = {"persona": self.persona.id, "namespace": self.namespace, "run_dir": str(self.rd.root), **self.tags}
        run = client.create_run(experiment_id, run_name=self.rd.root.resolve().name, tags=tags)
        self.state["run_id"] = run.info.run_id
        self._save()
        from mlflow.entities import Param

        params = _flatten(self.persona.config.model_dump(mode="json"))
        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i : i + 100])
        return run.info.run_id

    def log_stage(self, stage: str) -> bool:
        """Log what `stage` left in the run dir; on failure keep it pending (warning) and return False."""
        if not enabled():
            return True
        self._load()
        try:
            client = _client(self.uri)
            self._log(client, self._ensure_run(client), stage)
        except Exception as exc:  # MLflow being down (or misconfigured) must not fail the pipeline.
            log.warning("MLflow (%s): could not log stage %s (%s: %s); retried when the run finishes", self.uri, stage, type(exc).__name__, exc)
            if stage not in self.state["pending"]:
                self.state["pending"].append(stage)
            self._save()
            return False
        if stage in self.state["pending"]:
            self.state["pending"].remove(stage)
        if stage not in self.state["logged"]:
            self.state["logged"].append(stage)
        self._save()
        return True

    def _log(self, client: Any, run_id: str, stage: str) -> None:
        from mlflow.entities import Metric

        rd = self.rd
        now = int(time.time() * 1000)
        metrics: list[Any] = []
        summary_path = rd.stage_summary(stage)
        summary = read_json(summary_path) if summary_path.exists() else {}
        if stage in _SUMMARY_STAGES and stage != "evaluate":
            metrics += [Metric(k, v, now, 0) for k, v in _numbers(summary, stage).items()]
        if stage == "train" and (rd.train / "metrics.json").exists():
            for step in read_json(rd.train / "metrics.json").get("steps", []):
                n = int(step.get("step", 0))
                metrics += [Metric(k, float(v), now, n) for k, v in step.items() if k not in ("step", "epoch") and isinstance(v, (int, float))]
            for name in ("config.yaml", "metrics.json"):
                if (rd.train / name).exists():
                    client.log_artifact(run_id, str(rd.train / name), "train")
        if stage == "evaluate" and (rd.eval / "summary_stats.json").exists():
            ev = read_json(rd.eval / "summary_stats.json")
            metrics += [Metric(f"eval/{k}", float(ev[k]), now, 0) for k in _EVAL_METRICS if isinstance(ev.get(k), (int, float))]
            for cat, c in (ev.get("per_category") or {}).items():
                for k in ("win_rate", "n"):
                    if isinstance(c.get(k), (int, float)):
                        metrics.append(Metric(f"eval/category/{cat}/{k}", float(c[k]), now, 0))
            client.set_tag(run_id, "evaluation_judge", str(ev.get("judge")))
            for path in (rd.eval / "summary_stats.json", rd.eval / "evaluation_report.html"):
                if path.exists():
                    client.log_artifact(run_id, str(path), "eval")
        if stage == "gate" and rd.gate.exists():
            gate = read_json(rd.gate)
            client.set_tag(run_id, "gate_decision", str(gate.get("decision")))
            client.log_artifact(run_id, str(rd.gate))
        if stage == "publish" and rd.publish.exists():
            self._log_publish(client, run_id, read_json(rd.publish))
        for i in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[i : i + 900])

    def _log_publish(self, client: Any, run_id: str, result: dict[str, Any]) -> None:
        if not result.get("published"):
            return
        version, namespace = result["version"], result.get("namespace") or self.namespace
        client.set_tag(run_id, "published_version", version)
        client.set_tag(run_id, "published_uri", str(result.get("uri")))
        # Normally registered by publish before LATEST moved; this is the retry when MLflow was down then.
        self._register(client, run_id, namespace, version, str(result.get("uri")))
        if result.get("latest_moved") and _still_served(result, namespace):
            _set_champion(client, registered_model_name(namespace), version)

    def log_new(self, stages: tuple[str, ...] = _SUMMARY_STAGES) -> None:
        """Log every stage that finished (its summary exists) and is not logged yet (e.g. trained in a pod)."""
        if not enabled():
            return
        self._load()
        for stage in stages:
            if self.rd.stage_summary(stage).exists() and stage not in self.state["logged"] and stage not in self.state["pending"]:
                self.log_stage(stage)

    def register_version(self, namespace: str, version: str, uri: str) -> bool:
        """Before LATEST moves: the version as a model version of `persona-dpo-<namespace>`. Never raises."""
        if not enabled():
            return True
        self._load()
        try:
            client = _client(self.uri)
            self._register(client, self._ensure_run(client), namespace, version, uri)
            return True
        except Exception as exc:
            log.warning("MLflow (%s): could not register %s/%s (%s: %s); retried when the run finishes", self.uri, namespace, version, type(exc).__name__, exc)
            return False

    def _register(self, client: Any, run_id: str, namespace: str, version: str, uri: str) -> None:
        name = registered_model_name(namespace)
        _ensure_registered_model(client, name)
        if _model_version(client, name, version) is not None:
            return
        # The registry's copy of what the store serves: the adapter and its model card, under the run.
        client.log_artifacts(run_id, str(self.rd.adapter), "model/adapter")
        if (self.rd.root / "model_card.json").exists():
            client.log_artifact(run_id, str(self.rd.root / "model_card.json"), "model")
        client.create_model_version(
            name, f"runs:/{run_id}/model", run_id=run_id,
            tags={"store_version": version, "store_uri": uri, "persona": self.persona.id},
        )

    def finish(self) -> dict[str, Any]:
        """Retry pending stages (backoff), end the MLflow run; the summary says what is still pending."""
        if not enabled():
            return {"tracking_uri": None, "run_id": None, "pending": []}
        self._load()
        for delay in (0.0, *RETRY_DELAYS_S):
            if not self.state["pending"]:
                break
            time.sleep(delay)
            for stage in list(self.state["pending"]):
                self.log_stage(stage)
        if self.run_id and not self.state["pending"]:
            try:
                _client(self.uri).set_terminated(self.run_id, "FINISHED")
            except Exception as exc:
                log.warning("MLflow (%s): could not end run %s: %s", self.uri, self.run_id, exc)
        if self.state["pending"]:
            log.warning(
                "MLflow (%s) unreachable: stages %s of %s not logged; the artifact store has everything",
                self.uri, ", ".join(self.state["pending"]), self.rd.root,
            )
        return {"tracking_uri": self.uri, "run_id": self.run_id, "pending": list(self.state["pending"])}


def _still_served(result: dict[str, Any], namespace: str) -> bool:
    from dpo_tasks.store import open_store

    return open_store(result["store"]).latest(namespace) == result["version"]


def _airflow_tags() -> dict[str, str]:
    # Airflow exports its context to a task's environment, and the stages' subprocesses inherit it.
    return {k: v for k, v in (("dag_id", os.environ.get("AIRFLOW_CTX_DAG_ID")), ("airflow_run_id", os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"))) if v}


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Persona DPO LoRA adapters; alias 'champion' = the store's LATEST")


def _model_version(client: Any, name: str, store_version: str) -> Any:
    found = client.search_model_versions(f"name='{name}' and tags.store_version='{store_version}'")
    return found[0] if found else None


def _set_champion(client: Any, name: str, store_version: str) -> bool:
    mv = _model_version(client, name, store_version)
    if mv is None:
        log.warning("MLflow: %s has no model version for %s (published while MLflow was down?); alias %r unchanged", name, store_version, CHAMPION)
        return False
    client.set_registered_model_alias(name, CHAMPION, mv.version)
    log.info("MLflow: %s@%s -> version %s (%s)", name, CHAMPION, mv.version, store_version)
    return True


def on_served(namespace: str, version: str, *, uri: str | None = None) -> bool:
    """LATEST of `namespace` now serves `version`: move the `champion` alias there. Never raises."""
    if not enabled():
        return True
    uri = uri or tracking_uri()
    for delay in (0.0, *RETRY_DELAYS_S):
        time.sleep(delay)
        try:
            client = _client(uri)
            name = registered_model_name(namespace)
            _ensure_registered_model(client, name)
            return _set_champion(client, name, version)
        except Exception as exc:
            log.warning("MLflow (%s): could not move %s's %r alias to %s: %s", uri, namespace, CHAMPION, version, exc)
    return False
