"""`MANIFEST.json`: every file of a version with its size and sha256.

The publish step writes it last into the staged version directory; every store
backend checks a copy against it before `LATEST` may point there, so a
truncated upload or a corrupted file never becomes the served model.

    {"format": 1, "files": [{"path": "adapter/adapter_config.json", "size": 812, "sha256": "..."}, ...]}

Paths are relative, POSIX-style, sorted; the manifest does not list itself. A manifest is data
read back from a store: every entry's path is checked to stay inside the version directory
(`dpo_tasks.paths`) before it is read, written or downloaded to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dpo_tasks.loaders import InputFileError, brief, read_json
from dpo_tasks.paths import contained, safe_relpath
from dpo_tasks.runs import sha256_file
from dpo_tasks.store.base import StoreError

MANIFEST = "MANIFEST.json"
FORMAT = 1


class ManifestError(StoreError):
    """A version does not match its manifest (missing, truncated, corrupted or extra files)."""


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST)


def build_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    root = Path(root)
    return {
        "format": FORMAT,
        "files": [
            {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in _files(root)
        ],
    }


def write_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    manifest = build_manifest(root)
    (Path(root) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        manifest = read_json(path, what="manifest")
    except FileNotFoundError:
        raise ManifestError(f"{str(path)!r} is missing: the version is incomplete") from None
    except InputFileError as exc:
        raise ManifestError(str(exc)) from None
    return check_manifest(manifest, where=repr(str(path)))


def check_manifest(manifest: Any, *, where: str) -> dict[str, Any]:
    """A manifest's shape: a `files` list of {path, size, sha256}, each path relative and inside the version."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ManifestError(f"{where} has no 'files' list")
    seen: set[str] = set()
    for i, entry in enumerate(manifest["files"]):
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: files[{i}] must be an object with path, size and sha256")
        rel = safe_relpath(entry.get("path"), what=f"{where}: files[{i}] path", error=ManifestError)
        if rel == MANIFEST or rel in seen:
            raise ManifestError(f"{where}: files[{i}] path {rel!r} is listed twice or names the manifest itself")
        seen.add(rel)
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: files[{i}] ({rel!r}) size {size!r} must be a non-negative integer")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestError(f"{where}: files[{i}] ({rel!r}) sha256 must be 64 lowercase hex digits")
    return manifest


def verify_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every listed file's size and sha256, and that nothing unlisted is there.

    Raises ManifestError listing every problem; returns the manifest when all is well.
    """
    root = Path(root)
    manifest = read_manifest(root)
    problems = []
    listed = set()
    for entry in manifest["files"]:
        rel = entry["path"]
        listed.add(rel)
        # A symbolic link inside the version pointing out of it would let verification read elsewhere.
        path = contained(root, rel, what="manifest entry", error=ManifestError)
        if not path.is_file():
            problems.append(f"{rel!r} is missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{rel!r} has {path.stat().st_size} bytes, manifest says {entry.get('size')!r}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel!r} sha256 does not match the manifest")
    extra = [p.relative_to(root).as_posix() for p in _files(root) if p.relative_to(root).as_posix() not in listed]
    problems += [f"{rel!r} is not in the manifest" for rel in extra]
    if problems:
        raise ManifestError(f"version at {str(root)!r} fails verification: " + "; ".join(problems))
    return manifest
