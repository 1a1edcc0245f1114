"""Wait for a persona's feedback to cross its retrain threshold, without holding a worker slot.

`FeedbackThresholdSensor` defers to `FeedbackThresholdTrigger`, which the
triggerer runs: it polls the `feedback_db` connection with psycopg 3's async
driver and fires once the rule in `dpo_tasks.feedback.rule` holds. With
`deferrable=False` the sensor pokes the same query itself (use
`mode="reschedule"` so it frees its slot between pokes).

Polling only reads. The sensor's result is what it saw; acting on it (moving
the watermark, starting a run) is the monitor's claim task, in one
transaction. A database that is down, slow or drops the connection mid-poll
is logged and retried with capped exponential backoff: no partial window is
ever reported and the sensor does not fail because of it (its `timeout`
still applies).

The classes live in the package rather than only in `plugins/` because the
triggerer re-imports the trigger by its class path: `dpo_tasks.feedback.sensor`
resolves wherever the package is installed, whatever the deployment's plugins
folder is. `plugins/feedback_sensor.py` exposes them under the plugin name.

    FeedbackThresholdSensor(
        task_id="wait_for_drift", persona_id="persona_b_indian_veg",
        min_feedback=50, max_good_ratio=0.6, cooldown_hours=24,
    )
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, AsyncIterator

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dpo_tasks.config import FeedbackConfig
from dpo_tasks.feedback.db import DEFAULT_CONN_ID
from dpo_tasks.feedback.rule import WINDOW_SQL, Window, decide, window_from_row

log = logging.getLogger(__name__)

# Keys in a Postgres connection's extra that Airflow's hook consumes itself; not libpq options.
_HOOK_ONLY_EXTRAS = {"cursor", "iam", "redshift", "redshift-serverless", "aws_conn_id", "cluster-identifier",
                     "workgroup-name", "azure_conn_id", "enable_log_db_messages", "sqlalchemy_scheme",
                     "sqlalchemy_options", "sqlalchemy_query"}


_CONNECT_TIMEOUT_S = 10


def window_event(window: Window, reason: str) -> dict[str, Any]:
    return {
        "status": "crossing",
        "persona_id": window.persona_id,
        "from_id": window.from_id,
        "to_id": window.to_id,
        "total": window.total,
        "good": window.good,
        "reason": reason,
        "observed_at": window.db_now.isoformat(),
    }


class FeedbackThresholdTrigger(BaseTrigger):
    """Polls one persona's feedback window until the retrain rule holds, then fires once."""

    def __init__(
        self,
        *,
        persona_id: str,
        min_feedback: int,
        max_good_ratio: float,
        cooldown_hours: float,
        conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        max_backoff: float = 600.0,
        statement_timeout_s: float = 30.0,
        deadline: float | None = None,
    ):
        super().__init__()
        self.persona_id = persona_id
        self.rule = FeedbackConfig(min_feedback=min_feedback, max_good_ratio=max_good_ratio, cooldown_hours=cooldown_hours)
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.max_backoff = float(max_backoff)
        self.statement_timeout_s = float(statement_timeout_s)
        # Epoch seconds after which the trigger reports "quiet" instead of polling on: the
        # sensor's timeout, enforced here too so it also holds where triggers run inline (dag.test).
        self.deadline = deadline
        self._conn: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "persona_id": self.persona_id,
                "min_feedback": self.rule.min_feedback,
                "max_good_ratio": self.rule.max_good_ratio,
                "cooldown_hours": self.rule.cooldown_hours,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "max_backoff": self.max_backoff,
                "statement_timeout_s": self.statement_timeout_s,
                "deadline": self.deadline,
            },
        )

    async def _connect(self) -> Any:
        import psycopg
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(self.conn_id)
        kwargs: dict[str, Any] = {
            "host": conn.host, "port": conn.port, "user": conn.login, "password": conn.password, "dbname": conn.schema,
        }
        kwargs.update({k: v for k, v in conn.extra_dejson.items() if k not in _HOOK_ONLY_EXTRAS})
        kwargs.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        # A slow server ends in an error we back off from, not in a poll that hangs forever.
        kwargs["options"] = f"{kwargs.get('options', '')} -c statement_timeout={int(self.statement_timeout_s * 1000)}".strip()
        return await psycopg.AsyncConnection.connect(**{k: v for k, v in kwargs.items() if v not in (None, "")}, autocommit=True)

    async def poll(self) -> Window:
        """One read of the window, on a connection kept between polls and reopened after a failure."""
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        async with self._conn.cursor() as cur:
            await cur.execute(WINDOW_SQL, {"persona_id": self.persona_id})
            row = await cur.fetchone()
        return window_from_row(self.persona_id, row)

    async def _close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:  # closing a connection the server already dropped
                pass
            self._conn = None

    def _until_deadline(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def _sleep(self, seconds: float) -> None:
        left = self._until_deadline()
        await asyncio.sleep(seconds if left is None else max(0.0, min(seconds, left)))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import psycopg

        failures = 0
        try:
            while True:
                left = self._until_deadline()
                if left is not None and left <= 0:
                    self.log.info("persona %s: no crossing before the deadline", self.persona_id)
                    yield TriggerEvent({"status": "quiet", "persona_id": self.persona_id})
                    return
                try:
                    # The client-side bound covers what statement_timeout cannot: a server or
                    # network that stops answering altogether. TimeoutError is an OSError.
                    window = await asyncio.wait_for(self.poll(), self.statement_timeout_s + _CONNECT_TIMEOUT_S + 5)
                except (psycopg.Error, OSError) as exc:
                    await self._close()
                    failures += 1
                    delay = min(self.max_backoff, self.poll_interval * 2 ** (failures - 1))
                    self.log.warning(
                        "feedback_db %r unavailable while polling persona %s (%s: %s); attempt %d failed, retrying in %.1fs",
                        self.conn_id, self.persona_id, type(exc).__name__, " ".join(str(exc).split())[:200], failures, delay,
                    )
                    await self._sleep(delay)
                    continue
                if failures:
                    self.log.info("feedback_db %r reachable again after %d failed attempt(s)", self.conn_id, failures)
                    failures = 0
                decision = decide(window, self.rule)
                if decision.retrain:
                    self.log.info("persona %s crossed its feedback threshold: %s", self.persona_id, decision.reason)
                    yield TriggerEvent(window_event(window, decision.reason))
                    return
                self.log.info("persona %s: %s; next poll in %.1fs", self.persona_id, decision.reason, self.poll_interval)
                await self._sleep(self.poll_interval)
        finally:
            await self._close()


class FeedbackThresholdSensor(BaseSensorOperator):
    """Succeeds with the feedback window (`{persona_id, from_id, to_id, total, good, ...}`) once the rule holds."""

    template_fields = ("persona_id",)
    ui_color = "#f6e7c1"

    def __init__(
        self,
        *,
        persona_id: str,
        min_feedback: int,
        max_good_ratio: float,
        cooldown_hours: float,
        conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = True,
        max_backoff: float = 600.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.persona_id = persona_id
        # Validated here so a bad threshold is a DAG import error naming the field, not a failed poll.
        self.rule = FeedbackConfig(min_feedback=min_feedback, max_good_ratio=max_good_ratio, cooldown_hours=cooldown_hours)
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.max_backoff = max_backoff

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=FeedbackThresholdTrigger(
                persona_id=self.persona_id,
                min_feedback=self.rule.min_feedback,
                max_good_ratio=self.rule.max_good_ratio,
                cooldown_hours=self.rule.cooldown_hours,
                conn_id=self.conn_id,
                poll_interval=self.poke_interval,
                max_backoff=self.max_backoff,
                deadline=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "quiet":
            # With soft_fail (the monitor's setting) the base class turns this into a skip.
            raise AirflowSensorTimeout(f"persona {self.persona_id}: feedback stayed under its threshold for {self.timeout:.0f}s")
        if event.get("status") != "crossing":
            raise RuntimeError(f"feedback trigger for persona {self.persona_id!r} sent an unexpected event {event!r}")
        self.log.info("persona %s: %s", self.persona_id, event["reason"])
        return event

    def poke(self, context: Any) -> bool | PokeReturnValue:
        from dpo_tasks.feedback.db import connect
        from dpo_tasks.feedback.rule import poll_window

        try:
            conn = connect(conn_id=self.conn_id)
            try:
                window = poll_window(conn, self.persona_id)
            finally:
                conn.close()
        except Exception as exc:  # psycopg2, psycopg 3 or the hook: any of them means "not now"
            if not _is_db_error(exc):
                raise
            self.log.warning(
                "feedback_db %r unavailable while poking persona %s (%s: %s); trying again at the next poke",
                self.conn_id, self.persona_id, type(exc).__name__, " ".join(str(exc).split())[:200],
            )
            return False
        decision = decide(window, self.rule)
        self.log.info("persona %s: %s", self.persona_id, decision.reason)
        if not decision.retrain:
            return False
        return PokeReturnValue(is_done=True, xcom_value=window_event(window, decision.reason))


def _is_db_error(exc: BaseException) -> bool:
    from dpo_tasks.feedback.db import FeedbackDBError

    kinds: list[type[BaseException]] = [FeedbackDBError, OSError]
    for module in ("psycopg2", "psycopg"):
        try:
            kinds.append(__import__(module).Error)
        except ImportError:
            continue
    return isinstance(exc, tuple(kinds))
