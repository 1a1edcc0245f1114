"""The Google Cloud Storage artifact store: `gs://bucket/prefix`.

    <prefix>/<namespace>/<version>/...              every file of the version
    <prefix>/<namespace>/<version>/MANIFEST.json    uploaded last, only after every file
                                                    verified: its presence marks the version complete
    <prefix>/<namespace>/LATEST                     the promoted version's name
    <prefix>/<namespace>/HISTORY.jsonl              every move of LATEST, appended after the LATEST
                                                    write wins (a generation-guarded read-modify-write)
    <prefix>/policies/<communityId>/LATEST/         adapter/, config.yaml, metrics.json of the
                                                    promoted version, where the serving
                                                    microservice reads a community's policy

GCS has no rename and no locks, so safety comes from ordering and preconditions:
a version's files go up first (crc32c checked by GCS on every upload), then the
listing is checked against the manifest (object count, sizes, checksums), then
`MANIFEST.json` is created with `ifGenerationMatch=0` (two uploaders of one
version cannot both finish). `LATEST` is rewritten with `ifGenerationMatch` set
to the generation that was read, so of two concurrent promotes exactly one
wins; the other gets a StoreError and LATEST holds the winner. A crash anywhere
before the LATEST write leaves LATEST on the previous version; leftovers of an
unfinished upload have no manifest, are never listed and are overwritten by a retry.

Credentials: a `storage.Client` from Application Default Credentials (the
trainer pod's workload identity, `gcloud auth application-default login`),
or, inside Airflow tasks, from the `GCSHook` of `gcp_conn_id`
(`$PERSONA_DPO_GCP_CONN_ID`, e.g. `google_cloud_default`). `STORAGE_EMULATOR_HOST`
points either at an emulator.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dpo_tasks.loaders import InputFileError
from dpo_tasks.paths import contained, safe_relpath
from dpo_tasks.runs import Progress
from dpo_tasks.store.base import (
    HISTORY, MAX_POINTER_BYTES, Store, StoreError, VersionNotFound, history_record, parse_history, pointer_value,
)
from dpo_tasks.store.manifest import MANIFEST, ManifestError, check_manifest, read_manifest, verify_manifest

log = logging.getLogger(__name__)

LATEST = "LATEST"
# What the serving microservice loads from policies/<communityId>/LATEST/.
COMMUNITY_PREFIX = "policies/"
COMMUNITY_SERVED = ("adapter/", "config.yaml", "metrics.json")
# Names inside a namespace that are the store's own, never a version or a namespace.
RESERVED_NAMES = frozenset({LATEST, MANIFEST, HISTORY})


def split_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> ("bucket", "a/b")."""
    if not uri.startswith("gs://"):
        raise StoreError(f"not a GCS URI: {uri!r} (expected gs://bucket[/prefix])")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not bucket:
        raise StoreError(f"GCS URI {uri!r} has no bucket name")
    return bucket, prefix.strip("/")


def crc32c_b64(path: str | os.PathLike[str]) -> str:
    """A file's CRC32C as GCS reports it (base64 of the big-endian value)."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def make_client(gcp_conn_id: str | None = None) -> Any:
    """A `google.cloud.storage.Client`: from Airflow's GCSHook when a connection id is given, else ADC."""
    gcp_conn_id = gcp_conn_id or os.environ.get("PERSONA_DPO_GCP_CONN_ID")
    if gcp_conn_id:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        return GCSHook(gcp_conn_id=gcp_conn_id).get_conn()
    from google.cloud import storage

    return storage.Client()


def _check_name(kind: str, value: str, *, allow_slash: bool) -> None:
    safe_relpath(value, what=kind, allow_slash=allow_slash, allow_dot_names=False, error=StoreError)
    if value.split("/")[-1] in RESERVED_NAMES:
        raise StoreError(f"{kind} {value!r} is a name the store uses for itself ({', '.join(sorted(RESERVED_NAMES))})")


class GCSStore(Store):
    def __init__(self, uri: str, *, client: Any = None, gcp_conn_id: str | None = None):
        self.bucket_name, self.prefix = split_gs_uri(uri)
        self.uri = f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
        self._client = client
        self._gcp_conn_id = gcp_conn_id

    # -- names ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self._gcp_conn_id)
        return self._client

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def _key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def _ns_key(self, namespace: str) -> str:
        _check_name("namespace", namespace, allow_slash=True)
        return self._key(namespace)

    def _version_key(self, namespace: str, version: str) -> str:
        _check_name("version", version, allow_slash=False)
        return f"{self._ns_key(namespace)}/{version}"

    # -- reads ---------------------------------------------------------------

    def _remote_manifest(self, namespace: str, version: str) -> dict[str, Any]:
        from google.api_core.exceptions import NotFound

        key = f"{self._version_key(namespace, version)}/{MANIFEST}"
        try:
            raw = self.bucket.blob(key).download_as_bytes()
        except NotFound:
            raise VersionNotFound(
                f"version {version!r} of {namespace!r} not found in {self.uri!r} (no {MANIFEST}); "
                f"have {self.list_versions(namespace)!r}"
            ) from None
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ManifestError(f"{self.uri}/{key} is not valid JSON") from None
        return check_manifest(manifest, where=f"{self.uri}/{key}")

    def _pointer(self, namespace: str) -> tuple[str | None, int]:
        """LATEST's content and generation (0 when there is no LATEST, as ifGenerationMatch expects)."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        key = f"{self._ns_key(namespace)}/{LATEST}"
        for _ in range(3):
            blob = self.bucket.get_blob(key)
            if blob is None:
                return None, 0
            generation = int(blob.generation)
            where = f"{self.uri}/{key}"
            if blob.size is not None and blob.size > MAX_POINTER_BYTES:
                raise InputFileError(where, f"is {blob.size} bytes, over the limit of {MAX_POINTER_BYTES} for a LATEST pointer")
            try:
                # Read exactly the generation whose number we return.
                raw = blob.download_as_bytes(if_generation_match=generation)
            except (NotFound, PreconditionFailed):
                continue  # rewritten between the metadata read and the download
            return pointer_value(raw, where), generation
        raise StoreError(f"LATEST of {namespace!r} in {self.uri!r} keeps changing; try again")

    def latest(self, namespace: str) -> str | None:
        return self._pointer(namespace)[0]

    def list_versions(self, namespace: str) -> list[str]:
        ns = self._ns_key(namespace)
        blobs = self.client.list_blobs(self.bucket_name, prefix=f"{ns}/", match_glob=f"{ns}/*/{MANIFEST}")
        return sorted(b.name[len(ns) + 1:].split("/")[0] for b in blobs if b.name.count("/") == ns.count("/") + 2)

    def verify(self, namespace: str, version: str) -> dict[str, Any]:
        """Check the stored objects against the version's manifest without downloading them.

        Every listed file must exist with the manifest's size and the sha256 the
        uploader recorded (GCS itself checked each upload's crc32c), and nothing
        unlisted may be there. Raises ManifestError naming every problem.
        """
        manifest = self._remote_manifest(namespace, version)
        prefix = f"{self._version_key(namespace, version)}/"
        stored = {b.name[len(prefix):]: b for b in self.client.list_blobs(self.bucket_name, prefix=prefix)}
        stored.pop(MANIFEST, None)
        problems = []
        for entry in manifest["files"]:
            blob = stored.pop(entry["path"], None)
            if blob is None:
                problems.append(f"{entry['path']!r} is missing")
            elif blob.size != entry["size"]:
                problems.append(f"{entry['path']!r} has {blob.size} bytes, manifest says {entry['size']!r}")
            elif (blob.metadata or {}).get("sha256") != entry["sha256"]:
                problems.append(f"{entry['path']!r} sha256 does not match the manifest")
        problems += [f"{rel!r} is not in the manifest" for rel in sorted(stored)]
        if problems:
            raise ManifestError(f"{self.uri}/{namespace}/{version} fails verification: " + "; ".join(problems))
        return manifest

    # -- writes --------------------------------------------------------------

    def upload_version(self, namespace: str, version: str, local_dir: Path) -> str:
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud.storage.retry import DEFAULT_RETRY

        local_dir = Path(local_dir)
        prefix = self._version_key(namespace, version)
        manifest_blob = self.bucket.blob(f"{prefix}/{MANIFEST}")
        if manifest_blob.exists():
            raise StoreError(f"version {version!r} of {namespace!r} already exists in {self.uri!r}; versions are immutable")
        # A source that disagrees with its own manifest would upload a lie.
        manifest = verify_manifest(local_dir)
        crcs: dict[str, str] = {}
        progress = Progress(f"upload {namespace}/{version}", sum(e["size"] for e in manifest["files"]), unit="bytes", logger=log)
        for entry in manifest["files"]:
            path = local_dir / entry["path"]
            crcs[entry["path"]] = crc32c_b64(path)
            blob = self.bucket.blob(f"{prefix}/{entry['path']}")
            blob.metadata = {"sha256": entry["sha256"]}
            # Leftovers of a crashed attempt are overwritten: without MANIFEST.json they were never a
            # version. Rewriting the same bytes is idempotent, so transient errors are retried (the
            # client retries unconditional uploads only when asked).
            blob.upload_from_filename(str(path), checksum="crc32c", retry=DEFAULT_RETRY)
            progress.advance(entry["size"])
        self._verify_uploaded(namespace, version, manifest, crcs)
        try:
            manifest_blob.upload_from_filename(str(local_dir / MANIFEST), if_generation_match=0, content_type="application/json")
        except PreconditionFailed:
            # Also what a retried request sees when its first attempt landed.
            if self._remote_manifest(namespace, version) != manifest:
                raise StoreError(f"version {version!r} of {namespace!r} was completed by another writer while uploading; versions are immutable") from None
        log.info("uploaded %s/%s: %d files verified", namespace, version, len(manifest["files"]))
        return self.version_uri(namespace, version)

    def _verify_uploaded(self, namespace: str, version: str, manifest: dict[str, Any], crcs: dict[str, str]) -> None:
        prefix = f"{self._version_key(namespace, version)}/"
        stored = {b.name[len(prefix):]: b for b in self.client.list_blobs(self.bucket_name, prefix=prefix)}
        problems = []
        if len(stored) != len(manifest["files"]):
            problems.append(f"{len(stored)} objects stored, manifest lists {len(manifest['files'])}")
        for entry in manifest["files"]:
            blob = stored.get(entry["path"])
            if blob is None:
                problems.append(f"{entry['path']!r} is missing")
            elif blob.size != entry["size"] or blob.crc32c != crcs[entry["path"]]:
                problems.append(f"{entry['path']!r} stored as {blob.size} bytes crc32c {blob.crc32c}, expected {entry['size']} bytes crc32c {crcs[entry['path']]}")
        if problems:
            raise ManifestError(f"upload of {self.uri}/{namespace}/{version} did not verify; LATEST not touched: " + "; ".join(problems))

    def promote(self, namespace: str, version: str, *, expected_current: str | None = ..., record: dict[str, Any] | None = None) -> None:  # type: ignore[assignment]
        from google.api_core.exceptions import PreconditionFailed

        self.verify(namespace, version)
        current, generation = self._pointer(namespace)
        if expected_current is not ... and current != expected_current:
            raise StoreError(
                f"LATEST of {namespace!r} is {current!r}, expected {expected_current!r}: "
                "another publish or rollback moved it first; re-read and retry"
            )
        blob = self.bucket.blob(f"{self._ns_key(namespace)}/{LATEST}")
        # Readers (the serving side, evaluate's baseline) must never see a cached pointer.
        blob.cache_control = "no-store"
        try:
            blob.upload_from_string(version + "\n", content_type="text/plain", if_generation_match=generation)
        except PreconditionFailed:
            if self.latest(namespace) == version:
                # A retried request whose first attempt landed, or a writer that wanted the same version.
                log.info("LATEST of %s already points at %r", namespace, version)
                if not any(r.get("version") == version for r in self.history(namespace)[-1:]):
                    self._append_history(namespace, history_record(version, current, record))
                if namespace.startswith(COMMUNITY_PREFIX):
                    self._mirror_served(namespace, version)
                return
            raise StoreError(
                f"LATEST of {namespace!r} changed while promoting {version!r} (generation {generation} "
                "is no longer current): another publish or rollback won; re-read and retry"
            ) from None
        log.info("LATEST of %s: %r -> %r", namespace, current, version)
        # After the LATEST write: only the winner of a race records a move (a crash in between
        # loses the record, and `served` then trusts LATEST). Re-pointing LATEST at itself is not a move.
        if current != version:
            self._append_history(namespace, history_record(version, current, record))
        if namespace.startswith(COMMUNITY_PREFIX):
            self._mirror_served(namespace, version)

    def _append_history(self, namespace: str, rec: dict[str, Any]) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        key = f"{self._ns_key(namespace)}/{HISTORY}"
        for _ in range(10):
            blob = self.bucket.get_blob(key)
            generation = int(blob.generation) if blob is not None else 0
            try:
                text = blob.download_as_text(if_generation_match=generation) if blob is not None else ""
                if text and not text.endswith("\n"):
                    text += "\n"
                self.bucket.blob(key).upload_from_string(
                    text + json.dumps(rec) + "\n", content_type="application/x-ndjson", if_generation_match=generation,
                )
                return
            except (NotFound, PreconditionFailed):
                continue  # another writer appended in between: read again
        raise StoreError(f"could not record the promotion of {rec['version']!r} in {self.uri}/{key}: it keeps changing")

    def history(self, namespace: str) -> list[dict[str, Any]]:
        from google.api_core.exceptions import NotFound

        key = f"{self._ns_key(namespace)}/{HISTORY}"
        try:
            data = self.bucket.blob(key).download_as_bytes()
        except NotFound:
            return []
        return parse_history(data.decode("utf-8", "replace"), f"{self.uri}/{key}")

    def read_file(self, namespace: str, version: str, rel: str) -> bytes:
        from google.api_core.exceptions import NotFound

        self._remote_manifest(namespace, version)  # VersionNotFound for an incomplete or missing version
        rel = safe_relpath(rel, what="file of a version", error=StoreError)
        try:
            return self.bucket.blob(f"{self._version_key(namespace, version)}/{rel}").download_as_bytes()
        except NotFound:
            raise StoreError(f"{namespace}/{version} has no file {rel!r}") from None

    def _mirror_served(self, namespace: str, version: str) -> None:
        """Copy the served files of `version` to `<namespace>/LATEST/` (server-side) and drop stale ones."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        src = f"{self._version_key(namespace, version)}/"
        dst = f"{self._ns_key(namespace)}/{LATEST}/"
        bucket = self.bucket
        wanted = set()
        for blob in self.client.list_blobs(self.bucket_name, prefix=src):
            rel = blob.name[len(src):]
            if rel.startswith(COMMUNITY_SERVED[0]) or rel in COMMUNITY_SERVED[1:]:
                bucket.copy_blob(blob, bucket, dst + rel, retry=DEFAULT_RETRY)
                wanted.add(rel)
        for blob in self.client.list_blobs(self.bucket_name, prefix=dst):
            if blob.name[len(dst):] not in wanted:
                blob.delete()

    # -- downloads -----------------------------------------------------------

    def download(self, namespace: str, version: str, dest: Path) -> Path:
        """Stream a version into `dest` (the caller's cache dir for this version) and verify it.

        A `dest` that already holds this version intact is reused without a
        download; anything else there is replaced. The files land in a temp dir
        beside `dest` and are renamed into place only when they verify.
        """
        manifest = self._remote_manifest(namespace, version)
        dest = Path(dest)
        if dest.is_dir():
            try:
                if read_manifest(dest) == manifest:
                    verify_manifest(dest)
                    log.info("%s/%s: using the cached copy at %s", namespace, version, dest)
                    return dest
            except ManifestError:
                pass
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        prefix = self._version_key(namespace, version)
        progress = Progress(f"download {namespace}/{version}", sum(e["size"] for e in manifest["files"]), unit="bytes", logger=log)
        try:
            for entry in manifest["files"]:
                path = contained(partial, entry["path"], what="manifest entry", error=ManifestError)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.bucket.blob(f"{prefix}/{entry['path']}").download_to_filename(str(path), checksum="crc32c")
                progress.advance(entry["size"])
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            verify_manifest(partial)
            os.chmod(partial, 0o755)
            os.rename(partial, dest)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return dest
