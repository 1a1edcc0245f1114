"""Command `export`: a published version as one plain model, the LoRA adapter merged into its base.

A serving stack that does not speak PEFT (vLLM without LoRA, TGI, llama.cpp
converters, plain `transformers`) needs the merged weights. `export --merged OUT`
fetches version V of the persona's namespace from the artifact store (verified
against its manifest), loads the base model the version was trained on (its
model card's `base_model`), merges the adapter (`merge_and_unload`) and writes
OUT with `model.safetensors`, `config.json`, the generation config, the tokenizer
and `export.json` (persona, namespace, version, store, base, dtype). OUT is
written to a temporary sibling and renamed into place, so it is either complete
or absent; an existing non-empty OUT is refused.

The merge happens in float32 by default: merging into bf16 rounds the sum of
base and LoRA delta once more. `--dtype bfloat16` halves the size for serving.

Usage:
    python -m dpo_tasks export --persona persona_e_mexican_vegan --version v20261122T031500.123456Z-1a2b3c4d --merged out/model
    python -m dpo_tasks export --persona persona_e_mexican_vegan --merged out/model   # the LATEST version
    python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('out/model')"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from dpo_tasks.config import ConfigError, Persona

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def merge_adapter(base: str, adapter: str | os.PathLike[str], *, dtype: str = "float32") -> tuple[Any, Any]:
    """(merged model, tokenizer): base + LoRA adapter folded into plain weights, on the CPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dpo_tasks.models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(base), dtype=getattr(torch, dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    return model, tokenizer


def run(
    persona: Persona,
    out: str | os.PathLike[str],
    *,
    version: str | None = None,
    store_uri: str | None = None,
    namespace: str | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    from dpo_tasks.store import VersionNotFound, open_store

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"export target {str(out)!r} exists and is not empty; choose a new directory")
    store = open_store(store_uri)
    namespace = namespace or persona.id
    version = version or store.latest(namespace)
    if version is None:
        raise VersionNotFound(f"{namespace!r} has no LATEST version in {store.uri!r}; pass --version")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="persona-dpo-export-") as tmp:
        local = store.download(namespace, version, Path(tmp) / version)
        card = json.loads((local / "model_card.json").read_text()) if (local / "model_card.json").is_file() else {}
        # The base the adapter was trained on, not whatever personas.yaml says today.
        base = card.get("base_model") or persona.config.model.base
        log.info("merging %s/%s into %s (%s)", namespace, version, base, dtype)
        model, tokenizer = merge_adapter(base, local / "adapter", dtype=dtype)
        partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
            info = {
                "persona": persona.id,
                "namespace": namespace,
                "version": version,
                "store": store.uri,
                "base_model": base,
                "dtype": dtype,
                "merged": True,
            }
            (partial / "export.json").write_text(json.dumps(info, indent=2) + "\n")
            partial.chmod(0o755)
            if out.exists():
                out.rmdir()
            os.rename(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return info | {"out": str(out)}


def make_parser(command: str = "export") -> argparse.ArgumentParser:
    from dpo_tasks.cli import add_persona_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_persona_args(parser, run_dir=False)
    parser.add_argument("--store", default=None, help="store URI: a directory or gs://bucket/prefix (default: $PERSONA_DPO_STORE or ./store)")
    parser.add_argument("--namespace", default=None, help="store namespace (default: the persona id)")
    parser.add_argument("--version", default=None, help="the version to export (default: LATEST)")
    parser.add_argument("--merged", required=True, metavar="OUT", help="write the base with the adapter merged into this new directory")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype in OUT (default: %(default)s)")
    return parser


def main(args: argparse.Namespace) -> int:
    from dpo_tasks.cli import persona_from_args
    from dpo_tasks.store import StoreError

    try:
        info = run(
            persona_from_args(args), args.merged, version=args.version, store_uri=args.store,
            namespace=args.namespace, dtype=args.dtype,
        )
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"export: {info['namespace']}/{info['version']} merged into {info['base_model']} ({info['dtype']}) -> {info['out']}")
    return 0
