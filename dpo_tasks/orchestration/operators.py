"""The small operator the DAGs are made of, besides the stage pods (`pod.StagePodOperator`).

`StageOperator` calls one function of `dpo_tasks.orchestration.tasks` with the run description
(an XCom of `prepare`) and returns what it returns (a small summary) to XCom. It is a
PythonOperator without the virtualenv machinery that module imports: DAG files are parsed
constantly, and for every persona. A bad setting or input file (`ConfigError`, `InputFileError`)
fails the task without retry.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from airflow.sdk import BaseOperator


class StageOperator(BaseOperator):
    """`call(*args, run)`; without `run` (the `prepare` task), `call(*args)`."""

    template_fields: Sequence[str] = ("run",)
    ui_color = "#e3f2fd"

    def __init__(self, *, call: Callable[..., Any], args: Sequence[Any] = (), run: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.call = call
        self.args = tuple(args)
        self.run = run

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from dpo_tasks.config import ConfigError
        from dpo_tasks.loaders import InputFileError

        try:
            return self.call(*self.args) if self.run is None else self.call(*self.args, self.run)
        except (ConfigError, InputFileError) as exc:
            # Bad settings or a bad file fail the same way on every try: fail now, without retries.
            raise AirflowFailException(str(exc)) from exc

