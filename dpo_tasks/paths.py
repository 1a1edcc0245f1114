"""Paths built from data stay inside their root.

A manifest entry, an object name, a version, a namespace or an uploaded file's path comes from
something this process did not write itself (a bucket listing, a JSON file, a run's conf). Before
such a name becomes a filesystem path or an object key it goes through here:

    rel = safe_relpath(entry["path"], what="manifest entry")     # 'adapter/x.bin'; '..', '/x' refused
    dest = contained(root, entry["path"], what="manifest entry")  # root / rel, resolved, still under root

`safe_relpath` is purely lexical (also right for object keys, which have no symlinks);
`contained` additionally resolves symlinks on disk, so a link inside the root that points out of
it does not let a write or a read escape. Both raise `UnsafePath` (a ConfigError: bad input,
exit code 2, no retry) unless the caller names its own error class.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath

from dpo_tasks.config import ConfigError


class UnsafePath(ConfigError):
    """A name built from data would leave its root (absolute, `..`, a control character, ...)."""


def _problem(value: object, *, allow_slash: bool, allow_dot_names: bool) -> str | None:
    if not isinstance(value, str) or not value:
        return "is empty or not a string"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        return "contains a control or invisible character"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        return "is absolute"
    parts = value.split("/")
    if not allow_slash and len(parts) > 1:
        return "contains '/'"
    if any(p == "" for p in parts):
        return "has an empty path segment ('//' or a trailing '/')"
    if any(p in (".", "..") for p in parts):
        return "contains a '.' or '..' segment"
    if not allow_dot_names and any(p.startswith(".") for p in parts):
        return "has a hidden ('.'-prefixed) segment"
    return None


def safe_relpath(
    value: object, *, what: str, allow_slash: bool = True, allow_dot_names: bool = True,
    error: type[Exception] = UnsafePath,
) -> str:
    """`value` as a relative POSIX path that cannot leave its root; `error` naming `what` otherwise."""
    problem = _problem(value, allow_slash=allow_slash, allow_dot_names=allow_dot_names)
    if problem:
        raise error(f"{what} {value!r} is not a safe relative path: it {problem}")
    return PurePosixPath(value).as_posix()  # type: ignore[arg-type]


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def contained(root: str | os.PathLike[str], rel: object, *, what: str, error: type[Exception] = UnsafePath) -> Path:
    """`root / rel`, refused unless `rel` is a safe relative path and its resolved location stays under `root`."""
    safe = safe_relpath(rel, what=what, error=error)
    path = Path(root) / safe
    if not is_within(path, root):
        raise error(f"{what} {rel!r} resolves outside {str(root)!r} (through a symbolic link)")
    return path
