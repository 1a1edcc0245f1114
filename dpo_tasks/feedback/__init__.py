"""The feedback loop: user ratings in Postgres decide when a persona is retrained and feed its next training set.

- `db`: connections (`feedback_db` in Airflow, `FEEDBACK_DB_URL` on the CLI) and the migrations runner
- `ingest`: load JSONL/CSV feedback with validation
- `rule`: the retrain rule, read-only polling, and the one-run-per-crossing claim
- `export`: a claimed window -> `feedback_pairs.jsonl` + `feedback_prompts.jsonl` in the run directory

Only the standard library and pydantic are imported at module level: the DAG
files import this package at parse time.
"""
