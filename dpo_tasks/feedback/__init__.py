"""The feedback loop: user ratings in Postgres decide when a persona is retrained and feed its next training set.

- `db`: connections (`feedback_db` in Airflow, `FEEDBACK_DB_URL` on the CLI) and the migrations runner
  (`dpo_tasks/sql/NNN_*.sql`)
- `ingest`: load JSONL/CSV feedback with validation
- `rule`: the retrain rule, read-only polling, and the one-run-per-crossing claim
- `export`: a claimed window -> `feedback_pairs.jsonl` + `feedback_prompts.jsonl` in the run directory
- `sensor`: the deferrable `FeedbackThresholdSensor` and its trigger (Airflow)
- `monitor`: the `feedback_monitor` DAG factory (Airflow)

`db`, `ingest`, `rule` and `export` import only the standard library and
pydantic at module level (database drivers inside functions); `sensor` and
`monitor` import the Airflow SDK and are imported by the DAG file only.
"""
