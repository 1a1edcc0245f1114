"""The DVC side: params.yaml derived from personas.yaml, the foreach pipeline, dataset versions on a remote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "label", "format", "sft", "train", "evaluate", "gate")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _run(args: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dpo_tasks", *args], cwd, check=check)


def test_params_yaml_is_current_with_personas_yaml():
    """dvc.yaml tracks params.yaml; a stale one would make `dvc repro` miss persona changes."""
    proc = _cli("dvc-params", "--check", cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr


def test_dvc_params_writes_every_persona_and_reports_a_bad_one(tmp_path):
    raw = yaml.safe_load((REPO / "personas.yaml").read_text())
    raw["personas"][1]["overrides"] = {"training": {"epochs": -1}}
    bad_id = raw["personas"][1]["id"]
    (tmp_path / "personas.yaml").write_text(yaml.safe_dump(raw))

    proc = _cli("dvc-params", "--personas-file", "personas.yaml", cwd=tmp_path, check=False)

    assert proc.returncode == 1
    assert bad_id in proc.stderr and "training.epochs" in proc.stderr and "-1" in proc.stderr
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert sorted(params["personas"]) == sorted(p["id"] for p in raw["personas"] if p["id"] != bad_id)
    first = params["personas"][raw["personas"][0]["id"]]
    assert set(first) == {"profile", "model", "generation", "labeling", "sft", "training", "evaluation", "gate"}
    assert _cli("dvc-params", "--personas-file", "personas.yaml", "--check", cwd=tmp_path, check=False).returncode == 1


def test_dvc_params_check_catches_a_stale_file(tmp_path):
    shutil.copy(REPO / "personas.yaml", tmp_path)
    _cli("dvc-params", "--personas-file", "personas.yaml", cwd=tmp_path)
    assert _cli("dvc-params", "--personas-file", "personas.yaml", "--check", cwd=tmp_path, check=False).returncode == 0

    raw = yaml.safe_load((tmp_path / "personas.yaml").read_text())
    raw["defaults"]["gate"]["min_win_rate_lower_bound"] = 0.6
    (tmp_path / "personas.yaml").write_text(yaml.safe_dump(raw))
    stale = _cli("dvc-params", "--personas-file", "personas.yaml", "--check", cwd=tmp_path, check=False)
    assert stale.returncode == 1 and "out of date" in stale.stderr


def test_dvc_dag_shows_a_personas_pipeline():
    out = _run([sys.executable, "-m", "dvc", "dag", "gate@persona_b_indian_veg"], REPO).stdout
    for stage in STAGES:
        assert f"{stage}@persona_b_indian_veg" in out
    assert "persona_a_korean_spicy" not in out


def _run_dir(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    (root / "prompts.jsonl").write_text(json.dumps({"id": f"{tag}-1", "prompt": f"A {tag} dinner?", "source": "pool"}) + "\n")
    (root / "labeled.jsonl").write_text(json.dumps({"id": f"{tag}-1", "prompt": "p", "chosen": "c", "rejected": "r", "source": "generated"}) + "\n")
    (root / "dpo.jsonl").write_text(json.dumps({"prompt": f"<|im_start|>user {tag}", "chosen": "c", "rejected": "r"}) + "\n")
    return root


def test_version_data_pushes_datasets_and_they_come_back(tmp_path):
    run = _run_dir(tmp_path / "run", "a")
    remote = tmp_path / "remote"
    _cli("version-data", "--persona", "persona_a_korean_spicy", "--run-dir", str(run), "--remote", str(remote), cwd=tmp_path)

    versions = json.loads((run / "data_versions.json").read_text())
    assert versions["remote"] == str(remote) and versions["pushed_objects"] == 3
    for name in ("prompts.jsonl", "labeled.jsonl", "dpo.jsonl"):
        data = (run / name).read_bytes()
        entry = versions["files"][name]
        assert entry["md5"] == hashlib.md5(data).hexdigest()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert (remote / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]).read_bytes() == data

    again = _cli("version-data", "--persona", "persona_a_korean_spicy", "--run-dir", str(run), "--remote", str(remote), cwd=tmp_path)
    assert "(0 new objects)" in again.stdout

    # Lineage: the .dvc files alone get the exact datasets back from the remote.
    elsewhere = tmp_path / "restore"
    elsewhere.mkdir()
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], elsewhere)
    for name in ("prompts.jsonl", "labeled.jsonl", "dpo.jsonl"):
        shutil.copy(run / f"{name}.dvc", elsewhere)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "origin", str(remote)], elsewhere)
    _run([sys.executable, "-m", "dvc", "pull"], elsewhere)
    for name in ("prompts.jsonl", "labeled.jsonl", "dpo.jsonl"):
        assert (elsewhere / name).read_bytes() == (run / name).read_bytes()


def test_version_data_names_an_empty_run_dir(tmp_path):
    (tmp_path / "run").mkdir()
    proc = _cli("version-data", "--run-dir", str(tmp_path / "run"), "--remote", str(tmp_path / "r"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no dataset" in proc.stderr


def test_parallel_persona_runs_version_data_without_lock_failures(tmp_path):
    remote = tmp_path / "remote"
    runs = {pid: _run_dir(tmp_path / pid, pid) for pid in ("persona_a_korean_spicy", "persona_b_indian_veg", "persona_c_italian_gf")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dpo_tasks", "version-data", "--persona", pid, "--run-dir", str(run), "--remote", str(remote)],
            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for pid, run in runs.items()
    ]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0, 0], [err[-2000:] for _, err, _ in results]
    for run in runs.values():
        for entry in json.loads((run / "data_versions.json").read_text())["files"].values():
            assert (remote / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]).is_file()


# -- dvc repro on the tiny model ---------------------------------------------------------------

TINY_OVERRIDES = {
    "generation": {"num_prompts": 3, "max_new_tokens": 16, "batch_size": 3},
    "labeling": {"min_margin": 0.0},
    "training": {"epochs": 1, "batch_size": 2, "grad_accum": 1, "max_length": 128, "max_prompt_length": 64, "lora_r": 4, "lora_alpha": 8},
    "evaluation": {"max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, tiny_model_dir) -> Path:
    """A DVC project with this repo's dvc.yaml and code, personas on the tiny model, and a local remote."""
    proj = tmp_path_factory.mktemp("dvc_project")
    shutil.copy(REPO / "dvc.yaml", proj)
    # A snapshot of the code the stages depend on, so the lock records one state of it.
    shutil.copytree(REPO / "dpo_tasks", proj / "dpo_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((REPO / "personas.yaml").read_text())
    for persona in raw["personas"]:
        persona["overrides"] = {**TINY_OVERRIDES, "model": {"base": str(tiny_model_dir)}}
    (proj / "personas.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _cli("dvc-params", "--personas-file", "personas.yaml", cwd=proj)
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], proj)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(proj / "remote")], proj)
    return proj


def _feedback_pairs(run_dir: Path) -> None:
    """What `feedback-export` leaves in a run dir: a random tiny model's own variants are all ties."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"fb-{i}", "prompt": f"A quick vegan taco dinner, idea {i}?", "source": "feedback",
         "chosen": "Black bean tacos: corn tortillas, black beans, salsa verde, avocado, cilantro and lime.",
         "rejected": "Beef tacos with cheddar cheese and sour cream."}
        for i in range(4)
    ]
    (run_dir / "feedback_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_dvc_repro_reproduces_a_persona_run_and_pushes_it(dvc_project):
    persona = "persona_e_mexican_vegan"
    run = dvc_project / "runs" / "dvc" / persona
    _feedback_pairs(run)

    _run([sys.executable, "-m", "dvc", "repro", f"gate@{persona}"], dvc_project)

    for rel in ("prompts.jsonl", "variants.jsonl", "labeled.jsonl", "dpo.jsonl", "train/adapter/adapter_config.json",
                "train/metrics.json", "eval/summary_stats.json", "gate.json"):
        assert (run / rel).is_file(), rel
    assert len((run / "dpo.jsonl").read_text().splitlines()) >= 4
    assert json.loads((run / "gate.json").read_text())["decision"] in ("promote", "reject")
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text())["stages"]
    assert {f"{s}@{persona}" for s in STAGES} <= set(lock)
    assert lock[f"generate@{persona}"]["params"]["params.yaml"][f"personas.{persona}.generation"]["num_prompts"] == 3

    rerun = _run([sys.executable, "-m", "dvc", "repro", f"gate@{persona}"], dvc_project).stdout
    assert "didn't change, skipping" in rerun and "Running stage" not in rerun, rerun

    pushed = _run([sys.executable, "-m", "dvc", "push"], dvc_project).stdout
    assert "pushed" in pushed
    assert any((dvc_project / "remote" / "files" / "md5").rglob("*"))
    assert "in sync" in _run([sys.executable, "-m", "dvc", "status", "-c", f"gate@{persona}"], dvc_project).stdout


@pytest.mark.slow
def test_two_personas_reproduced_in_parallel_both_succeed(dvc_project):
    """Two shells, one repo: DVC drops its repo lock while stage commands run, and `--wait-for-lock`
    waits out the short bookkeeping windows instead of failing on them."""
    personas = ("persona_a_korean_spicy", "persona_b_indian_veg")
    procs = [
        subprocess.Popen([sys.executable, "-m", "dvc", "--wait-for-lock", "repro", f"label@{p}"], cwd=dvc_project, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in personas
    ]
    results = [p.communicate(timeout=900) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0], [err[-3000:] for _, err, _ in results]
    for p in personas:
        assert (dvc_project / "runs" / "dvc" / p / "variants.jsonl").is_file()
        assert (dvc_project / "runs" / "dvc" / p / "summaries" / "label.json").is_file()
