"""The shared failure callback: one line that says what failed and why."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from dpo_tasks.orchestration.common import default_args, on_failure_callback, safe_run_id

RUN = SimpleNamespace(dag_id="dpo_persona_b_indian_veg", run_id="manual__2026-11-22T03:00:00+00:00")


@pytest.mark.parametrize(
    "context, expected",
    [
        pytest.param(
            {"dag_run": RUN, "ti": SimpleNamespace(task_id="train_local", try_number=2),
             "exception": RuntimeError("train exited with code 1:\n  CUDA out of memory")},
            "PERSONA DPO FAILURE: dpo_persona_b_indian_veg run manual__2026-11-22T03:00:00+00:00 task train_local try 2 "
            "failed: RuntimeError: train exited with code 1: CUDA out of memory",
            id="task-failure",
        ),
        pytest.param(
            {"dag_run": RUN, "reason": "timed_out"},
            "PERSONA DPO FAILURE: dpo_persona_b_indian_veg run manual__2026-11-22T03:00:00+00:00 failed: timed_out",
            id="dag-run-timeout",
        ),
    ],
)
def test_failure_callback_logs_one_line(caplog, context, expected):
    with caplog.at_level(logging.ERROR, logger="dpo_tasks.orchestration.common"):
        on_failure_callback(context)
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_default_args_retry_with_backoff_and_allow_overrides():
    args = default_args(retries=5)
    assert args["retries"] == 5 and args["retry_exponential_backoff"] > 1 and args["max_retry_delay"]
    assert args["on_failure_callback"] is on_failure_callback and args["owner"] == "persona-dpo"


@pytest.mark.parametrize(
    "run_id, expected",
    [
        pytest.param("manual__2026-11-22T03:00:00.123+00:00", "manual__2026-11-22T03_00_00.123_00_00", id="manual"),
        pytest.param("../../etc", "etc", id="no-path-escape"),
    ],
)
def test_run_ids_become_safe_directory_names(run_id, expected):
    assert safe_run_id(run_id) == expected
