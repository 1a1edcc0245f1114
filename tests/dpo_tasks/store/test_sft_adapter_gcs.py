"""`model.sft_adapter` as a `gs://` URI (gcp-storage-emulator): how the SFT adapter reaches a pod.
Every stage that loads the policy pulls it once into the cache; `model.revision` pins the base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.store.sync import push

PERSONA = "persona_e_mexican_vegan"


@pytest.fixture
def sft_adapter_uri(gcs_uri, tiny_model_dir, tmp_path) -> str:
    """A LoRA adapter of the tiny model, stored on the emulator."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "sft")
    uri = f"{gcs_uri}/sft/recipes/v1"
    push(tmp_path / "sft", None, uri)
    return uri


def test_a_gs_sft_adapter_is_pulled_once_and_loaded(sft_adapter_uri, tiny_model_dir, tmp_path, monkeypatch):
    from dpo_tasks.models import load_policy, resolve_adapter

    monkeypatch.setenv("PERSONA_DPO_CACHE", str(tmp_path / "cache"))
    local = Path(resolve_adapter(sft_adapter_uri))
    assert local.is_relative_to(tmp_path / "cache") and (local / "adapter_config.json").is_file()
    assert resolve_adapter(sft_adapter_uri) == str(local)  # cached: no second pull
    model, _ = load_policy(str(tiny_model_dir), sft_adapter_uri)
    assert type(model).__name__.startswith("PeftModel") and model.peft_config["default"].r == 2
    assert json.loads((local / "adapter_config.json").read_text())["r"] == 2


def test_a_uri_without_an_adapter_is_named(gcs_uri, tmp_path, monkeypatch):
    from dpo_tasks.models import resolve_adapter

    monkeypatch.setenv("PERSONA_DPO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("not an adapter")
    push(tmp_path / "junk", None, f"{gcs_uri}/junk")
    with pytest.raises(ConfigError, match=r"holds no adapter_config\.json"):
        resolve_adapter(f"{gcs_uri}/junk")


def test_generate_stage_pulls_the_sft_adapter_like_a_pod_would(sft_adapter_uri, tiny_model_dir, tmp_path, monkeypatch):
    """The stage's own CLI, in a fresh process with an empty cache (a pod), given only the URI."""
    import os

    env = {**os.environ, "PERSONA_DPO_CACHE": str(tmp_path / "pod-cache"), "OMP_NUM_THREADS": "1"}
    sets = [f"model.base={tiny_model_dir}", f"model.sft_adapter={sft_adapter_uri}", "generation.num_prompts=1",
            "generation.max_new_tokens=8"]
    argv = [sys.executable, "-m", "dpo_tasks", "generate", "--persona", PERSONA, "--run-dir", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"adapter {sft_adapter_uri} pulled into" in proc.stderr
    assert (tmp_path / "run" / "variants.jsonl").read_text().strip()


def test_the_base_revision_is_recorded_in_the_model_card(tmp_path):
    from datetime import datetime, timezone

    from dpo_tasks.publish import model_card
    from dpo_tasks.runs import RunDir

    persona = with_overrides(load_persona(PERSONA), {"model": {"base": "meta-llama/Llama-3.2-3B-Instruct", "revision": "0cb88a4f"}})
    card = model_card(persona, RunDir(tmp_path).ensure(), run_id="r1", created=datetime.now(timezone.utc))
    assert (card["base_model"], card["base_model_revision"]) == ("meta-llama/Llama-3.2-3B-Instruct", "0cb88a4f")
