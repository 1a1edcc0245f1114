"""The local-directory artifact store (the embedded default; `./store` or `$PERSONA_DPO_STORE`).

    <root>/<namespace>/<version>/   a complete, verified version (has MANIFEST.json)
    <root>/<namespace>/LATEST       the promoted version's name
    <root>/<namespace>/HISTORY.jsonl every move of LATEST (appended, fsynced, before LATEST moves)
    <root>/<namespace>/.lock        serialises promotes (flock)
    <root>/<namespace>/.incoming-*  a version being copied in; never listed, never promoted

Crash safety comes from the filesystem: a version is copied into a hidden
directory, verified against its manifest and only then renamed into place
(rename is atomic within a filesystem), and `LATEST` is replaced with
write-temp + fsync + `os.replace`. A crash at any point leaves `LATEST` on the
old version and at worst a stale `.incoming-*` directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
import json
from typing import Any, Iterator

from dpo_tasks.loaders import check_regular_file
from dpo_tasks.paths import contained, safe_relpath
from dpo_tasks.store.base import (
    HISTORY, MAX_POINTER_BYTES, Store, StoreError, VersionNotFound, history_record, parse_history, pointer_value,
)
from dpo_tasks.store.manifest import MANIFEST, ManifestError, read_manifest, verify_manifest

LATEST = "LATEST"


# Names inside a namespace that are the store's own, never a version or a namespace.
RESERVED_NAMES = frozenset({LATEST, MANIFEST, HISTORY})


def _check_name(kind: str, value: str) -> None:
    safe_relpath(value, what=kind, allow_dot_names=False, error=StoreError)
    if value.split("/")[-1] in RESERVED_NAMES:
        raise StoreError(f"{kind} {value!r} is a name the store uses for itself ({', '.join(sorted(RESERVED_NAMES))})")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _ns(self, namespace: str) -> Path:
        _check_name("namespace", namespace)
        return contained(self.root, namespace, what="namespace", error=StoreError)

    def _version_dir(self, namespace: str, version: str) -> Path:
        _check_name("version", version)
        if "/" in version:
            raise StoreError(f"version {version!r} must not contain '/'")
        return self._ns(namespace) / version

    @contextmanager
    def _lock(self, namespace: str) -> Iterator[None]:
        ns = self._ns(namespace)
        ns.mkdir(parents=True, exist_ok=True)
        with open(ns / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def upload_version(self, namespace: str, version: str, local_dir: Path) -> str:
        local_dir = Path(local_dir)
        target = self._version_dir(namespace, version)
        if target.exists():
            raise StoreError(f"version {version!r} of {namespace!r} already exists at {str(target)!r}; versions are immutable")
        # Refuse a source that is itself inconsistent: the copy would verify against a wrong manifest.
        verify_manifest(local_dir)
        ns = self._ns(namespace)
        ns.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(dir=ns, prefix=f".incoming-{version}-"))
        try:
            shutil.copytree(local_dir, incoming, dirs_exist_ok=True)
            for path in incoming.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
            verify_manifest(incoming)
            os.chmod(incoming, 0o755)
            try:
                # rename(2) onto an existing non-empty directory fails, so two
                # uploads of the same version cannot both land.
                os.rename(incoming, target)
            except OSError:
                raise StoreError(f"version {version!r} of {namespace!r} appeared while uploading; versions are immutable") from None
            _fsync_dir(ns)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return self.version_uri(namespace, version)

    def verify(self, namespace: str, version: str) -> dict:
        """Re-check a stored version against its manifest (raises ManifestError)."""
        target = self._version_dir(namespace, version)
        if not target.is_dir():
            raise VersionNotFound(f"version {version!r} of {namespace!r} not found in {self.uri!r}")
        return verify_manifest(target)

    def promote(self, namespace: str, version: str, *, expected_current: str | None = ..., record: dict[str, Any] | None = None) -> None:  # type: ignore[assignment]
        with self._lock(namespace):
            self.verify(namespace, version)
            current = self.latest(namespace)
            if expected_current is not ... and current != expected_current:
                raise StoreError(
                    f"LATEST of {namespace!r} is {current!r}, expected {expected_current!r}: "
                    "another publish or rollback moved it first; re-read and retry"
                )
            ns = self._ns(namespace)
            # Recorded first, under the lock: a LATEST that moved is always in the history (a crash
            # in between leaves a record of a move that did not happen; `served` trusts LATEST over it).
            if current != version:  # re-pointing LATEST at itself is not a move
                with open(ns / HISTORY, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(history_record(version, current, record)) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            fd, tmp = tempfile.mkstemp(dir=ns, prefix=".LATEST.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(version + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, ns / LATEST)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(ns)

    def history(self, namespace: str) -> list[dict[str, Any]]:
        path = self._ns(namespace) / HISTORY
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except IsADirectoryError:
            raise StoreError(f"{str(path)!r} is a directory, not the promotion history") from None
        return parse_history(data.decode("utf-8", "replace"), str(path))

    def read_file(self, namespace: str, version: str, rel: str) -> bytes:
        src = self._version_dir(namespace, version)
        if not (src / MANIFEST).is_file():
            raise VersionNotFound(f"version {version!r} of {namespace!r} not found in {self.uri!r}")
        path = contained(src, rel, what="file of a version", error=StoreError)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise StoreError(f"{namespace}/{version} has no file {rel!r}") from None

    def latest(self, namespace: str) -> str | None:
        path = self._ns(namespace) / LATEST
        try:
            check_regular_file(path, what="LATEST pointer", max_bytes=MAX_POINTER_BYTES)
            return pointer_value(path.read_bytes(), str(path))
        except FileNotFoundError:
            return None

    def list_versions(self, namespace: str) -> list[str]:
        ns = self._ns(namespace)
        if not ns.is_dir():
            return []
        return sorted(p.name for p in ns.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())

    def download(self, namespace: str, version: str, dest: Path) -> Path:
        src = self._version_dir(namespace, version)
        if not (src / MANIFEST).is_file():
            raise VersionNotFound(f"version {version!r} of {namespace!r} not found in {self.uri!r}; have {self.list_versions(namespace)!r}")
        dest = Path(dest)
        if dest.is_dir():
            try:
                if read_manifest(dest) == read_manifest(src):
                    verify_manifest(dest)
                    return dest
            except ManifestError:
                pass
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            shutil.copytree(src, partial, dirs_exist_ok=True)
            verify_manifest(partial)
            os.rename(partial, dest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return dest
