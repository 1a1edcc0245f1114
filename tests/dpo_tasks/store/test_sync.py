"""Run-file sync between a run dir and a store URI: GCS on the emulator, and a local directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dpo_tasks.store.sync import fetch_file, pull, push


@pytest.fixture(params=["gcs", "local"])
def remote(request, tmp_path):
    if request.param == "gcs":
        return request.getfixturevalue("gcs_uri") + "/staging"
    return str(tmp_path / "remote")


@pytest.fixture
def run_dir(tmp_path):
    root = tmp_path / "run"
    (root / "train" / "adapter").mkdir(parents=True)
    (root / "train" / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(70_000))
    (root / "train" / "metrics.json").write_text('{"loss": 0.4}\n')
    (root / "dpo.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    (root / "labeled.jsonl").write_text("{}\n")
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_push_then_pull_round_trip(remote, run_dir, tmp_path):
    assert push(run_dir, ["dpo.jsonl", "train"], remote) == 3

    pod = tmp_path / "pod"
    assert pull(remote, pod) == 3
    expected = {k: v for k, v in _tree(run_dir).items() if k != "labeled.jsonl"}
    assert _tree(pod) == expected


def test_unchanged_files_are_not_copied_again(remote, run_dir, tmp_path):
    push(run_dir, ["train"], remote)
    assert push(run_dir, ["train"], remote) == 0
    pod = tmp_path / "pod"
    pull(remote, pod)
    assert pull(remote, pod) == 0

    (pod / "train" / "metrics.json").write_text('{"loss": "damaged"}\n')
    assert pull(remote, pod) == 1
    assert (pod / "train" / "metrics.json").read_text() == '{"loss": 0.4}\n'


def test_pushed_directory_mirrors_the_source(remote, run_dir, tmp_path):
    stale = run_dir / "train" / "checkpoint-1" / "optimizer.pt"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    push(run_dir, ["train"], remote)
    stale.unlink()
    push(run_dir, ["train"], remote)

    pod = tmp_path / "pod"
    pull(remote, pod)
    assert "train/checkpoint-1/optimizer.pt" not in _tree(pod)
    assert "train/adapter/adapter_model.safetensors" in _tree(pod)


def test_missing_sources_are_named(remote, run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="eval"):
        push(run_dir, ["eval"], remote)
    with pytest.raises(FileNotFoundError, match="nothing stored"):
        pull(remote + "/nothing-here", tmp_path / "pod")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        fetch_file(remote + "/missing.jsonl", tmp_path / "x.jsonl")


def test_fetch_file(remote, run_dir, tmp_path):
    push(run_dir, ["dpo.jsonl"], remote)
    got = fetch_file(remote + "/dpo.jsonl", tmp_path / "in" / "dataset.jsonl")
    assert got.read_bytes() == (run_dir / "dpo.jsonl").read_bytes()
    assert [p.name for p in got.parent.iterdir()] == ["dataset.jsonl"]


def test_cli_sync_both_ways(gcs_uri, run_dir, tmp_path):
    env = {**os.environ}
    uri = gcs_uri + "/cli"
    cmd = [sys.executable, "-m", "dpo_tasks", "sync"]
    up = subprocess.run([*cmd, str(run_dir), uri, "--path", "train"], env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert "pushed 2 of 2 files" in up.stderr
    down = subprocess.run([*cmd, uri, str(tmp_path / "back")], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert _tree(tmp_path / "back") == {k: v for k, v in _tree(run_dir).items() if k.startswith("train/")}


class _Listing:
    """The far side of a bucket listing whose object names were written by someone else.

    (gcp-storage-emulator keeps objects as files and cannot hold a name with '..'; real GCS can.)
    """

    def __init__(self, names):
        self.names, self.downloads = names, []

    def list_blobs(self, bucket, prefix=None):
        return [self._Blob(self, f"{prefix}{n}") for n in self.names]

    class _Blob:
        def __init__(self, listing, name):
            self.listing, self.name, self.size, self.crc32c = listing, name, 1, "AAAAAA=="

        def download_to_filename(self, path, checksum=None):
            self.listing.downloads.append(path)
            open(path, "w").write("x")


@pytest.mark.parametrize("name", ["../escape.txt", "train/../../escape.txt", "/abs.txt", "train//x"])
def test_pull_refuses_an_object_name_that_leaves_the_run_dir_and_writes_nothing(tmp_path, name):
    from dpo_tasks.config import ConfigError

    listing = _Listing(["train/ok.txt", name])
    dest = tmp_path / "runs" / "r1"
    with pytest.raises(ConfigError, match="not a safe relative path"):
        pull("gs://bucket/staging/outputs", dest, client=listing)
    # Every name is checked before the first download: not even the good object was written.
    assert listing.downloads == []
    assert not (tmp_path / "runs" / "escape.txt").exists() and not any(p.is_file() for p in tmp_path.rglob("*"))
