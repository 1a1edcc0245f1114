"""Session fixtures shared by the whole suite.

- `smol_tokenizer_dir`: the real SmolLM2-135M-Instruct tokenizer and chat template.
- `tiny_model_dir`: a tiny random Llama saved with that tokenizer; usable anywhere a
  model path (`model.base`) is accepted. Tests that train or generate use it.
- torch runs one intra-op thread per process (OMP_NUM_THREADS=1 unless set).

The embedded model is converted from its GGUF once per machine into the same
cache a user gets (`$PERSONA_DPO_CACHE`, default `~/.cache/persona-dpo`), so
the suite pays the ~30 s conversion only on the first run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PERSONA_DPO_CACHE", str(Path.home() / ".cache" / "persona-dpo"))
# Tiny test models gain nothing from intra-op threads, and the stage subprocesses tests
# start run side by side: OpenMP threads spinning against each other made CPU generation
# several times slower on a busy 2-core machine. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow tracking writes ./mlflow.db and ./mlruns of the working directory by default; the
# tests that are about tracking turn it on against their own server or directory.
os.environ.setdefault("PERSONA_DPO_TRACKING", "off")


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dpo_tasks.config import EMBEDDED_MODEL
    from dpo_tasks.models import load_tokenizer

    out = tmp_path_factory.mktemp("smol_tokenizer")
    load_tokenizer(EMBEDDED_MODEL).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(smol_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# A throwaway feedback database on the real local PostgreSQL, created and migrated once per test
# session (only when a test asks for it) and emptied before each test that uses `db`.
ADMIN_URL = os.environ.get("PERSONA_DPO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return ADMIN_URL


@pytest.fixture(scope="session")
def feedback_db_url():
    import psycopg2

    from dpo_tasks.feedback.db import create_database, drop_database, migrate

    url = create_database(ADMIN_URL, prefix="test_feedback")
    conn = psycopg2.connect(url)
    try:
        migrate(conn)
    finally:
        conn.close()
    yield url
    drop_database(ADMIN_URL, url)


@pytest.fixture
def db(feedback_db_url):
    """A psycopg2 connection to an emptied feedback database."""
    import psycopg2

    conn = psycopg2.connect(feedback_db_url)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE feedback, feedback_watermarks, feedback_triggers RESTART IDENTITY")
    conn.commit()
    yield conn
    conn.close()


