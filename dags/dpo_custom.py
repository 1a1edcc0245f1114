"""
# `dpo_custom`: DPO on a community's own preference dataset

Triggered through Airflow's REST API v2 with `{"communityId": ..., "dataset": [...]}` or
`{"communityId": ..., "dataset_uri": ...}` as the run conf; publishes under `policies/<communityId>/`.
See `dpo_tasks.orchestration.factory.build_custom_dag`.
"""

from dpo_tasks.orchestration.factory import build_custom_dags

globals().update(build_custom_dags())
