"""What a run keeps of other people's data once it is over.

Community datasets (`dpo_custom`) and users' feedback text are kept only as long
as a run needs them, unless the deployment says otherwise:

    PERSONA_DPO_RETENTION=delete   (default) remove the copies at the end of the run
    PERSONA_DPO_RETENTION=keep     leave them (debugging, an audit that needs the raw rows)

At the end of a run (the `cleanup` teardown task, which runs whether the run
succeeded or failed, as long as `prepare` made the run directory) `cleanup_run`
removes from the run directory the community dataset as fetched
(`community_dataset.raw`) and as validated (`dpo.jsonl`, community runs only),
the feedback export (`feedback_pairs.jsonl`, `feedback_prompts.jsonl`), and the
run's staging area for the training pod (a local directory or a gs:// prefix),
which holds another copy of `dpo.jsonl`. The trained adapter, the model card
(with the data's hashes), metrics and evaluation stay. What the DVC remote holds
is versioned data that has been through PII scrubbing (feedback) or belongs to a
community that asked for a model; removing that is the remote's own retention.

The caller's upload under the upload prefix is the community's and is left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RETENTION_ENV = "PERSONA_DPO_RETENTION"
POLICIES = ("delete", "keep")
COMMUNITY_FILES = ("community_dataset.raw", "dpo.jsonl")
FEEDBACK_FILES = ("feedback_pairs.jsonl", "feedback_prompts.jsonl")


def retention() -> str:
    """The deployment's policy; an unknown value is an error (a typo must not keep data by accident)."""
    from dpo_tasks.config import ConfigError

    value = (os.environ.get(RETENTION_ENV) or "delete").strip().lower()
    if value not in POLICIES:
        raise ConfigError(f"${RETENTION_ENV} = {value!r} is invalid: use one of {', '.join(POLICIES)}")
    return value


def remove_tree(uri: str, *, client: Any = None) -> int:
    """Delete every file under a local directory or a gs:// prefix; returns how many were removed."""
    if uri.startswith("gs://"):
        from dpo_tasks.store.gcs import make_client, split_gs_uri

        bucket_name, prefix = split_gs_uri(uri)
        if not prefix:
            raise ValueError(f"refusing to empty a whole bucket: {uri!r}")
        client = client or make_client()
        blobs = list(client.list_blobs(bucket_name, prefix=prefix.rstrip("/") + "/"))
        for blob in blobs:
            blob.delete()
        return len(blobs)
    root = Path(uri.removeprefix("file://"))
    if not root.is_dir():
        return 0
    count = sum(1 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return count


def cleanup_run(run_dir: str | os.PathLike[str], *, community: bool, staging: str | None = None,
                client: Any = None) -> dict[str, Any]:
    """Remove the run's copies of community and feedback data as the retention policy says; a summary of what went."""
    policy = retention()
    if policy == "keep":
        log.info("retention %s=keep: community and feedback data of %s are kept", RETENTION_ENV, run_dir)
        return {"retention": policy, "removed": [], "staging_files_removed": 0}
    root = Path(run_dir)
    names = (COMMUNITY_FILES if community else ()) + FEEDBACK_FILES
    removed = []
    for name in names:
        path = root / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    staged = remove_tree(staging, client=client) if staging else 0
    log.info("retention delete: removed %s from %s and %d staged file(s)%s", ", ".join(removed) or "nothing",
             root, staged, f" under {staging}" if staging else "")
    return {"retention": policy, "removed": removed, "staging_files_removed": staged}
