"""GCSStore against gcp-storage-emulator (real google-cloud-storage client code, real HTTP)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from dpo_tasks.store.base import StoreError, VersionNotFound, open_store
from dpo_tasks.store.gcs import GCSStore, split_gs_uri
from dpo_tasks.store.manifest import ManifestError

NS = "persona_e_mexican_vegan"


@pytest.fixture
def store(gcs_uri) -> GCSStore:
    return GCSStore(gcs_uri)


@pytest.fixture
def published(store, tmp_path, make_version_dir):
    """v1 and v2 uploaded; LATEST on v1."""
    for tag in ("v1", "v2"):
        store.upload_version(NS, tag, make_version_dir(tmp_path / tag, tag))
    store.promote(NS, "v1", expected_current=None)
    return store


def _objects(store: GCSStore, sub: str) -> set[str]:
    prefix = f"{store.prefix}/{sub}/"
    return {b.name[len(prefix):] for b in store.client.list_blobs(store.bucket_name, prefix=prefix)}


@pytest.mark.parametrize(
    "uri, expected",
    [
        pytest.param("gs://b", ("b", ""), id="bucket-only"),
        pytest.param("gs://b/a/c/", ("b", "a/c"), id="prefix-trailing-slash"),
    ],
)
def test_split_gs_uri(uri, expected):
    assert split_gs_uri(uri) == expected


@pytest.mark.parametrize("uri", [pytest.param("gs://", id="no-bucket"), pytest.param("s3://b/x", id="not-gcs")])
def test_split_gs_uri_rejects(uri):
    with pytest.raises(StoreError, match="gs://"):
        split_gs_uri(uri)


def test_open_store_picks_gcs(gcs_uri):
    store = open_store(gcs_uri)
    assert isinstance(store, GCSStore) and store.uri == gcs_uri


def test_upload_version_is_complete_and_verified_but_not_promoted(store, tmp_path, make_version_dir):
    src = make_version_dir(tmp_path / "v1", "v1")
    uri = store.upload_version(NS, "v1", src)

    assert uri == f"{store.uri}/{NS}/v1"
    assert store.list_versions(NS) == ["v1"]
    assert store.latest(NS) is None
    assert _objects(store, f"{NS}/v1") == {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    assert len(store.verify(NS, "v1")["files"]) == 6


def test_upload_refuses_to_overwrite_a_complete_version(store, tmp_path, make_version_dir):
    store.upload_version(NS, "v1", make_version_dir(tmp_path / "a", "v1"))
    with pytest.raises(StoreError, match="immutable"):
        store.upload_version(NS, "v1", make_version_dir(tmp_path / "b", "other"))


def test_upload_refuses_a_source_that_fails_its_manifest(store, tmp_path, make_version_dir):
    src = make_version_dir(tmp_path / "v1", "v1")
    (src / "metrics.json").write_text('{"tampered": true}\n')
    with pytest.raises(ManifestError, match="metrics.json"):
        store.upload_version(NS, "v1", src)
    assert store.list_versions(NS) == []


def test_verify_catches_a_corrupted_stored_object(store, tmp_path, make_version_dir):
    store.upload_version(NS, "v1", make_version_dir(tmp_path / "v1", "v1"))
    store.bucket.blob(f"{store.prefix}/{NS}/v1/config.yaml").upload_from_string("truncated")
    with pytest.raises(ManifestError, match="config.yaml"):
        store.promote(NS, "v1")
    assert store.latest(NS) is None


def test_promote_and_expected_current(published):
    assert published.latest(NS) == "v1"
    with pytest.raises(StoreError, match="expected None"):
        published.promote(NS, "v2", expected_current=None)
    published.promote(NS, "v2", expected_current="v1")
    assert published.latest(NS) == "v2"
    with pytest.raises(VersionNotFound, match="'v9'"):
        published.promote(NS, "v9")
    assert published.latest(NS) == "v2"


def test_rollback(published):
    published.promote(NS, "v2")
    assert published.rollback(NS) == "v1"
    assert published.latest(NS) == "v1"
    with pytest.raises(StoreError, match="oldest"):
        published.rollback(NS)
    assert published.rollback(NS, to="v2") == "v2"
    with pytest.raises(VersionNotFound):
        published.rollback(NS, to="v7")
    assert published.latest(NS) == "v2"


_UPLOADER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dpo_tasks.store.gcs import GCSStore
    store = GCSStore(sys.argv[1])
    store.upload_version(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    if sys.argv[5] == "promote":
        store.promote(sys.argv[2], sys.argv[3])
    """
)


def test_crash_mid_upload_leaves_latest_on_the_previous_version(published, tmp_path, make_version_dir):
    src = make_version_dir(tmp_path / "v3", "v3", extra_files=300)
    proc = subprocess.Popen([sys.executable, "-c", _UPLOADER, published.uri, NS, "v3", str(src), "promote"])
    deadline = time.monotonic() + 60
    while len(_objects(published, f"{NS}/v3")) < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "the uploader finished before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()

    left = _objects(published, f"{NS}/v3")
    assert 5 <= len(left) < 306 and "MANIFEST.json" not in left
    assert published.latest(NS) == "v1"
    assert published.list_versions(NS) == ["v1", "v2"]
    with pytest.raises(VersionNotFound):
        published.promote(NS, "v3")
    with pytest.raises(VersionNotFound):
        published.download(NS, "v3", tmp_path / "cache" / "v3")

    # The rerun overwrites the leftovers and completes.
    published.upload_version(NS, "v3", src)
    published.promote(NS, "v3", expected_current="v1")
    assert published.latest(NS) == "v3"


def test_crash_between_upload_and_promote(published, tmp_path, make_version_dir):
    src = make_version_dir(tmp_path / "v3", "v3")
    subprocess.run([sys.executable, "-c", _UPLOADER, published.uri, NS, "v3", str(src), "no-promote"], check=True)
    assert published.list_versions(NS) == ["v1", "v2", "v3"]
    assert published.latest(NS) == "v1"


_PROMOTER = textwrap.dedent(
    """
    import sys, time
    from dpo_tasks.store.base import StoreError
    from dpo_tasks.store.gcs import GCSStore
    store = GCSStore(sys.argv[1])
    while time.time() < float(sys.argv[4]):
        time.sleep(0.001)
    try:
        store.promote(sys.argv[2], sys.argv[3], expected_current="v0")
    except StoreError as exc:
        print("LOST", exc)
    else:
        print("WON")
    """
)


def test_concurrent_promotes_exactly_one_wins(store, tmp_path, make_version_dir):
    tags = ["v0", "a", "b", "c", "d"]
    for tag in tags:
        store.upload_version(NS, tag, make_version_dir(tmp_path / tag, tag))
    store.promote(NS, "v0")
    start_at = time.time() + 4  # all processes imported and waiting by then
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROMOTER, store.uri, NS, tag, str(start_at)], stdout=subprocess.PIPE, text=True)
        for tag in tags[1:]
    ]
    outcomes = {tag: p.communicate(timeout=120)[0] for tag, p in zip(tags[1:], procs)}

    winners = [tag for tag, out in outcomes.items() if out.startswith("WON")]
    assert len(winners) == 1, outcomes
    assert store.latest(NS) == winners[0]


class _SlowReader(GCSStore):
    """Another writer promotes `sneak_in` between this store's read of LATEST and its write."""

    def __init__(self, uri: str, sneak_in: str):
        super().__init__(uri)
        self.other, self.sneak_in = GCSStore(uri), sneak_in

    def _pointer(self, namespace):
        seen = super()._pointer(namespace)
        self.other.promote(namespace, self.sneak_in)
        return seen


def test_precondition_stops_a_writer_that_read_a_stale_generation(published):
    """The interleaving the generation precondition exists for: B promotes between A's read and A's write."""
    published.promote(NS, "v2")
    with pytest.raises(StoreError, match="changed while promoting"):
        _SlowReader(published.uri, sneak_in="v1").promote(NS, "v2")  # no expected_current: only the precondition guards
    assert published.latest(NS) == "v1"


def test_a_lost_precondition_to_the_same_version_is_not_an_error(published):
    """What a retried LATEST write sees when its first attempt landed: LATEST already says what we wanted."""
    _SlowReader(published.uri, sneak_in="v2").promote(NS, "v2")
    assert published.latest(NS) == "v2"


def test_download_by_version_streams_to_a_cache_keyed_by_version(published, tmp_path, caplog):
    cache = tmp_path / "cache"
    got = published.download(NS, "v2", cache / "v2")

    assert got == cache / "v2"
    assert json.loads((got / "model_card.json").read_text())["version"] == "v2"
    assert (got / "adapter" / "adapter_model.safetensors").read_bytes() == (tmp_path / "v2" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]

    with caplog.at_level(logging.INFO, logger="dpo_tasks.store.gcs"):
        assert published.download(NS, "v2", cache / "v2") == got
    assert "using the cached copy" in caplog.text

    (got / "metrics.json").write_text("{}")  # a damaged cache is fetched again
    published.download(NS, "v2", cache / "v2")
    assert "v2" in (got / "metrics.json").read_text()


def test_community_latest_holds_the_served_files(store, tmp_path, make_version_dir):
    ns = "policies/community-42"
    v1 = make_version_dir(tmp_path / "v1", "v1")
    (v1 / "adapter" / "old_only.bin").write_bytes(b"x")
    from dpo_tasks.store.manifest import write_manifest

    write_manifest(v1)
    store.upload_version(ns, "v1", v1)
    store.upload_version(ns, "v2", make_version_dir(tmp_path / "v2", "v2"))
    store.promote(ns, "v1")
    store.promote(ns, "v2")

    assert store.list_versions(ns) == ["v1", "v2"]
    assert store.latest(ns) == "v2"
    served = _objects(store, f"{ns}/LATEST")
    assert served == {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "config.yaml", "metrics.json"}
    metrics = store.bucket.blob(f"{store.prefix}/{ns}/LATEST/metrics.json").download_as_text()
    assert '"v2"' in metrics


@pytest.mark.parametrize(
    "namespace, version",
    [
        pytest.param("../etc", "v1", id="dotdot-namespace"),
        pytest.param(NS, "a/b", id="slash-in-version"),
        pytest.param(NS, "LATEST", id="version-named-latest"),
    ],
)
def test_unsafe_names_are_refused(store, tmp_path, namespace, version, make_version_dir):
    with pytest.raises(StoreError, match=repr(namespace if namespace.startswith("..") else version).replace("(", r"\(")):
        store.upload_version(namespace, version, make_version_dir(tmp_path / "v", "v"))


def test_inside_airflow_the_client_comes_from_the_gcshook_connection(gcs_uri, monkeypatch, tmp_path, make_version_dir):
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setenv("AIRFLOW_CONN_GCS_EMULATOR", json.dumps({"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "local"}}))
    monkeypatch.setenv("PERSONA_DPO_GCP_CONN_ID", "gcs_emulator")
    store = open_store(gcs_uri)
    store.upload_version(NS, "v1", make_version_dir(tmp_path / "v1", "v1"))
    store.promote(NS, "v1")
    assert isinstance(store.client._credentials, AnonymousCredentials) and store.client.project == "local"
    assert GCSStore(gcs_uri).latest(NS) == "v1"

    monkeypatch.setenv("PERSONA_DPO_GCP_CONN_ID", "no_such_connection")
    with pytest.raises(Exception, match="no_such_connection"):
        open_store(gcs_uri).latest(NS)


def _trained_run_dir(root, tag: str):
    """A run dir as train/evaluate/gate leave it, ready for `publish`."""
    (root / "train" / "adapter").mkdir(parents=True)
    (root / "train" / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "tag": tag}))
    (root / "train" / "adapter" / "adapter_model.safetensors").write_bytes(tag.encode() * 100)
    (root / "train" / "metrics.json").write_text(json.dumps({"train_loss": 0.6}))
    (root / "eval").mkdir()
    (root / "eval" / "summary_stats.json").write_text(json.dumps({"judge": "rules", "n": 20, "win_rate": 0.8, "ci_low": 0.58, "ci_high": 0.92}))
    (root / "gate.json").write_text(json.dumps({"decision": "promote", "reason": "ci_low >= 0.5", "threshold": 0.5}))
    for name in ("prompts.jsonl", "labeled.jsonl", "dpo.jsonl"):
        (root / name).write_text(json.dumps({"id": tag, "source": "generated"}) + "\n")
    return root


@pytest.mark.parametrize("namespace", [pytest.param(NS, id="persona"), pytest.param("policies/community-7", id="community")])
def test_publish_and_rollback_commands_on_gcs(gcs_uri, tmp_path, namespace):
    cli = [sys.executable, "-m", "dpo_tasks"]
    common = ["--persona", NS, "--store", gcs_uri, "--namespace", namespace]
    versions = []
    for i, tag in enumerate(("first", "second")):
        proc = subprocess.run([*cli, "publish", *common, "--run-dir", str(_trained_run_dir(tmp_path / tag, tag)), "--run-id", tag],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        versions.append(json.loads((tmp_path / tag / "publish.json").read_text())["version"])
        time.sleep(1.1 if i == 0 else 0)  # version names carry the second

    store = GCSStore(gcs_uri)
    assert store.list_versions(namespace) == versions and store.latest(namespace) == versions[1]
    card = json.loads(store.bucket.blob(f"{store.prefix}/{namespace}/{versions[1]}/model_card.json").download_as_text())
    assert card["run_id"] == "second" and set(card["data_sha256"]) == {"prompts.jsonl", "labeled.jsonl", "dpo.jsonl"}

    proc = subprocess.run([*cli, "rollback", *common], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{versions[1]} -> {versions[0]}" in proc.stdout
    assert store.latest(namespace) == versions[0]
    if namespace.startswith("policies/"):
        served = store.bucket.blob(f"{store.prefix}/{namespace}/LATEST/adapter/adapter_config.json").download_as_text()
        assert json.loads(served)["tag"] == "first"


def test_history_records_every_move_and_rollback_follows_it(store, tmp_path, make_version_dir):
    """v1, v2 served; v3 uploaded only (a dry run): rollback returns to what was served, never to v3 unasked."""
    for tag in ("v1", "v2", "v3"):
        store.upload_version(NS, tag, make_version_dir(tmp_path / tag, tag))
    store.promote(NS, "v1", expected_current=None, record={"action": "publish"})
    store.promote(NS, "v2", expected_current="v1", record={"action": "publish"})
    assert store.served(NS) == ["v1", "v2"]
    assert store.rollback(NS) == "v1"
    with pytest.raises(StoreError, match="never served"):
        store.rollback(NS, to="v3")
    assert store.latest(NS) == "v1"
    assert store.rollback(NS, to="v3", force=True) == "v3"
    history = store.history(NS)
    assert [(h["version"], h["previous"], h["action"], h["forced"]) for h in history] == [
        ("v1", None, "publish", False), ("v2", "v1", "publish", False), ("v1", "v2", "rollback", False), ("v3", "v1", "rollback", True),
    ]
    card = store.model_card(NS, "v3")
    assert card["version"] == "v3" and card["serving"]["forced"] and "never been served" in card["serving"]["note"]


def test_a_race_loser_records_nothing(published):
    published.promote(NS, "v2")
    with pytest.raises(StoreError, match="changed while promoting"):
        _SlowReader(published.uri, sneak_in="v1").promote(NS, "v2")
    assert [h["version"] for h in published.history(NS)] == ["v1", "v2", "v1"]


@pytest.mark.parametrize("bad_path", ["../../outside.bin", "/etc/passwd", "adapter/../../../x"])
def test_download_refuses_a_stored_manifest_that_points_outside(store, tmp_path, make_version_dir, bad_path):
    store.upload_version(NS, "v1", make_version_dir(tmp_path / "v1", "v1"))
    key = f"{store.prefix}/{NS}/v1/MANIFEST.json"
    manifest = json.loads(store.bucket.blob(key).download_as_bytes())
    manifest["files"][0]["path"] = bad_path
    store.bucket.blob(key).upload_from_string(json.dumps(manifest))
    cache = tmp_path / "cache" / "deep" / "v1"
    with pytest.raises(ManifestError, match="not a safe relative path"):
        store.download(NS, "v1", cache)
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    assert not (tmp_path / "outside.bin").exists()
