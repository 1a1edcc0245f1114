"""A gcp-storage-emulator (with GCS's write preconditions, see gcs_emulator.py) for the store tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

BUCKET = "persona-dpo-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """`http://127.0.0.1:PORT` of an emulator subprocess holding the bucket `BUCKET`."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("gcs_emulator.py")), str(port), BUCKET],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(host + "/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"gcs emulator did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
    yield host
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def gcs_uri(gcs_emulator, monkeypatch) -> str:
    """A fresh `gs://` prefix on the emulator; the process talks to it through STORAGE_EMULATOR_HOST."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("PERSONA_DPO_GCP_CONN_ID", raising=False)
    return f"gs://{BUCKET}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_version_dir():
    return _make_version_dir


def _make_version_dir(root: Path, tag: str, *, extra_files: int = 0) -> Path:
    """A publishable version dir like publish stages it, with its MANIFEST.json."""
    from dpo_tasks.store.manifest import write_manifest

    root.mkdir(parents=True)
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(4096) + tag.encode())
    (root / "adapter" / "adapter_config.json").write_text(f'{{"r": 8, "tag": "{tag}"}}\n')
    (root / "config.yaml").write_text(f"persona: test\nversion: {tag}\n")
    (root / "metrics.json").write_text(f'{{"train_loss": 0.5, "tag": "{tag}"}}\n')
    (root / "eval").mkdir()
    (root / "eval" / "summary.json").write_text('{"win_rate": 0.7}\n')
    (root / "model_card.json").write_text(f'{{"version": "{tag}", "data": {{"dpo.jsonl": "{uuid.uuid4().hex}"}}}}\n')
    for i in range(extra_files):
        (root / "adapter" / f"shard-{i:04d}.bin").write_bytes(os.urandom(512))
    write_manifest(root)
    return root
