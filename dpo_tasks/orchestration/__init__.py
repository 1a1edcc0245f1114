"""What the thin files in `dags/` call: DAG factory, task callables, trigger-form params, the A100
training pod, pools and shared `default_args`/callbacks.

Importable at DAG parse time: only `airflow.sdk`, pydantic and yaml are imported at module level;
the Kubernetes/GKE providers, torch and the judges' SDKs are imported inside the functions that
run on a worker.
"""
