"""The artifact store interface.

Layout (DESIGN.md):

    <store>/<persona_id>/<version>/   adapter/, config.yaml, metrics.json,
                                      eval/summary.json, model_card.json, MANIFEST.json
    <store>/<persona_id>/LATEST       the promoted version's name
    <store>/<persona_id>/HISTORY.jsonl every move of LATEST, oldest first (what was served)

A version is written in full and verified before `LATEST` moves; `LATEST`
moves atomically. `open_store(uri)` picks the backend from the URI: a path or
`file://` is the local store, `gs://bucket/prefix` is GCS.

Publish and rollback move LATEST through one function, `move_latest`: the backend's `promote`
records the move in the namespace's history as LATEST moves, and `after_promotion` is then called
with that record (the place for notifications of a newly served version). Rollback reads the
history: by default it returns to the version served before the current one; a named version must
have been served before, unless forced (`--to V --force`), which the history records and
`Store.model_card` reports.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpo_tasks.loaders import parse_json

log = logging.getLogger(__name__)

HISTORY = "HISTORY.jsonl"
# A LATEST pointer holds one version name; anything larger is not one.
MAX_POINTER_BYTES = 1024


def pointer_value(raw: bytes, where: str) -> str | None:
    """The version a LATEST pointer's bytes name (None when empty); InputFileError when they name none."""
    from dpo_tasks.loaders import InputFileError, brief, decode_utf8

    if len(raw) > MAX_POINTER_BYTES:
        raise InputFileError(where, f"is {len(raw)} bytes, over the limit of {MAX_POINTER_BYTES} for a LATEST pointer")
    value = decode_utf8(raw, where).strip()
    if value and (not value.isprintable() or value in (".", "..") or "/" in value or "\\" in value):
        raise InputFileError(where, f"holds {brief(value)}, not a version name (write the served version into it, or remove it)")
    return value or None


class StoreError(RuntimeError):
    pass


class VersionNotFound(StoreError):
    pass


class Store(ABC):
    uri: str

    @abstractmethod
    def upload_version(self, namespace: str, version: str, local_dir: Path) -> str:
        """Copy a complete version directory in and verify it against its manifest.

        Does not move LATEST. Returns the version's URI. Refuses to overwrite an
        existing complete version.
        """

    @abstractmethod
    def promote(self, namespace: str, version: str, *, expected_current: str | None = ..., record: dict[str, Any] | None = None) -> None:
        """Point LATEST at `version` (which must be complete) and append the move to the history.

        `expected_current` guards against a concurrent writer: when given (None
        meaning "no LATEST yet"), the promote fails with StoreError if LATEST
        is no longer what the caller read. `record` (action, forced, reason) is
        completed with the version, the previous one and the time, and appended
        to `HISTORY.jsonl` as LATEST moves. Callers outside the store use
        `move_latest`, which also runs `after_promotion`.
        """

    @abstractmethod
    def history(self, namespace: str) -> list[dict[str, Any]]:
        """Every recorded move of LATEST in `namespace`, oldest first."""

    @abstractmethod
    def read_file(self, namespace: str, version: str, rel: str) -> bytes:
        """One file of a stored version (e.g. `model_card.json`)."""

    @abstractmethod
    def latest(self, namespace: str) -> str | None:
        ...

    @abstractmethod
    def list_versions(self, namespace: str) -> list[str]:
        """Complete versions, oldest first."""

    @abstractmethod
    def download(self, namespace: str, version: str, dest: Path) -> Path:
        """Fetch a version into `dest` (a cache keyed by version); returns the local dir."""

    def served(self, namespace: str) -> list[str]:
        """The versions served, as a stack: publishes push, a rollback returns to an earlier entry.

        LATEST is the truth about the top: a current version whose move was never recorded (a store
        written before the history existed, a crash between the GCS LATEST write and the history
        append) is put on top, and recorded moves after its last serving are dropped.
        """
        stack: list[str] = []
        for rec in self.history(namespace):
            version = rec.get("version")
            if not isinstance(version, str):
                continue
            if stack and stack[-1] == version:
                continue  # a re-promote of the served version changes nothing
            if rec.get("action") == "rollback" and version in stack:
                del stack[len(stack) - stack[::-1].index(version):]
            else:
                stack.append(version)
        current = self.latest(namespace)
        if current is not None and current in stack:
            # Recorded moves after the current version's last serving did not take effect.
            del stack[len(stack) - stack[::-1].index(current):]
        elif current is not None:
            stack.append(current)
        return stack

    def rollback(self, namespace: str, to: str | None = None, *, force: bool = False) -> str:
        """Point LATEST back at the version served before the current one, or at `to`.

        `to` must have been served before (it is in the history); a version that never was (a dry
        run, a gate-rejected or a race-losing upload) needs `force`, and the history says so.
        """
        versions = self.list_versions(namespace)
        current = self.latest(namespace)
        stack = self.served(namespace)
        if to is None:
            if current is None:
                raise StoreError(f"cannot roll back {namespace!r}: no current version")
            if len(stack) < 2:
                raise StoreError(
                    f"cannot roll back {namespace!r}: {current!r} is the oldest served version in its history; "
                    "name a version with --to VERSION --force to serve one that was never served"
                )
            to = stack[-2]
        elif to not in versions:
            raise VersionNotFound(f"version {to!r} of {namespace!r} not found; have {versions!r}")
        if to == current:
            raise StoreError(f"cannot roll back {namespace!r} to {to!r}: it is already the served version")
        never_served = to not in stack and all(rec.get("version") != to for rec in self.history(namespace))
        if never_served and not force:
            raise StoreError(
                f"cannot roll back {namespace!r} to {to!r}: it was never served (a dry run, a gate-rejected or a "
                "superseded upload); use --to VERSION --force to serve it anyway"
            )
        reason = "rollback to a version that was never served (--force)" if never_served else None
        move_latest(self, namespace, to, expected_current=current, action="rollback", forced=never_served, reason=reason)
        return to

    def model_card(self, namespace: str, version: str) -> dict[str, Any]:
        """The version's `model_card.json` with `serving`: its history records and whether it was ever forced.

        The stored card is immutable (its manifest covers it); how the version came to be served is
        the history's to say.
        """
        try:
            card = parse_json(self.read_file(namespace, version, "model_card.json").decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise StoreError(f"model_card.json of {namespace}/{version} is not valid JSON") from None
        records = [rec for rec in self.history(namespace) if rec.get("version") == version]
        card["serving"] = {"history": records, "forced": any(rec.get("forced") for rec in records)}
        if any(rec.get("forced") and rec.get("action") == "rollback" for rec in records):
            card["serving"]["note"] = "served by a forced rollback: this version had never been served before"
        return card

    def version_uri(self, namespace: str, version: str) -> str:
        return f"{self.uri.rstrip('/')}/{namespace}/{version}"


def history_record(version: str, previous: str | None, record: dict[str, Any] | None) -> dict[str, Any]:
    """A history line: the caller's action/forced/reason plus the version, the previous one and the time."""
    rec = {"action": "promote", "forced": False, **(record or {})}
    rec.update(version=version, previous=previous, at=datetime.now(timezone.utc).isoformat(timespec="microseconds"))
    return {k: v for k, v in rec.items() if v is not None or k == "previous"}


def parse_history(text: str, where: str) -> list[dict[str, Any]]:
    """HISTORY.jsonl's records; a line that is not a JSON object is reported and skipped."""
    records = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            # The shared parser: a damaged line (deep nesting, huge numbers) is skipped, never a traceback.
            rec = parse_json(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            log.warning("%s line %d is not a history record; skipped", where, n)
            continue
        records.append(rec)
    return records


def move_latest(
    store: Store, namespace: str, version: str, *, expected_current: str | None = ..., action: str,  # type: ignore[assignment]
    forced: bool = False, reason: str | None = None,
) -> dict[str, Any]:
    """The one way publish and rollback move LATEST: promote (recording history), then `after_promotion`."""
    record = {"action": action, "forced": forced, "reason": reason}
    store.promote(namespace, version, expected_current=expected_current, record=record)
    done = store.history(namespace)
    last = next((r for r in reversed(done) if r.get("version") == version), history_record(version, expected_current, record))
    after_promotion(store, namespace, last)
    return last


def after_promotion(store: Store, namespace: str, record: dict[str, Any]) -> None:
    """Called once LATEST of `namespace` serves `record["version"]` (publish or rollback).

    The hook point for what must follow a change of the served model (notifications, lineage).
    """
    log.info(
        "served %s/%s in %s (%s%s; previous %r)", namespace, record["version"], store.uri, record.get("action"),
        ", forced" if record.get("forced") else "", record.get("previous"),
    )
    from dpo_tasks import asset_events, tracking

    # The registry's `champion` alias follows LATEST; MLflow being down is logged, never raised.
    tracking.on_served(namespace, record["version"])
    # Outside an Airflow task (a CLI rollback), the asset event goes through Airflow's REST API when configured.
    asset_events.notify(namespace, record)


def open_store(uri: str | os.PathLike[str] | None = None) -> Store:
    uri = str(uri or os.environ.get("PERSONA_DPO_STORE") or "store")
    if uri.startswith("gs://"):
        from dpo_tasks.store.gcs import GCSStore

        return GCSStore(uri)
    from dpo_tasks.store.local import LocalStore

    return LocalStore(uri.removeprefix("file://"))
