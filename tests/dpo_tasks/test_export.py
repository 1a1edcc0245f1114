"""`export --merged`: a published version as a plain transformers model equal to base + adapter."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from dpo_tasks import cli
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.store.local import LocalStore
from dpo_tasks.store.manifest import write_manifest

PERSONA = "persona_e_mexican_vegan"


@pytest.fixture
def published(tiny_model_dir, tmp_path):
    """A store holding one version: a LoRA adapter with non-zero weights (a fresh one is a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    version_dir = tmp_path / "staged"
    model.save_pretrained(version_dir / "adapter")
    (version_dir / "model_card.json").write_text(json.dumps({"persona": PERSONA, "base_model": str(tiny_model_dir)}))
    write_manifest(version_dir)
    store = LocalStore(tmp_path / "store")
    version = f"v{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-0123abcd"
    store.upload_version(PERSONA, version, version_dir)
    store.promote(PERSONA, version, expected_current=None)
    return store, version, version_dir / "adapter"


def test_merged_export_has_the_logits_of_base_plus_adapter(published, tiny_model_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_tasks.models import load_policy

    store, version, adapter = published
    out = tmp_path / "merged"
    rc = cli.main(["export", "--persona", PERSONA, "--store", store.uri, "--version", version, "--merged", str(out)])
    assert rc == 0
    assert f"{PERSONA}/{version} merged into {tiny_model_dir}" in capsys.readouterr().out

    # Plain transformers, no PEFT: the adapter is inside the weights.
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.padding_side = "left"
    batch = tokenizer(["Vegan tacos for two?", "A quick salsa verde, please, with tomatillos"], return_tensors="pt", padding=True)
    peft_model, _ = load_policy(str(tiny_model_dir), adapter, device="cpu")
    base, _ = load_policy(str(tiny_model_dir), device="cpu")
    with torch.no_grad():
        want = peft_model(**batch).logits
        got = merged(**batch).logits
        bare = base(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(bare, want, atol=1e-3), "the adapter must change the logits, or this test shows nothing"
    info = json.loads((out / "export.json").read_text())
    assert info["version"] == version and info["base_model"] == str(tiny_model_dir) and info["dtype"] == "float32"


def test_export_defaults_to_latest_and_refuses_a_non_empty_target(published, tiny_model_dir, tmp_path):
    from dpo_tasks import export

    store, version, _ = published
    persona = with_overrides(load_persona(PERSONA), {"model": {"base": str(tiny_model_dir)}})
    info = export.run(persona, tmp_path / "out", store_uri=store.uri, dtype="bfloat16")
    assert info["version"] == version
    with pytest.raises(ConfigError, match="exists and is not empty"):
        export.run(persona, tmp_path / "out", store_uri=store.uri)


def test_export_of_an_unknown_version_is_a_clear_error(published, tmp_path, capsys):
    store, _, _ = published
    rc = cli.main(["export", "--persona", PERSONA, "--store", store.uri, "--version", "v1-nope", "--merged", str(tmp_path / "o")])
    assert rc == 1
    assert "version 'v1-nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
