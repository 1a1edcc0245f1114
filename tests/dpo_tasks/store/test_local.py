import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_tasks.store import StoreError, VersionNotFound, open_store
from dpo_tasks.store.local import LocalStore
from dpo_tasks.store.manifest import ManifestError, write_manifest

NS = "persona_e_mexican_vegan"


def make_version(root: Path, content: str = "weights", n_files: int = 1, size: int = 64) -> Path:
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    for i in range(n_files):
        (root / "adapter" / f"part{i:04d}.bin").write_bytes((content * (size // len(content) + 1))[:size].encode())
    (root / "model_card.json").write_text('{"persona": "x"}')
    write_manifest(root)
    return root


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def publish(store, tmp_path, version, content=None):
    src = make_version(tmp_path / f"src-{version}", content or version)
    store.upload_version(NS, version, src)
    store.promote(NS, version, expected_current=store.latest(NS))
    return version


def test_upload_then_promote_moves_latest(store, tmp_path):
    assert store.latest(NS) is None and store.list_versions(NS) == []
    uri = store.upload_version(NS, "v1", make_version(tmp_path / "a"))
    assert uri == f"{store.uri}/{NS}/v1"
    # Uploaded but not promoted: visible as a version, not served.
    assert store.list_versions(NS) == ["v1"] and store.latest(NS) is None
    store.promote(NS, "v1", expected_current=None)
    assert store.latest(NS) == "v1"
    assert (tmp_path / "store" / NS / "LATEST").read_text().strip() == "v1"


def test_versions_are_immutable(store, tmp_path):
    publish(store, tmp_path, "v1")
    with pytest.raises(StoreError, match="already exists"):
        store.upload_version(NS, "v1", make_version(tmp_path / "again", "other"))


def test_list_versions_sorted_and_ignores_incomplete(store, tmp_path):
    for v in ("v20261122T030000Z-bbbb", "v20261121T230000Z-aaaa"):
        store.upload_version(NS, v, make_version(tmp_path / v))
    (tmp_path / "store" / NS / ".incoming-v3-x").mkdir()
    (tmp_path / "store" / NS / "half-copied").mkdir()  # no MANIFEST.json
    assert store.list_versions(NS) == ["v20261121T230000Z-aaaa", "v20261122T030000Z-bbbb"]


def test_promote_of_unknown_version_fails(store):
    with pytest.raises(VersionNotFound, match="'v9'"):
        store.promote(NS, "v9")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / "adapter" / "part0000.bin").write_bytes(b"X" * 64), id="same-size-corruption"),
        pytest.param(lambda d: (d / "adapter" / "part0000.bin").write_bytes(b"short"), id="truncated"),
        pytest.param(lambda d: (d / "adapter" / "part0000.bin").unlink(), id="missing-file"),
        pytest.param(lambda d: (d / "adapter" / "extra.bin").write_bytes(b"?"), id="unlisted-file"),
        pytest.param(lambda d: (d / "MANIFEST.json").write_text("{not json"), id="bad-manifest"),
    ],
)
def test_manifest_verification_catches_damage(store, tmp_path, damage):
    store.upload_version(NS, "v1", make_version(tmp_path / "a"))
    damage(tmp_path / "store" / NS / "v1")
    with pytest.raises(ManifestError, match="v1"):
        store.promote(NS, "v1")
    assert store.latest(NS) is None


def test_upload_refuses_a_source_that_does_not_match_its_manifest(store, tmp_path):
    src = make_version(tmp_path / "a")
    (src / "model_card.json").write_text("changed after the manifest was written")
    with pytest.raises(ManifestError, match="model_card.json"):
        store.upload_version(NS, "v1", src)
    assert store.list_versions(NS) == []


def test_expected_current_guards_against_a_stale_reader(store, tmp_path):
    publish(store, tmp_path, "v1")
    store.upload_version(NS, "v2", make_version(tmp_path / "b", "v2"))
    with pytest.raises(StoreError, match="expected None"):
        store.promote(NS, "v2", expected_current=None)
    assert store.latest(NS) == "v1"


def _promote_when_released(root, version, expected, barrier, results):
    store = LocalStore(root)
    barrier.wait()
    try:
        store.promote(NS, version, expected_current=expected)
        results.put((version, "won"))
    except StoreError as exc:
        results.put((version, f"lost: {exc}"))


def test_concurrent_promotes_exactly_one_wins(store, tmp_path):
    publish(store, tmp_path, "v0")
    contenders = [f"v{i}" for i in range(1, 7)]
    for v in contenders:
        store.upload_version(NS, v, make_version(tmp_path / v, v))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(len(contenders)), ctx.Queue()
    procs = [ctx.Process(target=_promote_when_released, args=(store.root, v, "v0", barrier, results)) for v in contenders]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcome = dict(results.get(timeout=5) for _ in contenders)
    winners = [v for v, r in outcome.items() if r == "won"]
    assert len(winners) == 1, outcome
    assert store.latest(NS) == winners[0]
    assert all("another publish or rollback" in r for v, r in outcome.items() if v not in winners)


def test_crash_during_upload_leaves_latest_on_old_version(store, tmp_path):
    publish(store, tmp_path, "v1")
    big = make_version(tmp_path / "big", "v2", n_files=400, size=256 * 1024)
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from dpo_tasks.store.local import LocalStore; "
         f"s = LocalStore({str(store.root)!r}); s.upload_version({NS!r}, 'v2', {str(big)!r}); "
         f"s.promote({NS!r}, 'v2')"],
    )
    ns = store.root / NS
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".incoming-v2") for p in ns.iterdir()):
        assert child.poll() is None, "upload finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert store.latest(NS) == "v1"
    assert store.list_versions(NS) == ["v1"]
    # The interrupted version can be published again from scratch.
    store.upload_version(NS, "v2", big)
    store.promote(NS, "v2", expected_current="v1")
    assert store.latest(NS) == "v2"


def test_latest_is_replaced_atomically(store, tmp_path):
    publish(store, tmp_path, "v1")
    store.upload_version(NS, "v2", make_version(tmp_path / "b", "v2"))
    ino_before = os.stat(store.root / NS / "LATEST").st_ino
    store.promote(NS, "v2", expected_current="v1")
    # A new file renamed over the old one (never rewritten in place), and no temp files left.
    assert os.stat(store.root / NS / "LATEST").st_ino != ino_before
    assert sorted(p.name for p in (store.root / NS).iterdir() if p.name.startswith(".LATEST")) == []


@pytest.mark.parametrize(
    ("to", "expected"),
    [pytest.param(None, "v2", id="previous"), pytest.param("v1", "v1", id="named")],
)
def test_rollback(store, tmp_path, to, expected):
    for v in ("v1", "v2", "v3"):
        publish(store, tmp_path, v)
    assert store.rollback(NS, to) == expected
    assert store.latest(NS) == expected


@pytest.mark.parametrize(
    ("versions", "to", "match"),
    [
        pytest.param(["v1"], None, "oldest", id="nothing-before"),
        pytest.param([], None, "no current", id="nothing-published"),
        pytest.param(["v1"], "v7", "'v7'", id="unknown-target"),
    ],
)
def test_rollback_errors(store, tmp_path, versions, to, match):
    for v in versions:
        publish(store, tmp_path, v)
    with pytest.raises(StoreError, match=match):
        store.rollback(NS, to)


def test_download_caches_by_version_and_repairs_a_damaged_cache(store, tmp_path):
    publish(store, tmp_path, "v1")
    dest = tmp_path / "cache" / NS / "v1"
    assert store.download(NS, "v1", dest) == dest
    assert (dest / "adapter" / "adapter_config.json").read_text() == '{"r": 8}'
    mtime = (dest / "adapter" / "part0000.bin").stat().st_mtime_ns
    store.download(NS, "v1", dest)
    assert (dest / "adapter" / "part0000.bin").stat().st_mtime_ns == mtime  # cache hit, not copied again
    (dest / "adapter" / "part0000.bin").write_bytes(b"garbage")
    store.download(NS, "v1", dest)
    assert (dest / "adapter" / "part0000.bin").read_bytes().startswith(b"v1v1")
    with pytest.raises(VersionNotFound, match="'v5'"):
        store.download(NS, "v5", tmp_path / "cache" / NS / "v5")


@pytest.mark.parametrize("name", ["../escape", "/abs", ".hidden", "a/../../b"])
def test_unsafe_names_are_refused(store, name):
    with pytest.raises(StoreError, match="safe"):
        store.latest(name)


@pytest.mark.parametrize(
    ("uri", "root"),
    [pytest.param("file:///tmp/s", "/tmp/s", id="file-uri"), pytest.param("some/dir", "some/dir", id="path")],
)
def test_open_store_picks_the_local_backend(uri, root):
    s = open_store(uri)
    assert isinstance(s, LocalStore) and s.root == Path(root)


def test_open_store_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONA_DPO_STORE", str(tmp_path / "envstore"))
    assert open_store().root == tmp_path / "envstore"
