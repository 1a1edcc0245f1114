import json

import pytest

from dpo_tasks import cli, gate
from dpo_tasks.config import ConfigError, load_persona, with_overrides
from dpo_tasks.runs import RunDir, write_json
from dpo_tasks.stats import win_rate

PERSONA = "persona_e_mexican_vegan"


def _write_eval(run_dir, outcomes):
    stats = win_rate(outcomes).as_dict() | {"judge": "rules", "baseline": {"kind": "base"}}
    write_json(RunDir(run_dir).eval / "summary_stats.json", stats)
    return stats


@pytest.mark.parametrize(
    ("outcomes", "threshold", "decision"),
    [
        pytest.param(["win"] * 18 + ["loss"] * 2, 0.5, "promote", id="clear-win"),
        pytest.param(["win"] * 12 + ["loss"] * 8, 0.5, "reject", id="point-estimate-above-but-ci-below"),
        pytest.param(["tie"] * 20, 0.5, "reject", id="all-ties"),
        pytest.param(["win"] * 12 + ["loss"] * 8, 0.3, "promote", id="lower-threshold"),
        pytest.param(["loss"] * 20, 0.0, "promote", id="threshold-zero-accepts-anything"),
    ],
)
def test_gate_decision(tmp_path, outcomes, threshold, decision):
    persona = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": threshold}})
    stats = _write_eval(tmp_path, outcomes)
    result = gate.run(persona, tmp_path)
    on_disk = json.loads((tmp_path / "gate.json").read_text())
    assert on_disk["decision"] == result["decision"] == decision
    assert on_disk["threshold"] == threshold
    assert on_disk["ci_low"] == stats["ci_low"] and on_disk["n"] == 20
    assert f"{threshold:.3f}" in on_disk["reason"]


def test_gate_at_the_boundary_promotes(tmp_path):
    stats = _write_eval(tmp_path, ["win"] * 18 + ["loss"] * 2)
    persona = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": stats["ci_low"]}})
    assert gate.run(persona, tmp_path)["decision"] == "promote"
    just_above = with_overrides(load_persona(PERSONA), {"gate": {"min_win_rate_lower_bound": stats["ci_low"] + 1e-6}})
    assert gate.run(just_above, tmp_path)["decision"] == "reject"


def test_gate_rejects_when_nothing_was_judged(tmp_path):
    _write_eval(tmp_path, [])
    result = gate.run(load_persona(PERSONA), tmp_path)
    assert result["decision"] == "reject" and "n=0" in result["reason"]


def test_gate_without_evaluation_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="evaluate"):
        gate.run(load_persona(PERSONA), tmp_path)


@pytest.mark.parametrize(
    ("extra", "decision"),
    [pytest.param([], "reject", id="default-threshold"), pytest.param(["--set", "gate.min_win_rate_lower_bound=0.3"], "promote", id="set-override")],
)
def test_gate_cli_exits_zero_both_ways(tmp_path, capsys, extra, decision):
    _write_eval(tmp_path, ["win"] * 12 + ["loss"] * 8)
    rc = cli.main(["gate", "--persona", PERSONA, "--run-dir", str(tmp_path), *extra])
    assert rc == 0
    assert json.loads((tmp_path / "gate.json").read_text())["decision"] == decision
    assert f"gate: {decision}" in capsys.readouterr().out
