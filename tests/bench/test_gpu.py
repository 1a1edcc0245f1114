"""bench/gpu.py: the shapes are the models they are named after, and the CPU tiny mode runs the
same stage code end to end and prints the table the GPU run prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu  # noqa: E402


@pytest.mark.parametrize(
    "name, params",
    [
        # Published parameter counts: SmolLM2-135M-Instruct and Llama-3.2-3B-Instruct (tied embeddings).
        pytest.param("embedded", 134_515_008, id="smollm2-135m"),
        pytest.param("production", 3_212_749_824, id="llama-3.2-3b"),
    ],
)
def test_shapes_are_the_models_they_stand_for(name, params):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):  # no memory: only the parameter shapes
        model = LlamaForCausalLM(LlamaConfig(**gpu.SHAPES[name]))
    assert sum(p.numel() for p in model.parameters()) == params


def test_cuda_mode_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no CUDA device here" in proc.stderr


@pytest.mark.slow
def test_cpu_tiny_mode_prints_the_table(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    header = next(ln for ln in lines if ln.startswith("| shape"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(gpu.COLUMNS)
    table = [ln for ln in lines if ln.startswith("| ") and not ln.startswith(("| shape", "| ---"))]
    assert len(table) == 6

    rows = json.loads(out.read_text())
    assert [(r["shape"], r["stage"]) for r in rows] == [
        (shape, stage) for shape in ("embedded", "production") for stage in ("generate", "train", "evaluate")
    ]
    for r in rows:
        assert r["device"] == "cpu" and r["peak GPU MiB"] is None
        figure = r["steps/s"] if r["stage"] == "train" else r["tokens/s"]
        assert figure > 0, r
    train = [r for r in rows if r["stage"] == "train"]
    # No bitsandbytes and no CUDA here: the stage falls back to adamw_torch in fp32, and says so.
    assert all("optim adamw_torch" in r["notes"] and "bf16 False" in r["notes"] for r in train)
