"""A user's prompt pool on GCS (gcp-storage-emulator): fetched into the run directory and read like a local one."""

from __future__ import annotations

import pytest

from dpo_tasks import generate
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.runs import RunDir
from dpo_tasks.store.gcs import make_client, split_gs_uri


def test_gs_pool_is_fetched_and_read(gcs_uri, tmp_path):
    uri = f"{gcs_uri}/pools/alice.jsonl"
    bucket, name = split_gs_uri(uri)
    make_client().bucket(bucket).blob(name).upload_from_string(
        '{"id": "a1", "prompt": "Vegan pozole for a rainy Sunday?"}\n{broken\n{"id": "a2", "prompt": "Smoky bean chili for ten?"}\n'
    )
    persona = with_overrides(load_persona("persona_e_mexican_vegan"), {"generation": {"prompt_pool": uri}})
    rd = RunDir(tmp_path / "run").ensure()
    rows, info = generate.load_pool(persona, rd)
    assert [r["id"] for r in rows] == ["a1", "a2"] and info["pool"] == uri and info["pool_rows"] == 2
    assert (rd.root / "prompt_pool.jsonl").is_file()

    missing = with_overrides(persona, {"generation": {"prompt_pool": f"{gcs_uri}/pools/nobody.jsonl"}})
    with pytest.raises(ConfigError, match="nobody.jsonl"):
        generate.load_pool(missing, rd)
