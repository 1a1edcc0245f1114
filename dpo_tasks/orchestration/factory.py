"""Builds the DAGs: one `dpo_<persona_id>` per persona in personas.yaml, and `dpo_custom`.

    prepare ─► feedback_export ─► generate ─► label ─► format ─┬─► sft ─► train ─► evaluate_answers ─► evaluate ─► gate ─► publish
                                                                └─► version_data (DVC) ──────────────────────────────────────────┘

`sft` (optional SFT before DPO) is in every persona DAG, since a run's conf may turn it on; with
`sft.enabled` false it is skipped before anything starts, and train (trigger rule `none_failed`)
runs from the configured model.

The persona's `runner` (personas.yaml, a deployment setting) decides at parse time where the model
stages run: `local`, subprocesses of the worker; `kubernetes`, `generate`, `sft`, `train`,
`evaluate_answers` and a reward-model `label` are `StagePodOperator`s (GPU pods in the trainer
image; `format`, which needs the base model's tokenizer, a CPU pod), while API/rule judging (`label`, `evaluate`), gate, publish and DVC stay on the worker,
which then never imports torch. The task ids are the same either way.

`dpo_custom` replaces generate/label/format with the community's own dataset (validated in
`prepare`). The DAG files in `dags/` only call `build_persona_dags()` / `build_custom_dag()`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

from airflow.sdk import DAG, BaseOperator, Param, ParamsDict, chain, get_parsing_context

from dpo_tasks.config import DEFAULT_PERSONA, PersonasFile, PipelineConfig, Persona, load_personas_lenient
from dpo_tasks.orchestration import tasks
from dpo_tasks.orchestration.assets import community_alias, model_asset
from dpo_tasks.orchestration.common import DAGRUN_TIMEOUT, POOL_A100, POOL_GROQ, dag_policy
from dpo_tasks.orchestration.params import persona_params
from dpo_tasks.orchestration.operators import StageOperator
from dpo_tasks.orchestration.pod import StagePodOperator

log = logging.getLogger(__name__)

CUSTOM_DAG_ID = "dpo_custom"
PERSONA_TAGS = ["persona-dpo", "dpo", "persona"]
CUSTOM_TAGS = ["persona-dpo", "dpo", "community"]
STAGE_TIMEOUT = timedelta(hours=3)
TRAIN_TIMEOUT = timedelta(hours=8)


@contextmanager
def _tasks_share_dag_params(dag: DAG) -> Iterator[None]:
    """Build tasks without copying the DAG's params into each of them.

    Airflow deep-copies a DAG's params into every operator, once per level of its class hierarchy;
    with a trigger form on every persona DAG that dominates parse time. A task's params matter only
    when it runs, and then they are the DAG's params merged with the task's own
    (`airflow.sdk.definitions.param.process_params`), so the tasks lose nothing.
    """
    params = dag.params
    # object.__setattr__: the attrs converter and validator would re-validate every Param.
    object.__setattr__(dag, "params", ParamsDict())
    try:
        yield
    finally:
        object.__setattr__(dag, "params", params)


def _stage(task_id: str, call: Any, *args: Any, run: Any = None, **kwargs: Any) -> StageOperator:
    return StageOperator(task_id=task_id, call=call, args=args, run=run, **kwargs)


def _model_stage(stage: str, run: Any, cfg: PipelineConfig, *, timeout: timedelta, **kwargs: Any) -> BaseOperator:
    """A stage that loads a model: a pod with the kubernetes runner, a worker subprocess otherwise."""
    if cfg.runner == "kubernetes":
        res = getattr(cfg.kubernetes, tasks.POD_RESOURCES[stage])
        if res.gpu_count:
            kwargs.setdefault("pool", POOL_A100)
        return StagePodOperator(task_id=stage, stage=stage, run=run, execution_timeout=timedelta(seconds=res.timeout_s), **kwargs)
    return _stage(stage, tasks.run_stage, stage, run=run, execution_timeout=timeout, **kwargs)


def _training_and_after(run: Any, cfg: PipelineConfig, *, after: Any, outlets: list[Any], sft: Any = None) -> None:
    """[sft ─►] train ─► evaluate_answers ─► evaluate ─► gate ─► publish, and version_data.

    `publish` emits an asset event for the served model (`outlets`) when it moves LATEST.
    """
    # none_failed: train runs after a skipped (disabled) sft, never after a failed one.
    train = _model_stage("train", run, cfg, timeout=TRAIN_TIMEOUT, **({"trigger_rule": "none_failed"} if sft is not None else {}))
    answers = _model_stage("evaluate_answers", run, cfg, timeout=STAGE_TIMEOUT)
    evaluate = _stage("evaluate", tasks.run_stage, "evaluate", run=run, execution_timeout=STAGE_TIMEOUT)
    gate = _stage("gate", tasks.run_stage, "gate", run=run)
    publish = _stage("publish", tasks.publish_if_promoted, run=run, outlets=outlets)
    chain(*([after, sft] if sft is not None else [after]), train, answers, evaluate, gate, publish)
    # The datasets are pushed to the DVC remote while training runs; the model card needs their versions.
    version_data = _stage("version_data", tasks.run_stage, "version-data", run=run)
    chain(after, version_data, publish)
    # A teardown: runs when everything before it is done, failed or not, and does not decide the run's state.
    # (Not tied to prepare as its setup: every task reads prepare's XCom, and Airflow wants a setup's
    # direct downstream tasks all_success, which evaluate's branch join is not.)
    cleanup = _stage("cleanup", tasks.cleanup_run_data, run=run)
    chain([publish, version_data], cleanup.as_teardown())


def _persona_doc(persona: Persona, personas_path: str) -> str:
    cfg = persona.config
    forbidden = ", ".join(f"{k} ({len(v)} words)" for k, v in persona.forbidden.items()) or "none"
    return f"""\
# DPO alignment for {persona.name} (`{persona.id}`)

{persona.description or ''}

Keeps this persona's LoRA adapter aligned with Direct Preference Optimization: it samples
{cfg.generation.num_prompts} recipe requests from the persona's prompt pool, generates a strongly and a
weakly persona-conditioned answer to each, lets the **{cfg.labeling.judge}** judge pick chosen/rejected,
trains with TRL DPO + LoRA (model stages on the **{cfg.runner}** runner, set in personas.yaml), evaluates the candidate against the current
model with the **{cfg.evaluation.judge}** judge and publishes it only when the lower bound of its win
rate's 95% interval reaches **{cfg.gate.min_win_rate_lower_bound}**.

| | |
| --- | --- |
| cuisines | {", ".join(persona.cuisines)} |
| dietary restrictions | {", ".join(persona.dietary_restrictions) or "none"} |
| forbidden | {forbidden} |
| preferred | {", ".join(persona.preferred_ingredients)} |
| schedule | `{cfg.schedule}` (also started by the `feedback_monitor` DAG when feedback drifts) |
| config | `{personas_path}` (`defaults` + this persona's `overrides`) |

Trigger with config to change prompts, judges, gate threshold or epochs for one run (docs/security.md lists what a run may set);
**dry run** stops after the gate. When the gate refuses, `publish` is skipped and its log and the
`gate` task's XCom say why. Stage outputs: the run directory named in `prepare`'s XCom.
"""


def build_persona_dag(persona: Persona, personas_path: str | None = None) -> DAG:
    path = str(personas_path) if personas_path else None
    with DAG(
        dag_id=persona.dag_id,
        description=f"DPO alignment of the {persona.name} persona's adapter",
        doc_md=_persona_doc(persona, path or "personas.yaml"),
        schedule=persona.config.schedule,
        dagrun_timeout=DAGRUN_TIMEOUT,
        **dag_policy(),
        params=persona_params(persona.config),
        tags=PERSONA_TAGS,
    ) as dag, _tasks_share_dag_params(dag):
        run = _stage("prepare", tasks.prepare_persona_run, persona.id, path).output
        feedback = _stage("feedback_export", tasks.export_feedback, run=run)
        cfg = persona.config
        generate = _model_stage("generate", run, cfg, timeout=STAGE_TIMEOUT)
        label = _model_stage("label", run, cfg, timeout=STAGE_TIMEOUT, pool=POOL_GROQ)
        fmt = _model_stage("format", run, cfg, timeout=STAGE_TIMEOUT)
        sft = _model_stage("sft", run, cfg, timeout=TRAIN_TIMEOUT)
        chain(feedback, generate, label, fmt)
        _training_and_after(run, cfg, after=fmt, sft=sft, outlets=[model_asset(persona.id)])
    return dag


CUSTOM_DOC = """\
# DPO on a community's own preference data (`dpo_custom`)

Replaces the reference microservice's webhook: trigger it through the REST API v2 with a run conf

```json
{"communityId": "vegan-bakers", "dataset": [{"prompt": "...", "chosen": "...", "rejected": "..."}]}
```

or `"dataset_uri": "gs://<upload prefix>/<communityId>/data.jsonl"` (JSONL or a JSON list) instead of `dataset`.
`prepare` validates every row (bad rows are listed in its log; the run fails when none is usable),
then the adapter is trained (local or A100 pod), evaluated with the base persona's test cases
(`persona`, default the package's default persona), gated, and published under
`policies/<communityId>/` in the artifact store.
"""


def _custom_params(cfg: PipelineConfig, persona_ids: list[str]) -> dict[str, Param]:
    form = persona_params(cfg)
    return {
        # Required, but checked by `prepare` rather than by a default-less Param: Airflow builds
        # the params of a run's callbacks without its conf, and a missing default fails there.
        "communityId": Param(
            None, type=["null", "string"], title="Community id (required)",
            description="Lowercase letters, digits and '-', starting and ending with a letter or digit (up to 63). "
            "Published under policies/<communityId>/ in the artifact store.",
        ),
        "dataset": Param(
            None, type=["null", "array"], title="Dataset (inline)",
            description="A list of {prompt, chosen, rejected}; give this or dataset_uri.",
        ),
        "dataset_uri": Param(
            None, type=["null", "string"], title="Dataset URI",
            description="A JSONL file or JSON list under the upload prefix, gs://.../<communityId>/...; give this or dataset.",
        ),
        "persona": Param(
            DEFAULT_PERSONA if DEFAULT_PERSONA in persona_ids else (persona_ids or [DEFAULT_PERSONA])[0],
            type="string", enum=persona_ids or [DEFAULT_PERSONA], title="Base persona",
            description="Whose training settings and evaluation cases the community adapter uses.",
        ),
        **{k: form[k] for k in ("eval_judge", "epochs", "min_win_rate_lower_bound", "dry_run", "overrides")},
    }


def build_custom_dag(personas: PersonasFile) -> DAG:
    base = personas.personas.get(DEFAULT_PERSONA)
    cfg = base.config if base else PipelineConfig()
    with DAG(
        dag_id=CUSTOM_DAG_ID,
        description="DPO on a community's own preference dataset, triggered through the REST API",
        doc_md=CUSTOM_DOC,
        schedule=None,
        dagrun_timeout=DAGRUN_TIMEOUT,
        **dag_policy(),
        params=_custom_params(cfg, sorted(personas.personas)),
        tags=CUSTOM_TAGS,
    ) as dag, _tasks_share_dag_params(dag):
        run = _stage("prepare", tasks.prepare_custom_run, str(personas.path)).output
        _training_and_after(run, cfg, after=run, outlets=[community_alias()])
    return dag


def build_persona_dags(personas_path: str | None = None) -> dict[str, DAG]:
    """Every valid persona's DAG (only the one being run, at task run time). Bad personas are
    logged here and raised by the config check DAG file, so they never hide the good ones."""
    personas = load_personas_lenient(personas_path)
    wanted = get_parsing_context().dag_id
    dags: dict[str, DAG] = {}
    for persona in personas.personas.values():
        if wanted is not None and wanted != persona.dag_id:
            continue
        dags[persona.dag_id] = build_persona_dag(persona, personas_path)
    for pid, error in personas.errors.items():
        log.error("persona %r has no DAG: %s", pid, error)
    return dags


def build_custom_dags(personas_path: str | None = None) -> dict[str, DAG]:
    if get_parsing_context().dag_id not in (None, CUSTOM_DAG_ID):
        return {}
    return {CUSTOM_DAG_ID: build_custom_dag(load_personas_lenient(personas_path))}


def check_personas(personas_path: str | None = None) -> None:
    """Raise one ConfigError naming every bad persona (the DAG processor shows it as an import error)."""
    from dpo_tasks.config import ConfigError

    errors = load_personas_lenient(personas_path).errors
    if errors:
        names = ", ".join(f"dpo_{pid}" for pid in errors)
        raise ConfigError(f"{len(errors)} persona DAG(s) not built ({names}):\n" + "\n".join(errors.values()))
