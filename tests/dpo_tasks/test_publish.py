import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dpo_tasks import cli, publish
from dpo_tasks.config import load_persona
from dpo_tasks.runs import RunDir, sha256_file, write_json, write_jsonl
from dpo_tasks.store.local import LocalStore
from dpo_tasks.store.manifest import verify_manifest

PERSONA = "persona_e_mexican_vegan"


def make_run(root: Path, decision: str = "promote", weights: bytes = b"\x00" * 128) -> RunDir:
    rd = RunDir(root).ensure()
    write_jsonl(rd.prompts, [{"id": "p1", "prompt": "tacos", "source": "generated"}])
    write_jsonl(rd.labeled, [
        {"id": "p1", "prompt": "tacos", "chosen": "a", "rejected": "b", "source": "generated"},
        {"id": "p2", "prompt": "tacos", "chosen": "a", "rejected": "b", "source": "generated"},
        {"id": "f1", "prompt": "mole", "chosen": "c", "rejected": "d", "source": "feedback"},
    ])
    write_jsonl(rd.dpo, [{"prompt": "<|im_start|>user", "chosen": "a", "rejected": "b"}])
    rd.adapter.mkdir(parents=True)
    (rd.adapter / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}')
    (rd.adapter / "adapter_model.safetensors").write_bytes(weights)
    (rd.train / "config.yaml").write_text("learning_rate: 5.0e-5\n")
    write_json(rd.train / "metrics.json", {"final": {"loss": 0.5}})
    write_json(rd.eval / "summary_stats.json", {"judge": "rules", "n": 20, "win_rate": 0.8, "ci_low": 0.58, "ci_high": 0.92, "baseline": {"kind": "base"}})
    (rd.eval / "evaluation_report.html").write_text("<html></html>")
    write_json(rd.gate, {"decision": decision, "reason": f"because {decision}", "threshold": 0.5})
    return rd


@pytest.fixture
def persona():
    return load_persona(PERSONA)


def test_publish_writes_a_complete_verified_version_and_moves_latest(tmp_path, persona):
    rd = make_run(tmp_path / "run-42")
    result = publish.run(persona, rd, store_uri=str(tmp_path / "store"))
    store = LocalStore(tmp_path / "store")
    assert store.latest(PERSONA) == result["version"] and result["latest_moved"]
    vdir = tmp_path / "store" / PERSONA / result["version"]
    assert result["uri"] == str(vdir)
    for rel in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.yaml", "metrics.json",
                "eval/summary.json", "eval/evaluation_report.html", "model_card.json", "MANIFEST.json"):
        assert (vdir / rel).is_file(), rel
    manifest = verify_manifest(vdir)
    assert {f["path"] for f in manifest["files"]} >= {"adapter/adapter_model.safetensors", "model_card.json"}
    card = json.loads((vdir / "model_card.json").read_text())
    assert card["run_id"] == "run-42" and card["base_model"] == persona.config.model.base
    assert card["data_sha256"] == {p.name: sha256_file(p) for p in (rd.prompts, rd.labeled, rd.dpo)}
    assert card["pairs_by_source"] == {"feedback": 1, "generated": 2}
    assert card["evaluation"]["win_rate"] == 0.8 and card["evaluation"]["judge"] == "rules"
    assert card["gate"]["decision"] == "promote" and card["gate"]["published_despite_gate"] is False
    assert json.loads((rd.root / "publish.json").read_text())["version"] == result["version"]


def test_version_names_sort_by_time_and_differ_by_content(tmp_path, persona):
    store_uri = str(tmp_path / "store")
    versions = [publish.run(persona, make_run(tmp_path / f"r{i}", weights=bytes([i]) * 64), store_uri=store_uri)["version"] for i in range(3)]
    assert len(set(versions)) == 3
    assert LocalStore(store_uri).list_versions(PERSONA) == sorted(versions)
    assert all(re.fullmatch(r"v\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}", v) for v in versions), versions


def test_version_names_sort_in_publish_order_within_one_second():
    t = datetime(2026, 11, 22, 3, 15, 0, tzinfo=timezone.utc)
    names = [publish.version_name(t.replace(microsecond=us), h) for us, h in ((5, "ff" * 4), (40, "00" * 4), (999_999, "aa" * 4))]
    assert sorted(names) == names


def test_rejected_candidate_is_not_published_unless_forced(tmp_path, persona):
    rd = make_run(tmp_path / "run", decision="reject")
    with pytest.raises(publish.PublishRefused, match="because reject"):
        publish.run(persona, rd, store_uri=str(tmp_path / "store"))
    assert json.loads(rd.publish.read_text())["published"] is False
    assert LocalStore(tmp_path / "store").list_versions(PERSONA) == []
    forced = publish.run(persona, rd, store_uri=str(tmp_path / "store"), force=True)
    assert forced["forced"] and LocalStore(tmp_path / "store").latest(PERSONA) == forced["version"]
    card = json.loads((tmp_path / "store" / PERSONA / forced["version"] / "model_card.json").read_text())
    assert card["gate"]["decision"] == "reject" and card["gate"]["published_despite_gate"] is True


def test_dry_run_uploads_but_leaves_latest(tmp_path, persona):
    store_uri = str(tmp_path / "store")
    first = publish.run(persona, make_run(tmp_path / "a"), store_uri=store_uri)
    dry = publish.run(persona, make_run(tmp_path / "b", weights=b"\x01" * 64), store_uri=store_uri, dry_run=True)
    store = LocalStore(store_uri)
    assert store.latest(PERSONA) == first["version"]
    assert dry["version"] in store.list_versions(PERSONA) and not dry["latest_moved"]


def test_missing_adapter_refuses_with_the_path(tmp_path, persona):
    rd = make_run(tmp_path / "run")
    (rd.adapter / "adapter_config.json").unlink()
    with pytest.raises(publish.PublishRefused, match="train"):
        publish.run(persona, rd, store_uri=str(tmp_path / "store"))


def test_cli_publish_and_rollback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONA_DPO_STORE", str(tmp_path / "store"))
    versions = []
    for i in range(2):
        rd = make_run(tmp_path / f"run{i}", weights=bytes([i]) * 32)
        assert cli.main(["publish", "--persona", PERSONA, "--run-dir", str(rd.root)]) == 0
        versions.append(json.loads(rd.publish.read_text())["version"])
    store = LocalStore(tmp_path / "store")
    assert store.latest(PERSONA) == versions[1]
    assert cli.main(["rollback", "--persona", PERSONA]) == 0
    assert store.latest(PERSONA) == versions[0]
    assert cli.main(["rollback", "--persona", PERSONA, "--to", versions[1]]) == 0
    assert store.latest(PERSONA) == versions[1]
    out = capsys.readouterr().out
    assert f"{versions[1]} -> {versions[0]}" in out
    assert cli.main(["rollback", "--persona", PERSONA, "--to", "v-nope"]) == 1
    assert "'v-nope'" in capsys.readouterr().err


def test_cli_publish_refusal_exits_nonzero(tmp_path, capsys):
    rd = make_run(tmp_path / "run", decision="reject")
    assert cli.main(["publish", "--persona", PERSONA, "--run-dir", str(rd.root), "--store", str(tmp_path / "s")]) == 1
    assert "gate rejected" in capsys.readouterr().err


def test_community_namespace(tmp_path, persona):
    result = publish.run(persona, make_run(tmp_path / "run"), store_uri=str(tmp_path / "store"), namespace="policies/community-7")
    assert LocalStore(tmp_path / "store").latest("policies/community-7") == result["version"]
