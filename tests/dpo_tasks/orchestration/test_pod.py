"""The stage pods the operator would start (built, never sent: no cluster needed), the `pod-spec`
CLI that prints them, and the `remote` wrapper the pods run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from dpo_tasks.config import default_personas_path
from dpo_tasks.orchestration.pod import DEADLINE_MARGIN_S, GPU_RESOURCE, StagePodOperator, build_pod_operator, label_value
from dpo_tasks.orchestration.podspec import STAGES, render
from dpo_tasks.orchestration.tasks import POD_STAGES, common_args, stage_argv

REPO = Path(__file__).resolve().parents[3]
PRODUCTION = REPO / "deploy" / "personas.production.yaml"
PERSONA = "persona_c_italian_gf"
# Pinned by tag and digest, as checkov's CKV_K8S_43 asks (a tag alone passes the config's own check).
IMAGE = "registry.example/persona-dpo/trainer:1.0.0@sha256:" + "5" * 64
GKE = {"gke": True, "project_id": "my-project", "location": "us-central1", "cluster_name": "dpo-cluster"}
PLAIN = {"gke": False}
K8S_VERSIONS = ["1.30.0", "1.33.0"]
LABEL_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def k8s_personas(tmp_path: Path, kubernetes: dict, *, extra_personas: list[dict] = (), **defaults) -> Path:
    """personas.yaml with the kubernetes runner and these `kubernetes:` settings."""
    raw = yaml.safe_load(default_personas_path().read_text())
    raw["defaults"] |= {"runner": "kubernetes", "kubernetes": {"image": IMAGE, **kubernetes}, **defaults}
    for extra in extra_personas:
        raw["personas"].append({**raw["personas"][0], **extra})
    path = tmp_path / "personas.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def make_run(tmp_path: Path, personas: Path, sets: list[str] = (), *, persona: str = PERSONA) -> dict:
    run_dir = tmp_path / "runs" / persona / "manual_2026-01-01"
    run_dir.mkdir(parents=True)
    shutil.copyfile(personas, run_dir / "personas.yaml")
    return {
        "dag_id": f"dpo_{persona}", "namespace": persona, "persona": persona, "run_dir": str(run_dir),
        "run_id": "manual_2026-01-01", "args": common_args(persona, run_dir / "personas.yaml", run_dir, ["training.epochs=1", *sets]),
        "runner": "kubernetes", "dry_run": False,
    }


STAGING = {"inputs": "gs://bucket/_staging/p/r/train/inputs", "outputs": "gs://bucket/_staging/p/r/train/outputs"}


@pytest.mark.parametrize("stage", list(POD_STAGES))
@pytest.mark.parametrize(
    "settings, operator",
    [pytest.param(GKE, "GKEStartPodOperator", id="gke"), pytest.param(PLAIN, "KubernetesPodOperator", id="plain-kubernetes")],
)
def test_pod_request(tmp_path, stage, settings, operator):
    run = make_run(tmp_path, k8s_personas(tmp_path, settings))
    op = build_pod_operator(run, stage, STAGING)
    assert type(op).__name__ == operator
    pod = op.build_pod_request_obj(dry_run=True)
    (container,) = pod.spec.containers

    assert container.image == IMAGE
    assert container.resources.requests["ephemeral-storage"]
    if stage == "format":  # the tokenizer only: a CPU pod
        assert GPU_RESOURCE not in container.resources.requests and not pod.spec.node_selector and not pod.spec.tolerations
    else:
        assert container.resources.limits[GPU_RESOURCE] == container.resources.requests[GPU_RESOURCE] == "1"
        assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
        assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [(GPU_RESOURCE, "Exists", "NoSchedule")]
    assert pod.spec.restart_policy == "Never"
    assert pod.metadata.namespace == "persona-dpo"
    task = stage.replace("_", "-")
    assert re.fullmatch(rf"dpo-{task}-persona-c-italian-gf-[a-z0-9]+", pod.metadata.name), pod.metadata.name

    # The pod runs the local runner's exact stage call, wrapped to move files through the store.
    assert container.command == ["python", "-m", "dpo_tasks"]
    args = container.args
    sep = args.index("--")
    assert args[sep + 1:] == stage_argv(stage, run)
    assert args[:sep] == [
        "remote", "--pull-from", STAGING["inputs"], "--push-to", STAGING["outputs"],
        *[x for rel in POD_STAGES[stage][1] for x in ("--push", rel)],
    ]
    # The run dir is a scratch volume at the worker's run-dir path.
    mounts = {m.mount_path: m for m in container.volume_mounts}
    assert mounts[run["run_dir"]].name == "scratch" and mounts["/dev/shm"].name == "dshm"

    timeout = op.execution_timeout.total_seconds()
    assert timeout == {"train": 8 * 3600, "sft": 8 * 3600, "format": 3600}.get(stage, 3 * 3600)  # sft: the train pod's resources
    assert pod.spec.active_deadline_seconds == timeout + DEADLINE_MARGIN_S
    assert op.startup_timeout_seconds >= 600 and op.schedule_timeout_seconds >= 600
    assert op.deferrable is True and op.durable is True
    assert op.get_logs is True and op.logging_interval
    assert str(op.on_finish_action).lower().endswith("delete_pod")


def test_each_stage_gets_its_own_resources(tmp_path):
    personas = k8s_personas(tmp_path, {
        **GKE,
        "generate": {"cpu": "2", "memory": "16Gi", "timeout_s": 3600},
        "train": {"cpu": "12", "memory": "85Gi", "timeout_s": 20000,
                  "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}},
        "startup_timeout_s": 1800,
    })
    run = make_run(tmp_path, personas)
    gen = build_pod_operator(run, "generate", STAGING)
    train = build_pod_operator(run, "train", STAGING)
    gen_pod, train_pod = gen.build_pod_request_obj(dry_run=True), train.build_pod_request_obj(dry_run=True)
    assert gen_pod.spec.containers[0].resources.requests["memory"] == "16Gi"
    assert train_pod.spec.containers[0].resources.requests["cpu"] == "12"
    assert train_pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}
    assert gen_pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert (gen.execution_timeout.total_seconds(), train.execution_timeout.total_seconds()) == (3600, 20000)
    assert train.startup_timeout_seconds == 1800
    assert (train.project_id, train.location, train.cluster_name) == ("my-project", "us-central1", "dpo-cluster")


def test_a_runs_conf_cannot_move_the_pod(tmp_path):
    """Image, namespace and service account come from the deployment's personas.yaml, not from the
    run's overrides (a run conf is untrusted)."""
    run = make_run(tmp_path, k8s_personas(tmp_path, PLAIN), [
        'kubernetes.image="evil.example/x:1"', 'kubernetes.namespace="kube-system"', 'kubernetes.service_account_name="admin"',
    ])
    pod = build_pod_operator(run, "train", STAGING).build_pod_request_obj(dry_run=True)
    assert pod.spec.containers[0].image == IMAGE
    assert pod.metadata.namespace == "persona-dpo"
    assert pod.spec.service_account_name is None


def test_gke_without_a_cluster_says_which_setting_is_missing(tmp_path):
    run = make_run(tmp_path, k8s_personas(tmp_path, {"project_id": "my-project"}))
    with pytest.raises(ValueError, match=r"kubernetes\.location, cluster_name are not set for persona 'persona_c_italian_gf'"):
        build_pod_operator(run, "train", STAGING)


def test_a_pod_without_its_cluster_settings_fails_the_task_without_retry(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("PERSONA_DPO_STAGING", str(tmp_path / "staging"))
    run = make_run(tmp_path, k8s_personas(tmp_path, {"project_id": "my-project"}))
    (Path(run["run_dir"]) / "dpo.jsonl").write_text("{}\n")
    with pytest.raises(AirflowFailException, match=r"train pod: kubernetes\.gke is true but kubernetes\.location"):
        StagePodOperator(task_id="train", stage="train", run=run).execute(context={})


def test_the_hugging_face_token_travels_only_as_a_secret_reference(tmp_path, monkeypatch):
    from kubernetes.client import ApiClient

    monkeypatch.setenv("HF_TOKEN", "hf_worker_secret_value")  # a worker's own token never reaches the pod
    run = make_run(tmp_path, k8s_personas(tmp_path, {**PLAIN, "hf_token_secret": {"name": "hf-token", "key": "token"}}))
    pod = build_pod_operator(run, "generate", STAGING).build_pod_request_obj(dry_run=True)
    (container,) = pod.spec.containers
    (hf,) = [e for e in container.env if e.name == "HF_TOKEN"]
    assert hf.value is None
    ref = hf.value_from.secret_key_ref
    assert (ref.name, ref.key, ref.optional) == ("hf-token", "token", False)
    assert "hf_worker_secret_value" not in json.dumps(ApiClient().sanitize_for_serialization(pod))


@pytest.mark.parametrize(
    "cache, volume",
    [
        pytest.param({"pvc": "hf-cache"}, {"persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": False}}, id="pvc"),
        pytest.param({"gcs_bucket": "my-hf-cache", "read_only": True},
                     {"csi": {"driver": "gcsfuse.csi.storage.gke.io", "readOnly": True,
                              "volumeAttributes": {"bucketName": "my-hf-cache", "mountOptions": "implicit-dirs"}}}, id="gcs-fuse"),
    ],
)
def test_an_optional_model_cache_volume_holds_the_hub_cache(tmp_path, cache, volume):
    pod = render(PERSONA, "train", personas_file=str(k8s_personas(tmp_path, {**PLAIN, "model_cache": cache})))
    (model_cache,) = [v for v in pod["spec"]["volumes"] if v["name"] == "model-cache"]
    assert {k: v for k, v in model_cache.items() if k != "name"} == volume
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "model-cache"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert mount["mountPath"] == env["HF_HOME"]
    assert (pod["metadata"].get("annotations") or {}).get("gke-gcsfuse/volumes") == ("true" if "gcs_bucket" in cache else None)


# --- what admission policies read ---------------------------------------------------------------


def policy_findings(pod: dict) -> list[str]:
    """The checkov Kubernetes checks the platform team runs, as properties of a rendered pod: the
    ids of those the pod fails (checkov itself runs from its own tool env: `make lint-k8s`)."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    found = []
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        drop = {d.upper() for d in caps.get("drop") or []}
        add = {a.upper() for a in caps.get("add") or []}
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        checks = {
            "CKV_K8S_20": sc.get("allowPrivilegeEscalation") is False,
            "CKV_K8S_22": sc.get("readOnlyRootFilesystem") is True,
            "CKV_K8S_23": run_as_non_root is True,
            "CKV_K8S_28": "ALL" in drop or "NET_RAW" in drop,
            "CKV_K8S_30": bool(sc),
            "CKV_K8S_31": seccomp in ("RuntimeDefault", "DockerDefault"),
            "CKV_K8S_37": "ALL" in drop and not add,
            "CKV_K8S_40": isinstance(uid, int) and uid >= 10000,
            "CKV_K8S_43": "@sha256:" in c["image"],
        }
        found += [cid for cid, ok in checks.items() if not ok]
    if spec.get("automountServiceAccountToken") is not False:
        found.append("CKV_K8S_38")
    return sorted(set(found))


def all_pods(tmp_path: Path) -> list[tuple[str, dict]]:
    pods = []
    for flavour, settings in (("gke", GKE), ("plain", PLAIN)):
        (tmp_path / flavour).mkdir()
        personas = k8s_personas(tmp_path / flavour, settings)
        for stage in STAGES:
            pods.append((f"{flavour}-{stage}-persona", render(PERSONA, stage, personas_file=str(personas))))
            pods.append((f"{flavour}-{stage}-community", render(PERSONA, stage, personas_file=str(personas), community="vegan-bakers-2")))
    return pods


def test_every_rendered_pod_is_valid_kubernetes_and_passes_the_policy_checks(tmp_path):
    for name, pod in all_pods(tmp_path):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
        assert policy_findings(pod) == [], name


@pytest.mark.parametrize("stage", list(STAGES))
def test_production_profile_pods_are_valid_and_only_want_the_pushed_digest(stage):
    """The profile pins the trainer image by release tag (the digest exists once the image is pushed;
    docs/deployment.md appends it); everything else the policy checks look for is already there."""
    for community in (None, "vegan-bakers"):
        pod = render(PERSONA, stage, personas_file=str(PRODUCTION), community=community)
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
        assert policy_findings(pod) == ["CKV_K8S_43"]
        image = pod["spec"]["containers"][0]["image"]
        assert policy_findings(pod | {"spec": pod["spec"] | {"containers": [pod["spec"]["containers"][0] | {
            "image": f"{image}@sha256:{'a' * 64}"}]}}) == []


@pytest.mark.parametrize(
    "break_it, finding",
    [
        pytest.param(lambda c, s: c["securityContext"].pop("allowPrivilegeEscalation"), "CKV_K8S_20", id="escalation"),
        pytest.param(lambda c, s: c["securityContext"].update(readOnlyRootFilesystem=False), "CKV_K8S_22", id="writable-root"),
        pytest.param(lambda c, s: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "CKV_K8S_37", id="added-capability"),
        pytest.param(lambda c, s: s.pop("automountServiceAccountToken"), "CKV_K8S_38", id="token-mounted"),
        pytest.param(lambda c, s: c.update(image="registry.example/trainer:latest"), "CKV_K8S_43", id="latest-image"),
    ],
)
def test_the_policy_check_catches_a_weakened_pod(tmp_path, break_it, finding):
    pod = render(PERSONA, "train", personas_file=str(k8s_personas(tmp_path, PLAIN)))
    break_it(pod["spec"]["containers"][0], pod["spec"])
    assert finding in policy_findings(pod)


# The longest ids the id rules accept (config.PERSONA_ID_RE, custom.COMMUNITY_ID_RE), digits, and
# underscores, which a label value allows but a pod name does not. `dpo_` + a 63-character persona id
# is a 67-character dag id: its label is cut and hashed.
LONG_PERSONA = "p" + "_1234567890" * 5 + "_123456"  # 63 characters
LIMIT_IDS = [
    pytest.param(LONG_PERSONA, None, id="persona-63-chars"),
    pytest.param("q_9", None, id="persona-short-digit-end"),
    pytest.param(PERSONA, "a" * 63, id="community-63-chars"),
    pytest.param(PERSONA, "x" * 61 + "-9", id="community-63-dash-digit"),
    pytest.param(PERSONA, "1234567890", id="community-digits"),
    pytest.param(PERSONA, "9", id="community-one-digit"),
]


@pytest.mark.parametrize("persona_id, community", LIMIT_IDS)
def test_ids_at_the_limits_render_valid_pods(tmp_path, persona_id, community):
    personas = k8s_personas(tmp_path, PLAIN, extra_personas=[{"id": persona_id}] if persona_id != PERSONA else [])
    for stage in STAGES:
        pod = render(persona_id, stage, personas_file=str(personas), community=community,
                     run_id="scheduled__2026-12-03T07:00:00.123456+00:00")
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
        name = pod["metadata"]["name"]
        assert len(name) <= 63 and DNS_LABEL_RE.fullmatch(name), name
        labels = pod["metadata"]["labels"]
        for key, value in labels.items():
            assert len(value) <= 63 and LABEL_RE.fullmatch(value), (key, value)
        assert labels["persona-dpo.io/persona"] == label_value(persona_id)
        if community:
            assert labels["persona-dpo.io/community"] == label_value(community)
            assert labels["persona-dpo.io/dag-id"] == "dpo_custom"


def test_label_values_that_had_to_change_do_not_collide():
    assert label_value("vegan_bakers") == "vegan_bakers"
    assert len({label_value("bakers_"), label_value("bakers"), label_value("bakers-")}) == 3
    assert label_value("a" * 64) != label_value("a" * 63)


def test_pod_spec_cli_prints_the_pod_as_yaml_for_the_personas_file_in_effect():
    env = {**__import__("os").environ, "PERSONA_DPO_PERSONAS": str(PRODUCTION)}
    out = subprocess.run([sys.executable, "-m", "dpo_tasks", "pod-spec", "--persona", PERSONA, "--stage", "evaluate",
                          "--community", "vegan-bakers"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    pod = yaml.safe_load(out.stdout)
    assert pod["kind"] == "Pod" and pod["metadata"]["labels"]["persona-dpo.io/community"] == "vegan-bakers"
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--") + 1:args.index("--") + 2] == ["evaluate"] and args[-2:] == ["--part", "answers"]
    assert "policies/vegan-bakers" in " ".join(args)


def test_pod_spec_without_an_image_says_so():
    out = subprocess.run([sys.executable, "-m", "dpo_tasks", "pod-spec", "--persona", PERSONA, "--stage", "train"],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PERSONA_DPO_PERSONAS": str(default_personas_path())})
    assert out.returncode != 0
    assert "kubernetes.image is not set" in out.stderr


# --- the operator the DAG holds ----------------------------------------------------------------


def test_stage_pod_operator_stages_inputs_and_resumes_through_the_provider_operator(tmp_path, monkeypatch):
    """The DAG's task stages the run's inputs, starts the provider operator (which defers), and when
    the triggerer reports back, the task runner calls `trigger_reentry` on the DAG's task: it must
    reach the provider operator's handler and then bring the pod's outputs into the run dir."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import TaskDeferred

    monkeypatch.setenv("PERSONA_DPO_STAGING", str(tmp_path / "staging"))
    run = make_run(tmp_path, k8s_personas(tmp_path, PLAIN))
    (Path(run["run_dir"]) / "dpo.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    op = StagePodOperator(task_id="train", stage="train", run=run)
    assert set(op.template_fields) == {"run"}
    seen = {}

    def fake_execute(self, context):
        seen["args"] = self.arguments
        raise TaskDeferred(trigger=None, method_name="trigger_reentry")

    def fake_reentry(self, context, event):
        # What the pod's `remote` call leaves in the staging outputs.
        out = tmp_path / "staging" / PERSONA / run["run_id"] / "train" / "outputs"
        (out / "train" / "adapter").mkdir(parents=True)
        (out / "train" / "adapter" / "adapter_config.json").write_text("{}")
        (out / "summaries").mkdir()
        (out / "summaries" / "train.json").write_text('{"steps": 3}')
        seen["event"] = event

    monkeypatch.setattr(KubernetesPodOperator, "execute", fake_execute)
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", fake_reentry)
    with pytest.raises(TaskDeferred):
        op.execute(context={})
    staged = tmp_path / "staging" / PERSONA / run["run_id"] / "train" / "inputs"
    assert sorted(p.name for p in staged.iterdir()) == ["dpo.jsonl", "personas.yaml"]
    assert seen["args"][-len(run["args"]) - 1:] == ["train", *run["args"]]

    summary = op.resume_execution("trigger_reentry", {"event": {"status": "success"}}, context={})
    assert seen["event"] == {"status": "success"}
    assert summary == {"steps": 3}
    assert (Path(run["run_dir"]) / "train" / "adapter" / "adapter_config.json").exists()


def test_a_pod_that_left_no_output_fails_the_task_naming_it(tmp_path, monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    monkeypatch.setenv("PERSONA_DPO_STAGING", str(tmp_path / "staging"))
    # A reward-model judge (a run may choose it) loads a model: label runs in a pod.
    run = make_run(tmp_path, k8s_personas(tmp_path, PLAIN), ['labeling.judge="reward"'])
    (Path(run["run_dir"]) / "variants.jsonl").write_text("{}\n")
    monkeypatch.setattr(KubernetesPodOperator, "execute", lambda self, context: None)
    out = tmp_path / "staging" / PERSONA / run["run_id"] / "label" / "outputs" / "summaries"
    out.mkdir(parents=True)
    (out / "label.json").write_text("{}")
    op = StagePodOperator(task_id="label", stage="label", run=run)
    with pytest.raises(FileNotFoundError, match=r"the label pod left no labeled\.jsonl"):
        op.execute(context={})


def test_label_with_a_rules_or_api_judge_stays_on_the_worker(tmp_path, monkeypatch):
    from dpo_tasks.orchestration import tasks

    run = make_run(tmp_path, k8s_personas(tmp_path, PLAIN))
    assert not tasks.runs_on_pod("label", run)
    assert tasks.runs_on_pod("label", run | {"args": [*run["args"], "--set", 'labeling.judge="reward"']})
    assert all(tasks.runs_on_pod(s, run) for s in ("generate", "train", "evaluate_answers"))
    assert not any(tasks.runs_on_pod(s, run | {"runner": "local"}) for s in POD_STAGES)
    called = []
    monkeypatch.setattr(tasks, "run_stage", lambda stage, run: called.append(stage) or {"pairs": 0})
    assert StagePodOperator(task_id="label", stage="label", run=run).execute(context={}) == {"pairs": 0}
    assert called == ["label"]


# --- `remote`, what every pod runs -------------------------------------------------------------


def test_remote_pulls_runs_the_stage_and_pushes(tmp_path):
    """`remote` around a light stage (gate): inputs come from the staging dir, outputs go back."""
    staging_in, staging_out = tmp_path / "in", tmp_path / "out"
    (staging_in / "eval").mkdir(parents=True)
    (staging_in / "eval" / "summary_stats.json").write_text(json.dumps(
        {"n": 40, "wins": 30, "losses": 6, "ties": 4, "win_rate": 0.8, "ci_low": 0.65, "ci_high": 0.9}))
    shutil.copyfile(default_personas_path(), staging_in / "personas.yaml")
    run_dir = tmp_path / "pod-run"
    argv = ["gate", *common_args(PERSONA, run_dir / "personas.yaml", run_dir, ["gate.min_win_rate_lower_bound=0.6"])]
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_tasks", "remote", "--pull-from", str(staging_in), "--push-to", str(staging_out),
         "--push", "gate.json", "--push", "summaries/gate.json", "--", *argv],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    gate = json.loads((staging_out / "gate.json").read_text())
    assert gate["decision"] == "promote" and gate["threshold"] == 0.6
    assert (staging_out / "summaries" / "gate.json").exists()


def test_remote_pushes_nothing_when_the_stage_fails(tmp_path):
    staging_in, staging_out = tmp_path / "in", tmp_path / "out"
    staging_in.mkdir()
    shutil.copyfile(default_personas_path(), staging_in / "personas.yaml")
    run_dir = tmp_path / "pod-run"
    argv = ["gate", *common_args(PERSONA, run_dir / "personas.yaml", run_dir, [])]  # no eval summary: gate fails
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_tasks", "remote", "--pull-from", str(staging_in), "--push-to", str(staging_out),
         "--push", "gate.json", "--", *argv],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "no evaluation summary" in proc.stderr
    assert not staging_out.exists()
