"""Untrusted triggers and store contents, table-driven, through the real entry points.

The persona DAG's and `dpo_custom`'s `prepare` tasks (only Airflow's task context is faked),
the CLI (`python -m dpo_tasks rollback`, `db-migrate`), the stores and `sync`. Case ids start
with `refuse-` (a clear error naming the key or value and the rule) or `accept-` (the run or
the operation goes ahead as asked). Every case also checks that nothing already stored changed:
the artifact store's files, and for a refused trigger, that no run directory was made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from dpo_tasks import cli
from dpo_tasks.config import RUN_SETTABLE, ConfigError, load_persona, load_personas_lenient
from dpo_tasks.orchestration import tasks
from dpo_tasks.orchestration.params import persona_params
from dpo_tasks.redact import RedactingFilter, redact
from dpo_tasks.store import StoreError, open_store
from dpo_tasks.store.local import LocalStore
from dpo_tasks.store.manifest import MANIFEST, ManifestError, write_manifest
from dpo_tasks.store.sync import pull
from dpo_tasks.validate import toy_records

PERSONA = "persona_d_japanese_lowsodium"
ROOT = Path(__file__).resolve().parents[2]


def tree_digest(root: Path) -> str:
    """Every file under `root` (names, bytes, link targets): equal digests mean nothing changed."""
    h = hashlib.sha256()
    if root.exists():
        for p in sorted(root.rglob("*")):
            h.update(str(p.relative_to(root)).encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Runs and a store with one served version, in tmp_path; returns (runs root, store root)."""
    runs, store = tmp_path / "runs", tmp_path / "store"
    monkeypatch.setenv("PERSONA_DPO_RUNS", str(runs))
    monkeypatch.setenv("PERSONA_DPO_STORE", str(store))
    for var in ("PERSONA_DPO_UPLOAD_PREFIX", "PERSONA_DPO_LOCAL_UPLOAD_ROOT", "PERSONA_DPO_MAX_INLINE_ROWS", "PERSONA_DPO_MAX_INLINE_BYTES"):
        monkeypatch.delenv(var, raising=False)
    s = LocalStore(store)
    s.upload_version(PERSONA, "v1", version_dir(tmp_path / "seed", "v1"))
    s.promote(PERSONA, "v1", expected_current=None)
    return runs, store


def trigger(monkeypatch, params: dict, conf: dict | None = None) -> None:
    ctx = {"params": params, "dag_run": SimpleNamespace(conf=conf or {}), "run_id": "manual__2026-12-03T07:00:00+00:00"}
    monkeypatch.setattr(tasks, "_context", lambda: ctx)


def form(**values) -> dict:
    params = ParamsDict(persona_params(load_persona(PERSONA).config))
    params.update(values)
    return params.dump()


def version_dir(root: Path, tag: str) -> Path:
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_config.json").write_text(f'{{"r": 8, "tag": "{tag}"}}')
    (root / "model_card.json").write_text(json.dumps({"version": tag}))
    write_manifest(root)
    return root


# --- 1. the persona DAG's trigger: form fields, `overrides`, the feedback window --------------

K8S = "cannot be set by a run"
PERSONA_TRIGGERS = [
    # Deployment settings: where the run executes and with whose rights.
    pytest.param({"overrides": {"kubernetes.image": "attacker/x:latest"}}, None, ["'kubernetes.image'", K8S], id="refuse-k8s-image"),
    pytest.param({"overrides": {"kubernetes.namespace": "airflow"}}, None, ["'kubernetes.namespace'", K8S], id="refuse-k8s-namespace"),
    pytest.param({"overrides": {"kubernetes.service_account_name": "airflow-worker"}}, None,
                 ["'kubernetes.service_account_name'", K8S], id="refuse-k8s-service-account"),
    pytest.param({"overrides": {"kubernetes.kubernetes_conn_id": "other"}}, None, ["'kubernetes.kubernetes_conn_id'"], id="refuse-k8s-conn-id"),
    pytest.param({"overrides": {"kubernetes.run_as_user": 0}}, None, ["'kubernetes.run_as_user'"], id="refuse-k8s-run-as-root"),
    pytest.param({"overrides": {"kubernetes.train.gpu_count": 16}}, None, ["'kubernetes.train.gpu_count'"], id="refuse-k8s-gpu-count"),
    pytest.param({"overrides": {"kubernetes": {"image": "evil"}}}, None, ["'kubernetes.image'"], id="refuse-k8s-nested-form"),
    pytest.param({"overrides": {"training.kubernetes.image": "evil"}}, None, ["'training.kubernetes.image'"], id="refuse-k8s-old-place"),
    pytest.param({"overrides": {"labeling.groq.conn_id": "feedback_db"}}, None, ["'labeling.groq.conn_id'", K8S], id="refuse-groq-conn-id"),
    pytest.param({"overrides": {"evaluation.gemini.gcp_conn_id": "feedback_db"}}, None, ["'evaluation.gemini.gcp_conn_id'"], id="refuse-gemini-conn-id"),
    pytest.param({"overrides": {"evaluation.gemini.project": "someone-else"}}, None, ["'evaluation.gemini.project'"], id="refuse-gemini-project"),
    pytest.param({"overrides": {"model.base": "/etc"}}, None, ["'model.base'", K8S], id="refuse-model-base"),
    pytest.param({"overrides": {"model.sft_adapter": "/tmp/evil"}}, None, ["'model.sft_adapter'"], id="refuse-sft-adapter"),
    pytest.param({"overrides": {"labeling.reward.model_path": "/root"}}, None, ["'labeling.reward.model_path'"], id="refuse-reward-model-path"),
    pytest.param({"overrides": {"labeling.groq.model": "expensive-405b"}}, None, ["'labeling.groq.model'"], id="refuse-groq-model"),
    pytest.param({"overrides": {"evaluation.gemini.model": "gemini-ultra"}}, None, ["'evaluation.gemini.model'"], id="refuse-gemini-model"),
    pytest.param({"overrides": {"labeling.groq.requests_per_minute": 100000}}, None, ["'labeling.groq.requests_per_minute'"], id="refuse-rate-limit"),
    pytest.param({"overrides": {"runner": "kubernetes"}}, None, ["'runner'", K8S], id="refuse-runner"),
    pytest.param({"overrides": {"schedule": "* * * * *"}}, None, ["'schedule'"], id="refuse-schedule"),
    pytest.param({"overrides": {"feedback.min_feedback": 1}}, None, ["'feedback.min_feedback'"], id="refuse-feedback-threshold"),
    pytest.param({"overrides": {"gate.allow_same_judge": True}}, None, ["'gate.allow_same_judge'"], id="refuse-gate-same-judge"),
    pytest.param({"overrides": {"training.epoch": 2}}, None, ["unknown setting(s) 'training.epoch'"], id="refuse-misspelt-key"),
    pytest.param({"overrides": {"training..epochs": 2}}, None, ["bad key 'training..epochs'"], id="refuse-empty-key-part"),
    pytest.param({"overrides": {"training.epochs=1 --set model.base": 2}}, None, ["bad key"], id="refuse-key-with-equals"),
    pytest.param({"overrides": ["training.epochs"]}, None, ["must be an object"], id="refuse-overrides-not-object"),
    pytest.param({"overrides": {"generation.seed": 1, "generation.seed.x": 2}}, None, ["both as a value and as a section"], id="refuse-conflicting-keys"),
    pytest.param({"overrides": {"training": 1}}, None, ["'training'", K8S], id="refuse-whole-section"),
    pytest.param({"overrides": {"training.epochs": -1}}, None, ["training.epochs", "-1"], id="refuse-bad-value-of-allowed-key"),
    pytest.param({}, {"feedback": {"persona_id": "persona_a_korean_spicy", "from_id": 1, "to_id": 2}},
                 ["run conf 'feedback'", PERSONA], id="refuse-feedback-other-persona"),
    pytest.param({}, {"feedback": {"persona_id": PERSONA, "from_id": -5, "to_id": 2}}, ["run conf 'feedback'", "0 <= from_id"], id="refuse-feedback-negative"),
    pytest.param({}, {"feedback": {"persona_id": PERSONA, "from_id": "1; DROP", "to_id": 2}}, ["run conf 'feedback'"], id="refuse-feedback-not-int"),
    pytest.param({}, {"feedback": {"persona_id": PERSONA, "from_id": 9, "to_id": 2}}, ["run conf 'feedback'"], id="refuse-feedback-reversed"),
    pytest.param({}, {"feedback": "all"}, ["run conf 'feedback'"], id="refuse-feedback-not-mapping"),
    pytest.param({"overrides": {"generation.prompt_pool": "/etc/passwd"}}, None, ["'generation.prompt_pool'", "PERSONA_DPO_LOCAL_POOL_ROOT"], id="refuse-pool-dotted-outside"),
    pytest.param({"overrides": {"generation": {"prompt_pool": "/etc/passwd"}}}, None, ["'generation.prompt_pool'"], id="refuse-pool-nested-outside"),
    pytest.param({"prompt_pool": "gs://any-bucket/pool.jsonl"}, None, ["'generation.prompt_pool'", "PERSONA_DPO_POOL_PREFIX"], id="refuse-pool-form-field-gs"),
    # What a run may change.
    pytest.param({"overrides": {"training.learning_rate": 1e-4}}, None, [], id="accept-learning-rate"),
    pytest.param({"overrides": {"generation.seed": 7, "generation.top_p": 0.9}}, None, [], id="accept-generation-prefix"),
    pytest.param({"overrides": {"training.target_modules": ["q_proj", "v_proj"]}}, None, [], id="accept-target-modules"),
    pytest.param({"num_prompts": 3, "judge": "groq", "eval_judge": "gemini"}, None, [], id="accept-counts-and-judges"),
    pytest.param({"min_win_rate_lower_bound": 0.8, "dry_run": True}, None, [], id="accept-gate-and-dry-run"),
    pytest.param({"overrides": {"evaluation.samples_per_case": 3}}, None, [], id="accept-samples-per-case"),
    # k answers per case multiplies generation and API-judge calls: bounded, and useless without sampling.
    pytest.param({"overrides": {"evaluation.samples_per_case": 500}}, None, ["evaluation.samples_per_case", "500"],
                 id="refuse-samples-per-case-unbounded"),
    pytest.param({"overrides": {"evaluation.samples_per_case": 2, "evaluation.temperature": 0}}, None,
                 ["evaluation.samples_per_case = 2", "evaluation.temperature > 0"], id="refuse-samples-per-case-greedy"),
    pytest.param({}, {"feedback": {"persona_id": PERSONA, "from_id": 0, "to_id": 5, "claim_key": "k", "total": 5, "good": 1}},
                 [], id="accept-feedback-window"),
]


@pytest.mark.parametrize("params, conf, fragments", PERSONA_TRIGGERS)
def test_persona_trigger(env, monkeypatch, params, conf, fragments):
    runs, store = env
    before = tree_digest(store)
    # Not validated by Airflow's Param schema first: `prepare` must hold against whatever arrives.
    trigger(monkeypatch, form() | params, conf)
    if fragments:
        with pytest.raises(AirflowFailException) as info:
            tasks.prepare_persona_run(PERSONA)
        for fragment in fragments:
            assert fragment in str(info.value)
        assert not runs.exists(), "a refused conf made a run directory"
    else:
        run = tasks.prepare_persona_run(PERSONA)
        sets = [run["args"][i + 1] for i, a in enumerate(run["args"]) if a == "--set"]
        cfg = tasks.run_persona(run).config
        for key, value in (params.get("overrides") or {}).items():
            assert any(s.startswith(f"{key}=") for s in sets), key
        assert run["runner"] == load_persona(PERSONA).config.runner
        assert run["dry_run"] is bool(params.get("dry_run"))
        assert cfg.model == load_persona(PERSONA).config.model  # a run never moves the model
    assert tree_digest(store) == before


@pytest.mark.parametrize(
    "run_id, expected",
    [
        pytest.param("../../escape", "escape", id="accept-run-id-traversal-flattened"),
        pytest.param("/etc/cron.d/x", "etc_cron.d_x", id="accept-run-id-absolute-flattened"),
        pytest.param("..", "run", id="accept-run-id-dotdot-only"),
        pytest.param("a\nb", "a_b", id="accept-run-id-newline-flattened"),
    ],
)
def test_a_callers_dag_run_id_stays_one_directory_under_the_runs_root(env, monkeypatch, run_id, expected):
    """The REST API lets a caller choose dag_run_id: it becomes one safe name under the runs root."""
    runs, store = env
    ctx = {"params": form(), "dag_run": SimpleNamespace(conf={}), "run_id": run_id}
    monkeypatch.setattr(tasks, "_context", lambda: ctx)
    run = tasks.prepare_persona_run(PERSONA)
    assert Path(run["run_dir"]) == runs / PERSONA / expected and run["run_id"] == expected
    assert [p.name for p in runs.iterdir()] == [PERSONA]


def test_the_old_runner_field_in_a_conf_changes_nothing(env, monkeypatch):
    trigger(monkeypatch, form() | {"training_runner": "kubernetes"})
    assert tasks.prepare_persona_run(PERSONA)["runner"] == load_persona(PERSONA).config.runner


def test_every_run_settable_key_is_a_real_setting_and_is_documented():
    doc = (ROOT / "docs" / "security.md").read_text()
    for key in RUN_SETTABLE:
        shown = key + "*" if key.endswith(".") else key
        assert f"`{shown}`" in doc, f"docs/security.md does not list {shown!r}"


# --- 2. dpo_custom: communityId, dataset / dataset_uri, caps, overrides -----------------------

ROW = {"prompt": "A quick miso soup?", "chosen": "Miso soup with tofu and wakame, low-sodium miso.", "rejected": "Salty soup."}


def custom(**values) -> dict:
    base = {"communityId": None, "dataset": None, "dataset_uri": None, "persona": PERSONA,
            "eval_judge": "rules", "epochs": 1, "min_win_rate_lower_bound": 0.5, "dry_run": False, "overrides": {}}
    return base | values


DNS = "must be a lowercase DNS label"
CUSTOM_CASES = [
    pytest.param({"communityId": "vegan\n"}, None, ["'vegan\\n'", DNS], id="refuse-community-trailing-newline"),
    pytest.param({"communityId": "Vegan"}, None, ["'Vegan'", DNS], id="refuse-community-uppercase"),
    pytest.param({"communityId": "-vegan"}, None, [DNS], id="refuse-community-leading-dash"),
    pytest.param({"communityId": "vegan-"}, None, [DNS], id="refuse-community-trailing-dash"),
    pytest.param({"communityId": "vegan_bakers"}, None, [DNS], id="refuse-community-underscore"),
    pytest.param({"communityId": "a" * 64}, None, [DNS, "at most 63"], id="refuse-community-too-long"),
    pytest.param({"communityId": "vegan bakers"}, None, [DNS], id="refuse-community-space"),
    pytest.param({"communityId": "végan"}, None, [DNS], id="refuse-community-non-ascii"),
    pytest.param({"communityId": "../etc"}, None, ["'../etc'", DNS], id="refuse-community-traversal"),
    pytest.param({"communityId": "policies/x"}, None, [DNS], id="refuse-community-slash"),
    pytest.param({"communityId": ""}, None, [DNS], id="refuse-community-empty"),
    pytest.param({"communityId": 42}, None, ["42", DNS], id="refuse-community-number"),
    pytest.param({"communityId": "latest"}, None, ["'latest'", "reserved"], id="refuse-community-latest"),
    pytest.param({"communityId": "LATEST"}, None, [DNS], id="refuse-community-LATEST"),
    pytest.param({"communityId": "history"}, None, ["reserved"], id="refuse-community-history"),
    pytest.param({"communityId": "staging"}, None, ["reserved"], id="refuse-community-staging"),
    pytest.param({"communityId": "c1", "persona": PERSONA + "\n"}, None, ["run conf 'persona'"], id="refuse-persona-trailing-newline"),
    pytest.param({"communityId": "c1", "persona": "persona_nobody"}, None, ["unknown persona id 'persona_nobody'"], id="refuse-persona-unknown"),
    pytest.param({"communityId": "c1", "overrides": {"kubernetes.image": "evil"}}, None, ["'kubernetes.image'", K8S], id="refuse-custom-k8s-image"),
    pytest.param({"communityId": "c1", "overrides": {"labeling.groq.conn_id": "feedback_db"}}, None, ["'labeling.groq.conn_id'"], id="refuse-custom-conn-id"),
    pytest.param({"communityId": "c1", "overrides": {"model.base": "/m"}}, None, ["'model.base'"], id="refuse-custom-model"),
    pytest.param({"communityId": "c1", "training_runner": "kubernetes"}, None, [], id="accept-custom-old-runner-field-ignored"),
    pytest.param({"communityId": "a"}, None, [], id="accept-community-one-char"),
    pytest.param({"communityId": "a" * 63}, None, [], id="accept-community-63"),
    pytest.param({"communityId": "vegan-bakers-2"}, None, [], id="accept-community-dashes"),
    pytest.param({"communityId": "c1", "overrides": {"training.beta": 0.2}}, None, [], id="accept-custom-hyperparameter"),
]


@pytest.mark.parametrize("values, _unused, fragments", CUSTOM_CASES)
def test_custom_conf(env, monkeypatch, values, _unused, fragments):
    runs, store = env
    before = tree_digest(store)
    trigger(monkeypatch, custom(dataset=[ROW], **values))
    if fragments:
        with pytest.raises(AirflowFailException) as info:
            tasks.prepare_custom_run()
        for fragment in fragments:
            assert fragment in str(info.value)
        assert not runs.exists(), "a refused conf made a run directory"
    else:
        run = tasks.prepare_custom_run()
        assert run["namespace"] == f"policies/{values['communityId']}"
        assert run["runner"] == load_persona(PERSONA).config.runner
        assert [json.loads(ln) for ln in open(f"{run['run_dir']}/dpo.jsonl")] == [ROW]
    assert tree_digest(store) == before


OUTSIDE = "must lie under"
URI_CASES = [
    # (uri built from the fixture's paths, env to set, fragments or [] for acceptance)
    pytest.param("/etc/passwd", "local", ["'/etc/passwd'", OUTSIDE], id="refuse-uri-etc-passwd"),
    pytest.param("/proc/self/environ", "local", [OUTSIDE], id="refuse-uri-proc-environ"),
    pytest.param("file:///etc/passwd", "local", [OUTSIDE], id="refuse-uri-file-scheme-outside"),
    pytest.param("{uploads}/other/data.jsonl", "local", [OUTSIDE, "/c1"], id="refuse-uri-other-community"),
    pytest.param("{uploads}/c1/../other/data.jsonl", "local", [OUTSIDE], id="refuse-uri-dotdot-escape"),
    pytest.param("{uploads}/c1/link.jsonl", "local", [OUTSIDE], id="refuse-uri-symlink-out"),
    pytest.param("{uploads}/c1", "local", [OUTSIDE], id="refuse-uri-the-area-itself"),
    pytest.param("c1/data.jsonl", "local", ["absolute path"], id="refuse-uri-relative"),
    pytest.param("{uploads}/c1/data.jsonl", None, ["only gs:// URIs"], id="refuse-uri-local-without-setting"),
    pytest.param("http://169.254.169.254/computeMetadata/v1/", "local", ["only gs:// URIs"], id="refuse-uri-http-metadata"),
    pytest.param("s3://bucket/c1/data.jsonl", "gs", ["only gs:// URIs"], id="refuse-uri-s3"),
    pytest.param("gs://uploads-bucket/up/c1/data.jsonl", None, ["accepts no gs:// uploads"], id="refuse-uri-gs-without-prefix"),
    pytest.param("gs://other-bucket/up/c1/data.jsonl", "gs", [OUTSIDE, "gs://uploads-bucket/up/c1/"], id="refuse-uri-gs-other-bucket"),
    pytest.param("gs://uploads-bucket/up/c2/data.jsonl", "gs", [OUTSIDE], id="refuse-uri-gs-other-community"),
    pytest.param("gs://uploads-bucket/up/c1x/data.jsonl", "gs", [OUTSIDE], id="refuse-uri-gs-prefix-sibling"),
    pytest.param("gs://uploads-bucket/up/c1/../c2/data.jsonl", "gs", ["'..' segment"], id="refuse-uri-gs-dotdot"),
    pytest.param("gs://uploads-bucket/up/c1//data.jsonl", "gs", ["'/data.jsonl'", "is absolute"], id="refuse-uri-gs-double-slash"),
    pytest.param("gs://uploads-bucket/up/c1/", "gs", ["empty"], id="refuse-uri-gs-area-itself"),
    pytest.param("gs://uploads-bucket/up/c1/data.jsonl\n", "gs", ["control"], id="refuse-uri-gs-newline"),
    pytest.param("{uploads}/c1/data.jsonl", "local", [], id="accept-uri-local-in-area"),
    pytest.param("file://{uploads}/c1/sub/data.jsonl", "local", [], id="accept-uri-file-scheme-in-area"),
]


@pytest.mark.parametrize("uri, setting, fragments", URI_CASES)
def test_custom_dataset_uri(env, monkeypatch, tmp_path, uri, setting, fragments):
    runs, store = env
    uploads = tmp_path / "uploads"
    for sub in ("c1", "c1/sub", "other"):
        (uploads / sub).mkdir(parents=True, exist_ok=True)
        (uploads / sub / "data.jsonl").write_text(json.dumps(ROW) + "\n")
    (uploads / "c1" / "link.jsonl").symlink_to("/etc/passwd")
    if setting == "local":
        monkeypatch.setenv("PERSONA_DPO_LOCAL_UPLOAD_ROOT", str(uploads))
    elif setting == "gs":
        monkeypatch.setenv("PERSONA_DPO_UPLOAD_PREFIX", "gs://uploads-bucket/up/")
    before = tree_digest(store), tree_digest(uploads)
    trigger(monkeypatch, custom(communityId="c1", dataset_uri=uri.format(uploads=uploads)))
    if fragments:
        with pytest.raises(AirflowFailException) as info:
            tasks.prepare_custom_run()
        for fragment in fragments:
            assert fragment in str(info.value)
        assert not runs.exists(), "a refused conf made a run directory"
    else:
        run = tasks.prepare_custom_run()
        assert [json.loads(ln) for ln in open(f"{run['run_dir']}/dpo.jsonl")] == [ROW]
    assert (tree_digest(store), tree_digest(uploads)) == before


@pytest.mark.parametrize(
    "rows, limits, fragments",
    [
        pytest.param(4, {"PERSONA_DPO_MAX_INLINE_ROWS": "3"}, ["4 rows", "at most 3", "PERSONA_DPO_MAX_INLINE_ROWS"], id="refuse-inline-rows"),
        pytest.param(2, {"PERSONA_DPO_MAX_INLINE_BYTES": "200"}, ["bytes", "at most 200", "PERSONA_DPO_MAX_INLINE_BYTES"], id="refuse-inline-bytes"),
        pytest.param(2, {"PERSONA_DPO_MAX_INLINE_ROWS": "many"}, ["PERSONA_DPO_MAX_INLINE_ROWS", "'many'"], id="refuse-bad-limit-setting"),
        pytest.param(3, {"PERSONA_DPO_MAX_INLINE_ROWS": "3"}, [], id="accept-inline-at-the-cap"),
    ],
)
def test_inline_dataset_caps(env, monkeypatch, rows, limits, fragments):
    runs, store = env
    for k, v in limits.items():
        monkeypatch.setenv(k, v)
    before = tree_digest(store)
    trigger(monkeypatch, custom(communityId="c1", dataset=toy_records(load_persona(PERSONA), rows, seed=5)))
    if fragments:
        with pytest.raises(AirflowFailException) as info:
            tasks.prepare_custom_run()
        for fragment in fragments:
            assert fragment in str(info.value)
        assert not runs.exists()
    else:
        assert tasks.prepare_custom_run()["dataset"]["usable"] == rows
    assert tree_digest(store) == before


# --- 3. ids elsewhere: a persona id with a newline never registers ------------------------------


@pytest.mark.parametrize(
    "pid, ok",
    [
        pytest.param("persona_x\n", False, id="refuse-persona-id-newline"),
        pytest.param("persona_x_", False, id="refuse-persona-id-trailing-underscore"),
        pytest.param("Persona_x", False, id="refuse-persona-id-uppercase"),
        pytest.param("p" * 64, False, id="refuse-persona-id-64"),
        pytest.param("persona_x", True, id="accept-persona-id"),
    ],
)
def test_persona_ids_match_completely(tmp_path, pid, ok):
    path = tmp_path / "personas.yaml"
    path.write_text(yaml.safe_dump({"personas": [{"id": pid, "name": "X", "cuisines": ["a"], "preferred_ingredients": ["b"]}]}))
    loaded = load_personas_lenient(path)
    if ok:
        assert list(loaded.personas) == [pid]
    else:
        assert not loaded.personas
        assert "persona id" in " ".join(loaded.errors.values()) and "must match" in " ".join(loaded.errors.values())


# --- 4. the store: names, manifests, pulls -----------------------------------------------------


@pytest.mark.parametrize(
    "namespace, version, fragment",
    [
        pytest.param(PERSONA, "../escape", "'..' segment", id="refuse-version-dotdot"),
        pytest.param(PERSONA, "/abs", "is absolute", id="refuse-version-absolute"),
        pytest.param(PERSONA, ".hidden", "hidden", id="refuse-version-hidden"),
        pytest.param(PERSONA, "LATEST", "uses for itself", id="refuse-version-LATEST"),
        pytest.param(PERSONA, "HISTORY.jsonl", "uses for itself", id="refuse-version-HISTORY"),
        pytest.param(PERSONA, "MANIFEST.json", "uses for itself", id="refuse-version-MANIFEST"),
        pytest.param(PERSONA, "a/b", "'/'", id="refuse-version-slash"),
        pytest.param(PERSONA, "v2\n", "control", id="refuse-version-newline"),
        pytest.param(PERSONA, "", "empty", id="refuse-version-empty"),
        pytest.param("../outside", "v2", "'..' segment", id="refuse-namespace-dotdot"),
        pytest.param("/etc", "v2", "is absolute", id="refuse-namespace-absolute"),
        pytest.param("policies/../x", "v2", "'..' segment", id="refuse-namespace-inner-dotdot"),
        pytest.param("policies//x", "v2", "empty path segment", id="refuse-namespace-double-slash"),
        pytest.param("policies/LATEST", "v2", "uses for itself", id="refuse-namespace-LATEST"),
        pytest.param("a\\b", "v2", "backslash", id="refuse-namespace-backslash"),
        pytest.param("policies/c1", "v2", None, id="accept-community-namespace"),
    ],
)
def test_store_names(env, tmp_path, namespace, version, fragment):
    _, root = env
    store = open_store(str(root))
    src = version_dir(tmp_path / "src", "v2")
    before = tree_digest(root)
    if fragment is None:
        store.upload_version(namespace, version, src)
        assert store.list_versions(namespace) == [version]
        return
    with pytest.raises(StoreError) as info:
        store.upload_version(namespace, version, src)
    assert fragment in str(info.value) and repr(version if "v2" != version else namespace) in str(info.value)
    assert tree_digest(root) == before
    assert not (tmp_path / "escape").exists() and not (tmp_path / "outside").exists()


def _manifest(entries: list) -> str:
    return json.dumps({"format": 1, "files": entries})


SHA = "0" * 64
MANIFEST_CASES = [
    pytest.param([{"path": "../outside.bin", "size": 1, "sha256": SHA}], "'..' segment", id="refuse-manifest-dotdot"),
    pytest.param([{"path": "/etc/passwd", "size": 1, "sha256": SHA}], "is absolute", id="refuse-manifest-absolute"),
    pytest.param([{"path": "adapter/../../x", "size": 1, "sha256": SHA}], "'..' segment", id="refuse-manifest-inner-dotdot"),
    pytest.param([{"path": "C:\\x", "size": 1, "sha256": SHA}], "backslash", id="refuse-manifest-backslash"),
    pytest.param([{"path": "a\nb", "size": 1, "sha256": SHA}], "control", id="refuse-manifest-newline"),
    pytest.param(["adapter/x"], "must be an object", id="refuse-manifest-entry-not-object"),
    pytest.param([{"path": "x", "size": -1, "sha256": SHA}], "non-negative integer", id="refuse-manifest-negative-size"),
    pytest.param([{"path": "x", "size": 1, "sha256": "zz"}], "64 lowercase hex", id="refuse-manifest-bad-sha"),
    pytest.param([{"path": "x", "size": 1, "sha256": SHA}, {"path": "x", "size": 1, "sha256": SHA}], "listed twice", id="refuse-manifest-duplicate"),
    pytest.param([{"path": MANIFEST, "size": 1, "sha256": SHA}], "names the manifest itself", id="refuse-manifest-lists-itself"),
]


@pytest.mark.parametrize("entries, fragment", MANIFEST_CASES)
def test_manifest_paths_are_contained(env, tmp_path, entries, fragment):
    """A version whose manifest points outside it is refused by upload, and by download of a stored copy."""
    _, root = env
    store = LocalStore(root)
    src = version_dir(tmp_path / "src", "v2")
    (src / MANIFEST).write_text(_manifest(entries))
    before = tree_digest(root)
    with pytest.raises(ManifestError) as info:
        store.upload_version(PERSONA, "v2", src)
    assert fragment in str(info.value)
    assert tree_digest(root) == before and not (tmp_path / "outside.bin").exists()
    # The same manifest planted in the store: download and promote refuse it, LATEST stays.
    planted = root / PERSONA / "v3"
    planted.mkdir()
    (planted / MANIFEST).write_text(_manifest(entries))
    with pytest.raises(ManifestError):
        store.download(PERSONA, "v3", tmp_path / "cache" / "v3")
    with pytest.raises(ManifestError):
        store.promote(PERSONA, "v3")
    assert store.latest(PERSONA) == "v1"


def test_a_symlink_inside_a_version_does_not_let_verification_read_outside(env, tmp_path):
    _, root = env
    src = version_dir(tmp_path / "src", "v2")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    (src / "adapter" / "leak.txt").symlink_to(secret)
    write_manifest(src)
    before = tree_digest(root)
    with pytest.raises(ManifestError, match="resolves outside"):
        LocalStore(root).upload_version(PERSONA, "v2", src)
    assert tree_digest(root) == before


def test_sync_pull_refuses_a_link_out_of_the_source_and_writes_nothing(tmp_path):
    src, dest = tmp_path / "staging", tmp_path / "run"
    (src / "train").mkdir(parents=True)
    (src / "train" / "a.txt").write_text("a")
    (src / "train" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="outside it"):
        pull(str(src), dest)
    assert not dest.exists() or not any(dest.rglob("*"))


# --- 5. rollback by history, through the CLI ---------------------------------------------------


def _publish(store: LocalStore, tmp_path: Path, version: str, *, promote: bool = True) -> None:
    store.upload_version(PERSONA, version, version_dir(tmp_path / f"src-{version}", version))
    if promote:
        from dpo_tasks.store.base import move_latest

        move_latest(store, PERSONA, version, expected_current=store.latest(PERSONA), action="publish")


def rollback(root: Path, *args: str) -> int:
    return cli.main(["rollback", "--persona", PERSONA, "--store", str(root), *args])


ROLLBACK_CASES = [
    # (versions published in order; "!" marks uploaded but never served), steps of (args, expected rc, LATEST after, stderr fragment)
    pytest.param(["v1", "v2"], [((), 0, "v1", "")], id="accept-rollback-to-previous-served"),
    pytest.param(["v1", "v2", "v3"], [((), 0, "v2", ""), ((), 0, "v1", "")], id="accept-rollback-twice-walks-back"),
    pytest.param(["v1", "v2"], [((), 0, "v1", ""), ((), 1, "v1", "oldest served version")], id="refuse-rollback-past-the-oldest"),
    pytest.param(["v1", "!v2", "v3"], [((), 0, "v1", "")], id="accept-rollback-skips-never-served"),
    pytest.param(["v1", "!v2"], [(("--to", "v2"), 1, "v1", "never served")], id="refuse-rollback-to-dry-run-version"),
    pytest.param(["v1", "!v2"], [(("--to", "v2", "--force"), 0, "v2", "never been served before")], id="accept-forced-rollback-to-never-served"),
    pytest.param(["v1", "v2"], [(("--force",), 1, "v2", "needs --to")], id="refuse-force-without-to"),
    pytest.param(["v1", "v2"], [(("--to", "v9"), 1, "v2", "'v9'")], id="refuse-rollback-unknown-version"),
    pytest.param(["v1", "v2"], [(("--to", "v2"), 1, "v2", "already the served version")], id="refuse-rollback-to-current"),
    pytest.param(["v1", "v2", "v3"], [(("--to", "v1"), 0, "v1", ""), (("--to", "v3"), 0, "v3", "")], id="accept-rollback-to-named-served"),
    pytest.param(["v1", "v2", "v3"], [(("--to", "../v1"), 1, "v3", "version '../v1'")], id="refuse-rollback-to-traversal"),
]


@pytest.mark.parametrize("published, steps", ROLLBACK_CASES)
def test_rollback_by_history(tmp_path, capsys, published, steps):
    root = tmp_path / "store"
    store = LocalStore(root)
    for v in published:
        _publish(store, tmp_path, v.lstrip("!"), promote=not v.startswith("!"))
    for args, rc, latest, fragment in steps:
        versions_before = {v: tree_digest(root / PERSONA / v) for v in store.list_versions(PERSONA)}
        capsys.readouterr()
        assert rollback(root, *args) == rc
        err = capsys.readouterr().err
        assert fragment in err
        assert "Traceback" not in err
        assert store.latest(PERSONA) == latest
        # Versions are immutable whatever happened.
        assert {v: tree_digest(root / PERSONA / v) for v in store.list_versions(PERSONA)} == versions_before
    last = store.history(PERSONA)[-1]
    if "--force" in steps[-1][0] and steps[-1][1] == 0:
        assert last["forced"] is True and last["action"] == "rollback"
        assert "never been served" in store.model_card(PERSONA, latest)["serving"]["note"]


def test_rollback_without_history_needs_a_forced_named_version(tmp_path, capsys):
    """A store from before the history existed: its LATEST counts as served, nothing else does."""
    root = tmp_path / "store"
    store = LocalStore(root)
    for v in ("v1", "v2"):
        _publish(store, tmp_path, v, promote=False)
    (root / PERSONA / "LATEST").write_text("v2\n")
    assert rollback(root) == 1 and "oldest served version" in capsys.readouterr().err
    assert rollback(root, "--to", "v1") == 1 and "never served" in capsys.readouterr().err
    assert rollback(root, "--to", "v1", "--force") == 0
    assert store.latest(PERSONA) == "v1"


def test_latest_that_is_a_directory_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "store"
    _publish(LocalStore(root), tmp_path, "v1", promote=False)
    (root / PERSONA / "LATEST").mkdir()
    assert rollback(root) == 2
    err = capsys.readouterr().err
    assert str(root / PERSONA / "LATEST") in err and "directory" in err and "Traceback" not in err


def test_publish_and_rollback_go_through_after_promotion(tmp_path, monkeypatch):
    from dpo_tasks.store import base

    seen = []
    monkeypatch.setattr(base, "after_promotion", lambda store, ns, rec: seen.append((ns, rec["version"], rec["action"])))
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "v1")
    _publish(store, tmp_path, "v2")
    store.rollback(PERSONA)
    assert seen == [(PERSONA, "v1", "publish"), (PERSONA, "v2", "publish"), (PERSONA, "v1", "rollback")]


# --- 6. redaction ------------------------------------------------------------------------------

REDACT_CASES = [
    pytest.param("postgresql://u:s3cret-pw@h:5432/db", "s3cret-pw", "postgresql://u:***@h:5432/db", id="redact-url-userinfo"),
    pytest.param("postgresql://u:p@ss@h/db", "p@ss", "postgresql://u:***@h/db", id="redact-url-password-with-at"),
    pytest.param("postgresql://h/db?user=u&password=s3cret&sslmode=require", "s3cret", "password=***&sslmode", id="redact-query-password"),
    pytest.param("host=h user=u password=s3cret dbname=d", "s3cret", "password=*** dbname", id="redact-dsn-password"),
    pytest.param("host=h password='s3 cret x' dbname=d", "cret", "password=*** dbname", id="redact-dsn-quoted-password"),
    pytest.param("Authorization: Bearer gsk_live_abcdefghijklmnopqrst", "abcdefghijklmnop", "Authorization: Bearer ***", id="redact-bearer-header"),
    pytest.param("{'x-goog-api-key': 'AIzaSyD-secretsecretsecretsecret12345'}", "secretsecret", "'x-goog-api-key': '***'", id="redact-header-dict"),
    pytest.param("x-api-key: k3y-value-123", "k3y-value", "x-api-key: ***", id="redact-x-api-key"),
    pytest.param('{"password": "hunter22"}', "hunter22", '"password": "***"', id="redact-json-field"),
    pytest.param("https://api.example/v1?api_key=zzz-secret", "zzz-secret", "api_key=***", id="redact-api-key-query"),
    pytest.param("Invalid API Key: gsk_ABCDEFGHIJKLMNOPQRSTUV", "gsk_ABCDEF", "Invalid API Key: ***", id="redact-groq-key-shape"),
    pytest.param("token=ya29.a0AfH6SMBsecret", "a0AfH6SMB", "token=***", id="redact-oauth-token"),
    pytest.param("max_tokens=400 tokens_per_minute=30 monkey=banana", None, "max_tokens=400 tokens_per_minute=30 monkey=banana", id="accept-no-credential-untouched"),
]


@pytest.mark.parametrize("text, secret, expected_fragment", REDACT_CASES)
def test_redact_forms(text, secret, expected_fragment):
    out = redact(text)
    assert expected_fragment in out
    if secret is not None:
        assert secret not in out


@pytest.mark.parametrize(
    "url, secret",
    [
        pytest.param("postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere", "s3cret-pw", id="redact-db-url-userinfo"),
        pytest.param("postgresql://postgres@127.0.0.1:1/nowhere?password=s3cret-q", "s3cret-q", id="redact-db-url-query"),
        pytest.param("host=127.0.0.1 port=1 user=postgres password=s3cret-kv dbname=nowhere", "s3cret-kv", id="redact-db-dsn"),
    ],
)
def test_feedback_db_connection_errors_are_redacted(capsys, url, secret):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["db-migrate", "--db-url", url])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cannot connect to the feedback database" in err
    assert secret not in err and "***" in err and "Traceback" not in err


def test_api_judge_errors_and_logs_are_redacted(monkeypatch, tmp_path, caplog):
    from dpo_tasks.config import GroqConfig
    from dpo_tasks.judges.base import PairItem
    from dpo_tasks.judges.groq import GroqJudge
    from tests.dpo_tasks.judges.fake_servers import FakeLLMServer, Reply

    key = "gsk_test_SECRET_do_not_leak_4242"
    script = lambda req, attempt: Reply(status=401, error_message=f"Invalid API Key {key}; header Authorization: Bearer {key}")  # noqa: E731
    with FakeLLMServer("groq", script) as srv:
        monkeypatch.setenv("GROQ_BASE_URL", srv.url)
        monkeypatch.setenv("GROQ_API_KEY", key)
        cfg = GroqConfig(max_retries=0, timeout_s=3.0, hard_constraint_shortcut=False)
        with caplog.at_level(logging.WARNING):
            [j] = GroqJudge(cfg, cache_dir=tmp_path).judge_pairs(load_persona(PERSONA), [PairItem(id="p", prompt="q", response_a="a", response_b="b")])
    assert j.status == "failed" and "401" in j.reason
    assert key not in j.reason and key not in caplog.text
    assert "***" in j.reason


def test_cli_log_lines_are_redacted():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connecting to %s", ("postgresql://u:pw-123456@h/db",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "connecting to postgresql://u:***@h/db"
