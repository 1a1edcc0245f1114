"""The community request of `dpo_custom`: what a caller sends, checked before any work starts.

One check for every door a community request comes through (the `dpo_custom` DAG's `prepare`
task, and anything else that queues such a run), so they accept and refuse exactly the same
conf. Light on purpose: no Airflow, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dpo_tasks.config import DEFAULT_PERSONA, ConfigError

COMMUNITY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class CustomRequest:
    community: str
    dataset: list[Any] | None
    dataset_uri: str | None
    persona: str

    @property
    def namespace(self) -> str:
        """Where the community's versions are published in the artifact store."""
        return f"policies/{self.community}"


def check_custom_conf(params: dict[str, Any]) -> CustomRequest:
    """The community id, exactly one of `dataset` / `dataset_uri`, and the base persona; ConfigError otherwise."""
    community = params.get("communityId")
    if not isinstance(community, str) or not COMMUNITY_ID_RE.match(community):
        raise ConfigError(f"run conf 'communityId' = {community!r} must match {COMMUNITY_ID_RE.pattern}")
    dataset, uri = params.get("dataset"), params.get("dataset_uri")
    if (dataset is None) == (uri is None):
        raise ConfigError(
            f"run conf needs exactly one of 'dataset' (inline list) or 'dataset_uri'; got dataset={type(dataset).__name__}, "
            f"dataset_uri={uri!r}"
        )
    if dataset is not None and not isinstance(dataset, list):
        raise ConfigError(f"run conf 'dataset' must be a list of {{prompt, chosen, rejected}}, got {type(dataset).__name__}")
    return CustomRequest(community=community, dataset=dataset, dataset_uri=uri, persona=params.get("persona") or DEFAULT_PERSONA)
