"""The served model of each namespace as an Airflow asset: the serving handoff.

A publish that moves LATEST emits an asset event for `persona-dpo-model:<namespace>`, whose URI is
the store URI of that namespace's `LATEST` (`gs://bucket/prefix/<namespace>/LATEST`, or
`file:///abs/store/<namespace>/LATEST` for the local store). A deployment DAG scheduled on that
asset runs after every promotion (docs/tracking.md has one). The persona DAGs declare their
model's asset as an outlet of `publish`; `dpo_custom`'s namespaces are only known at run time, so
its `publish` declares the alias `persona-dpo-community-models` and attaches the community's asset
to it when it publishes. A skipped publish (gate rejected, dry run) emits nothing.

The asset URI comes from `$PERSONA_DPO_STORE` when the DAG file is parsed: a deployment setting,
the same one the stages use, and absolute (a relative local store is resolved against the
parsing process's working directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias

from dpo_tasks.asset_events import ASSET_GROUP, asset_name
COMMUNITY_ALIAS = "persona-dpo-community-models"


def latest_uri(namespace: str, store_uri: str | None = None) -> str:
    """The store URI of `namespace`'s LATEST pointer."""
    uri = str(store_uri or os.environ.get("PERSONA_DPO_STORE") or "store")
    if uri.startswith("gs://"):
        return f"{uri.rstrip('/')}/{namespace}/LATEST"
    return (Path(uri.removeprefix("file://")).expanduser().resolve() / namespace / "LATEST").as_uri()


def model_asset(namespace: str, store_uri: str | None = None) -> Asset:
    return Asset(uri=latest_uri(namespace, store_uri), name=asset_name(namespace), group=ASSET_GROUP)


def community_alias() -> AssetAlias:
    return AssetAlias(name=COMMUNITY_ALIAS, group=ASSET_GROUP)


def emit_promotion(context: Any, run: dict[str, Any], published: dict[str, Any]) -> None:
    """Put what was served into the outlet event the publish task emits on success."""
    extra = {
        "namespace": published["namespace"],
        "version": published["version"],
        "version_uri": published["uri"],
        "previous": published.get("previous"),
        "run_id": run["run_id"],
    }
    events = context.get("outlet_events")
    if events is None:
        # Called outside an Airflow task run (a harness driving the task functions): no event to fill.
        return
    asset = model_asset(published["namespace"])
    if run.get("community"):
        events[community_alias()].add(asset, extra=extra)
    else:
        events[asset].extra = extra
