"""One reader for every input file: bad bytes become an error naming the file and line, never a traceback.

DPO datasets, feedback files, personas.yaml, manifests and run files all come
through here. What a hostile or careless file can hold, and what happens:

- not a regular file (a directory, a FIFO that would block, a device): refused;
- larger than the caller's cap: refused before it is read;
- a UTF-8 byte-order mark at the start: skipped (spreadsheets write one);
- bytes that are not UTF-8: the line that holds them is named;
- JSON nested deeper than `MAX_DEPTH`, integers longer than Python's digit limit,
  `NaN`/`Infinity`, lone surrogate escapes (`"\\ud800"`, which no UTF-8 writer or
  database accepts): an error for that line;
- U+2028, U+0085 and other Unicode line breaks inside a JSON string are data:
  JSONL is split on `\\n` only (never `str.splitlines()`, which would cut a valid
  record in two).

`InputFileError` is a `ValueError`; the CLI turns it into exit code 2 and the
Airflow tasks into a failure without retry (the same bytes fail the same way on
every try).

Only the standard library is imported: the DAG files import this module.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Iterator

MAX_DEPTH = 64
# A line or a JSON file over this is refused unless the caller allows more.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_brief = reprlib.Repr()
_brief.maxstring = 80
_brief.maxother = 80
_brief.maxlist = _brief.maxtuple = _brief.maxset = _brief.maxdict = 6
_brief.maxlevel = 3
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def brief(value: Any) -> str:
    """`repr(value)`, bounded: an error message never echoes a megabyte (or an alias bomb's expansion)."""
    return _brief.repr(value)


class InputFileError(ValueError):
    """A file cannot be used as input; the message names the file, the line when there is one, and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str, *, line: int | None = None):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def check_regular_file(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int | None = None) -> Path:
    """The path as a Path when it is a regular file within `max_bytes`; FileNotFoundError / InputFileError otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {str(path)!r}") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read the {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(path, f"is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, f"is not a regular file (a device, pipe or socket), expected a {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(path, f"is {st.st_size} bytes, over the limit of {max_bytes} for a {what}")
    return path


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode_utf8(data: bytes, path: str | os.PathLike[str], *, first_line: int = 1) -> str:
    """UTF-8 text without a leading BOM; an InputFileError naming the line of the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise InputFileError(
            path, f"not UTF-8 text: byte {data[exc.start]:#04x} at column {column} "
                  "cannot be decoded (save the file as UTF-8)",
            line=first_line - 1 + _line_of(data, exc.start),
        ) from None
    return text.removeprefix("\ufeff")


def read_text(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """A whole text file, checked as above."""
    path = check_regular_file(path, what=what, max_bytes=max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot read the {what}: {exc.strerror or exc}") from None
    return decode_utf8(data, path)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(obj: Any, limit: int) -> None:
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class JSONProblem(ValueError):
    """Why a JSON text is unusable; `line` is its line within the text when the parser knows it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def parse_json(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that raises JSONProblem (a ValueError) with a plain message for everything a hostile document can do."""
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"not valid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        raise JSONProblem(f"not usable JSON: nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        # int digits over sys.get_int_max_str_digits(), NaN/Infinity
        raise JSONProblem(f"not usable JSON: {str(exc).split(';')[0]}") from None
    try:
        _depth(obj, max_depth)
    except ValueError as exc:
        raise JSONProblem(f"not usable JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise JSONProblem("not usable JSON: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return obj


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file", max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """One JSON document from a file; InputFileError naming the file and line otherwise."""
    text = read_text(path, what=what, max_bytes=max_bytes)
    try:
        return parse_json(text, max_depth=max_depth)
    except JSONProblem as exc:
        raise InputFileError(path, str(exc), line=exc.line) from None


def iter_jsonl(path: str | os.PathLike[str], *, what: str = "JSONL file", max_bytes: int | None = DEFAULT_MAX_BYTES,
               max_line_bytes: int = 16 * 1024 * 1024, max_depth: int = MAX_DEPTH) -> Iterator[tuple[int, Any]]:
    """(line number, record or ValueError) per non-blank line, streamed.

    A bad line yields its error instead of a record so the caller can report it
    and go on; only problems with the file itself raise (`max_bytes=None`: no size
    limit, memory stays flat anyway). Lines are split on
    `\\n` alone: U+2028/U+0085 inside a string are not line ends in JSONL.
    """
    path = check_regular_file(path, what=what, max_bytes=max_bytes)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputFileError(path, f"cannot read the {what}: {exc.strerror or exc}") from None
    with fh:
        lineno = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                # Skip the rest of this line: report it once, do not read it into memory.
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(1 << 20)
                yield lineno, ValueError(f"line is longer than {max_line_bytes} bytes")
                continue
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            raw = raw.rstrip(b"\n").removesuffix(b"\r")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, ValueError(f"not UTF-8: byte {raw[exc.start]:#04x} at column {exc.start + 1} cannot be decoded")
                continue
            try:
                yield lineno, parse_json(text, max_depth=max_depth)
            except ValueError as exc:
                yield lineno, exc
