"""The artifact store interface.

Layout (DESIGN.md):

    <store>/<persona_id>/<version>/   adapter/, config.yaml, metrics.json,
                                      eval/summary.json, model_card.json, MANIFEST.json
    <store>/<persona_id>/LATEST       the promoted version's name

A version is written in full and verified before `LATEST` moves; `LATEST`
moves atomically. `open_store(uri)` picks the backend from the URI: a path or
`file://` is the local store, `gs://bucket/prefix` is GCS.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path


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
    def promote(self, namespace: str, version: str, *, expected_current: str | None = ...) -> None:
        """Point LATEST at `version` (which must be complete).

        `expected_current` guards against a concurrent writer: when given (None
        meaning "no LATEST yet"), the promote fails with StoreError if LATEST
        is no longer what the caller read.
        """

    @abstractmethod
    def latest(self, namespace: str) -> str | None:
        ...

    @abstractmethod
    def list_versions(self, namespace: str) -> list[str]:
        """Complete versions, oldest first."""

    @abstractmethod
    def download(self, namespace: str, version: str, dest: Path) -> Path:
        """Fetch a version into `dest` (a cache keyed by version); returns the local dir."""

    def rollback(self, namespace: str, to: str | None = None) -> str:
        """Point LATEST at `to`, or at the version before the current one."""
        versions = self.list_versions(namespace)
        current = self.latest(namespace)
        if to is None:
            if current is None or current not in versions:
                raise StoreError(f"cannot roll back {namespace!r}: no current version")
            idx = versions.index(current)
            if idx == 0:
                raise StoreError(f"cannot roll back {namespace!r}: {current!r} is the oldest version")
            to = versions[idx - 1]
        elif to not in versions:
            raise VersionNotFound(f"version {to!r} of {namespace!r} not found; have {versions!r}")
        self.promote(namespace, to, expected_current=current)
        return to

    def version_uri(self, namespace: str, version: str) -> str:
        return f"{self.uri.rstrip('/')}/{namespace}/{version}"


def open_store(uri: str | os.PathLike[str] | None = None) -> Store:
    uri = str(uri or os.environ.get("PERSONA_DPO_STORE") or "store")
    if uri.startswith("gs://"):
        from dpo_tasks.store.gcs import GCSStore

        return GCSStore(uri)
    from dpo_tasks.store.local import LocalStore

    return LocalStore(uri.removeprefix("file://"))
