"""Copy run files between a run directory and a store URI (the training pod's inputs and outputs).

A URI is `gs://bucket/prefix` or a local path (`file://` allowed). The worker
stages a run's inputs with `push`, the pod `pull`s them, trains, and `push`es
`train/` back; the worker `pull`s that. Every transfer is checked: GCS
verifies each upload's crc32c, downloads are checked against the object's
crc32c, and a local file only appears under its final name once complete
(temp file + rename), so a killed transfer never leaves a plausible half file.
A file that is already there with the same size and crc32c is not copied
again, so a retried pod resumes instead of re-sending a multi-GB adapter.
Names read from the far side (object names, files under a source directory) are checked to stay
inside the destination (`dpo_tasks.paths`): an object `../x` or a symbolic link out of the source
is refused, never followed.

    python -m dpo_tasks sync runs/p/r gs://bucket/_staging/p/r/inputs --path dpo.jsonl
    python -m dpo_tasks sync gs://bucket/_staging/p/r/outputs runs/p/r
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from dpo_tasks.paths import UnsafePath, contained, is_within
from dpo_tasks.runs import Progress
from dpo_tasks.store.gcs import crc32c_b64, make_client, split_gs_uri

log = logging.getLogger(__name__)


def _is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def _local(uri: str | os.PathLike[str]) -> Path:
    return Path(str(uri).removeprefix("file://"))


def _files(root: Path, rel_paths: Iterable[str] | None) -> list[tuple[Path, str]]:
    rel_paths = list(rel_paths) if rel_paths is not None else ["."]
    out: list[tuple[Path, str]] = []
    for rel in rel_paths:
        src = root if rel == "." else contained(root, rel, what="path to push")
        if src.is_dir():
            out += [(p, p.relative_to(root).as_posix()) for p in sorted(src.rglob("*")) if p.is_file()]
        elif src.is_file():
            out.append((src, Path(rel).as_posix()))
        else:
            raise FileNotFoundError(f"{str(src)!r} does not exist; nothing to push")
    return out


def _copy_local(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_local(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and crc32c_b64(a) == crc32c_b64(b)


def push(root: str | os.PathLike[str], rel_paths: Iterable[str] | None, uri: str, *, client: Any = None) -> int:
    """Copy `rel_paths` (files or directories under `root`; all of `root` when None) to `uri`.

    Relative paths are kept. Inside a pushed directory, files at the destination
    that no longer exist locally are removed, so the destination mirrors what
    the stage produced (a retried pod leaves no stale checkpoint behind).
    Returns the number of files copied (unchanged ones are skipped).
    """
    root = Path(root)
    files = _files(root, rel_paths)
    dirs = [Path(rel).as_posix().strip("/") for rel in (rel_paths if rel_paths is not None else ["."]) if (root / rel).is_dir()]
    wanted = {rel for _, rel in files}
    copied = 0
    progress = Progress(f"push to {uri}", len(files), unit="files", logger=log)
    if _is_gcs(uri):
        from google.cloud.storage.retry import DEFAULT_RETRY

        bucket_name, prefix = split_gs_uri(uri)
        client = client or make_client()
        bucket = client.bucket(bucket_name)
        key = (lambda rel: f"{prefix}/{rel}" if prefix else rel)
        existing = {b.name: b for d in dirs for b in client.list_blobs(bucket_name, prefix=key("" if d == "." else d + "/"))}
        for src, rel in files:
            blob = existing.get(key(rel)) or bucket.get_blob(key(rel))
            if blob is None or blob.size != src.stat().st_size or blob.crc32c != crc32c_b64(src):
                # Re-sending the same file is idempotent: retry transient errors.
                bucket.blob(key(rel)).upload_from_filename(str(src), checksum="crc32c", retry=DEFAULT_RETRY)
                copied += 1
            progress.advance()
        for name, blob in existing.items():
            rel = name[len(prefix) + 1:] if prefix else name
            if rel not in wanted:
                blob.delete()
    else:
        dest_root = _local(uri)
        for src, rel in files:
            if not _same_local(src, dest_root / rel):
                _copy_local(src, dest_root / rel)
                copied += 1
            progress.advance()
        for d in dirs:
            base = dest_root / d
            stale = [p for p in base.rglob("*") if p.is_file() and p.relative_to(dest_root).as_posix() not in wanted] if base.is_dir() else []
            for p in stale:
                p.unlink()
    log.info("pushed %d of %d files from %s to %s", copied, len(files), root, uri)
    return copied


def pull(uri: str, root: str | os.PathLike[str], *, client: Any = None) -> int:
    """Copy everything under `uri` into `root` (keeping relative paths); returns the files copied."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    copied = 0
    if _is_gcs(uri):
        bucket_name, prefix = split_gs_uri(uri)
        client = client or make_client()
        blobs = [b for b in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None) if not b.name.endswith("/")]
        if not blobs:
            raise FileNotFoundError(f"nothing stored under {uri!r}")
        # Every name is checked before the first byte is written: a bad listing changes nothing.
        targets = [(blob, contained(root, blob.name[len(prefix) + 1:] if prefix else blob.name, what=f"object under {uri!r}")) for blob in blobs]
        progress = Progress(f"pull from {uri}", len(blobs), unit="files", logger=log)
        for blob, dest in targets:
            if not (dest.is_file() and dest.stat().st_size == blob.size and crc32c_b64(dest) == blob.crc32c):
                _download(blob, dest)
                copied += 1
            progress.advance()
        total = len(blobs)
    else:
        src_root = _local(uri)
        if not src_root.is_dir():
            raise FileNotFoundError(f"nothing stored under {uri!r}")
        files = [p for p in sorted(src_root.rglob("*")) if p.is_file()]
        for p in files:
            if not is_within(p, src_root):
                raise UnsafePath(f"{str(p)!r} under {uri!r} is a link to {os.path.realpath(p)!r}, outside it; refusing to copy it")
        for p in files:
            dest = contained(root, p.relative_to(src_root).as_posix(), what=f"file under {uri!r}")
            if not _same_local(p, dest):
                _copy_local(p, dest)
                copied += 1
        total = len(files)
    log.info("pulled %d of %d files from %s into %s", copied, total, uri, root)
    return copied


def _download(blob: Any, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        blob.download_to_filename(tmp, checksum="crc32c")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_file(uri: str, dest: str | os.PathLike[str], *, client: Any = None) -> Path:
    """One file (e.g. a community's dataset) from a path, `file://` or `gs://` URI into `dest`."""
    dest = Path(dest)
    if _is_gcs(uri):
        bucket_name, name = split_gs_uri(uri)
        blob = (client or make_client()).bucket(bucket_name).get_blob(name)
        if blob is None:
            raise FileNotFoundError(f"{uri!r} does not exist")
        _download(blob, dest)
        return dest
    src = _local(uri)
    if not src.is_file():
        raise FileNotFoundError(f"{uri!r} is not a readable file")
    _copy_local(src, dest)
    return dest


def make_parser(command: str = "sync") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("src", help="local directory or gs:// URI")
    parser.add_argument("dest", help="local directory or gs:// URI")
    parser.add_argument("--path", action="append", metavar="REL", help="when pushing a local dir: only these relative files/dirs (repeatable; default: everything)")
    return parser


def main(args: argparse.Namespace) -> int:
    if _is_gcs(args.src):
        if _is_gcs(args.dest) or args.path:
            raise SystemExit("sync: pulling from gs:// needs a local DEST and takes no --path")
        pull(args.src, _local(args.dest))
    elif _local(args.src).is_dir():
        push(_local(args.src), args.path, args.dest)
    else:
        raise SystemExit(f"sync: SRC {args.src!r} is neither a gs:// URI nor a local directory")
    return 0
