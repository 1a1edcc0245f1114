"""The community request of `dpo_custom`: what a caller sends, checked before any work starts.

One check for every door a community request comes through (the `dpo_custom` DAG's `prepare`
task, and anything else that queues such a run), so they accept and refuse exactly the same
conf. Light on purpose: no Airflow, no torch.

The conf is untrusted (docs/security.md):

- `communityId` is a lowercase RFC 1123 label (it becomes a store namespace, a GCS object prefix,
  a pod label and a directory), matched completely, never a reserved store name.
- `dataset_uri` is a `gs://` object under `$PERSONA_DPO_UPLOAD_PREFIX/<communityId>/`; a local
  file only when the deployment sets `$PERSONA_DPO_LOCAL_UPLOAD_ROOT` (the embedded default),
  and then under `<root>/<communityId>/`. A caller cannot make the worker read anything else.
- An inline `dataset` is capped in rows and bytes (`$PERSONA_DPO_MAX_INLINE_ROWS`,
  `$PERSONA_DPO_MAX_INLINE_BYTES`): it is stored in the metadata database with the run.
- `overrides` and the form fields reach only `config.RUN_SETTABLE`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from dpo_tasks.config import DEFAULT_PERSONA, PERSONA_ID_RE, ConfigError
from dpo_tasks.paths import is_within, safe_relpath

# A lowercase RFC 1123 label: what a DNS name, a Kubernetes label value and a GCS object prefix all accept.
COMMUNITY_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Names the store uses for itself (LATEST pointers and mirrors, manifests, history, staging, locks).
RESERVED_COMMUNITY_IDS = frozenset({"latest", "manifest", "history", "staging", "incoming", "lock", "policies"})

UPLOAD_PREFIX_ENV = "PERSONA_DPO_UPLOAD_PREFIX"
LOCAL_UPLOAD_ROOT_ENV = "PERSONA_DPO_LOCAL_UPLOAD_ROOT"
MAX_ROWS_ENV = "PERSONA_DPO_MAX_INLINE_ROWS"
MAX_BYTES_ENV = "PERSONA_DPO_MAX_INLINE_BYTES"
DEFAULT_MAX_INLINE_ROWS = 10_000
DEFAULT_MAX_INLINE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CustomRequest:
    community: str
    dataset: list[Any] | None
    dataset_uri: str | None
    persona: str
    # The run's `--set` overrides, already checked against config.RUN_SETTABLE.
    sets: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        """Where the community's versions are published in the artifact store."""
        return f"policies/{self.community}"


def check_community_id(value: Any) -> str:
    if not isinstance(value, str) or not COMMUNITY_ID_RE.fullmatch(value):
        raise ConfigError(
            f"run conf 'communityId' = {value!r} must be a lowercase DNS label: letters a-z, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    if value in RESERVED_COMMUNITY_IDS:
        raise ConfigError(f"run conf 'communityId' = {value!r} is reserved by the artifact store; choose another name")
    return value


def _limit(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"${env} = {raw!r} must be a whole number") from None
    if value < 1:
        raise ConfigError(f"${env} = {raw!r} must be at least 1")
    return value


def check_inline_dataset(dataset: Any) -> list[Any]:
    if not isinstance(dataset, list):
        raise ConfigError(f"run conf 'dataset' must be a list of {{prompt, chosen, rejected}}, got {type(dataset).__name__}")
    max_rows, max_bytes = _limit(MAX_ROWS_ENV, DEFAULT_MAX_INLINE_ROWS), _limit(MAX_BYTES_ENV, DEFAULT_MAX_INLINE_BYTES)
    if len(dataset) > max_rows:
        raise ConfigError(
            f"run conf 'dataset' has {len(dataset)} rows; at most {max_rows} inline (${MAX_ROWS_ENV}); "
            "upload larger datasets and pass 'dataset_uri'"
        )
    size = len(json.dumps(dataset, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ConfigError(
            f"run conf 'dataset' is {size} bytes; at most {max_bytes} inline (${MAX_BYTES_ENV}); "
            "upload larger datasets and pass 'dataset_uri'"
        )
    return dataset


def check_dataset_uri(uri: Any, community: str) -> str:
    """The URI to fetch, if it lies in the community's upload area; ConfigError naming the rule otherwise."""
    if not isinstance(uri, str) or not uri:
        raise ConfigError(f"run conf 'dataset_uri' = {uri!r} must be a gs:// URI")
    if uri.startswith("gs://"):
        prefix = (os.environ.get(UPLOAD_PREFIX_ENV) or "").rstrip("/")
        if not prefix.startswith("gs://") or len(prefix) <= len("gs://"):
            raise ConfigError(
                f"run conf 'dataset_uri' = {uri!r}: this deployment accepts no gs:// uploads (${UPLOAD_PREFIX_ENV} "
                "is not set to a gs://bucket/prefix)"
            )
        area = f"{prefix}/{community}/"
        if not uri.startswith(area):
            raise ConfigError(f"run conf 'dataset_uri' = {uri!r} must lie under {area!r} (the community's upload area)")
        safe_relpath(uri[len(area):], what="run conf 'dataset_uri' object", error=ConfigError)
        return uri
    root = os.environ.get(LOCAL_UPLOAD_ROOT_ENV)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"run conf 'dataset_uri' = {uri!r}: only gs:// URIs are accepted")
    if not root:
        raise ConfigError(
            f"run conf 'dataset_uri' = {uri!r}: only gs:// URIs under the upload prefix are accepted "
            f"(local files only when the deployment sets ${LOCAL_UPLOAD_ROOT_ENV})"
        )
    path = uri.removeprefix("file://")
    area = os.path.join(root, community)
    if not os.path.isabs(path):
        raise ConfigError(f"run conf 'dataset_uri' = {uri!r} must be an absolute path under {area!r}")
    if any(ord(ch) < 32 for ch in path) or not is_within(path, area) or os.path.realpath(path) == os.path.realpath(area):
        raise ConfigError(f"run conf 'dataset_uri' = {uri!r} must lie under {area!r} (the community's upload area)")
    return path


def check_custom_conf(params: dict[str, Any]) -> CustomRequest:
    """The community id, exactly one of `dataset` / `dataset_uri`, the base persona and the overrides; ConfigError otherwise."""
    from dpo_tasks.orchestration.params import overrides_from_params

    community = check_community_id(params.get("communityId"))
    dataset, uri = params.get("dataset"), params.get("dataset_uri")
    if (dataset is None) == (uri is None):
        raise ConfigError(
            f"run conf needs exactly one of 'dataset' (inline list) or 'dataset_uri'; got dataset={type(dataset).__name__}, "
            f"dataset_uri={uri!r}"
        )
    if dataset is not None:
        check_inline_dataset(dataset)
    else:
        uri = check_dataset_uri(uri, community)
    persona = params.get("persona") or DEFAULT_PERSONA
    if not isinstance(persona, str) or not PERSONA_ID_RE.fullmatch(persona):
        raise ConfigError(f"run conf 'persona' = {persona!r} is not a persona id")
    sets = overrides_from_params(params)
    return CustomRequest(community=community, dataset=dataset, dataset_uri=uri, persona=persona, sets=sets)
