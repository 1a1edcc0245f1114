-- Per persona and block of 1024 feedback ids: how many ratings, how many good.
-- The threshold poll sums whole blocks above the watermark from here and counts
-- only the watermark's own block in `feedback`, so a poll costs the same whether
-- 1,000 or 1,000,000 ratings are waiting (a persona whose users stay happy never
-- triggers, so its window only grows). Kept exact by statement-level triggers in
-- the writing transaction: a poll sees the table and the rollup at one snapshot.
-- Writers of the same persona and block wait for each other's commit on the
-- rollup row (the app's one-rating transactions: microseconds; a large
-- ingest-feedback transaction: its whole length). Rows are upserted in key
-- order so two multi-row writers cannot deadlock.
-- The block size 1024 is also in dpo_tasks/feedback/rule.py (WINDOW_SQL).
CREATE TABLE IF NOT EXISTS feedback_rollup (
    persona_id TEXT   NOT NULL,
    block      BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    good       BIGINT NOT NULL,
    PRIMARY KEY (persona_id, block)
);

CREATE OR REPLACE FUNCTION feedback_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO feedback_rollup AS r (persona_id, block, total, good)
        SELECT persona_id, id / 1024, -count(*), -count(*) FILTER (WHERE rating = 'good')
        FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (persona_id, block)
        DO UPDATE SET total = r.total + excluded.total, good = r.good + excluded.good;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO feedback_rollup AS r (persona_id, block, total, good)
        SELECT persona_id, id / 1024, count(*), count(*) FILTER (WHERE rating = 'good')
        FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (persona_id, block)
        DO UPDATE SET total = r.total + excluded.total, good = r.good + excluded.good;
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE has no transition table: it empties the rollup with the table.
CREATE OR REPLACE FUNCTION feedback_rollup_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM feedback_rollup;
    RETURN NULL;
END
$$;

-- No writer may slip in between the backfill and the triggers.
LOCK TABLE feedback IN SHARE ROW EXCLUSIVE MODE;

DROP TRIGGER IF EXISTS feedback_rollup_insert ON feedback;
DROP TRIGGER IF EXISTS feedback_rollup_update ON feedback;
DROP TRIGGER IF EXISTS feedback_rollup_delete ON feedback;
DROP TRIGGER IF EXISTS feedback_rollup_truncate ON feedback;
CREATE TRIGGER feedback_rollup_insert AFTER INSERT ON feedback
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION feedback_rollup_apply();
CREATE TRIGGER feedback_rollup_update AFTER UPDATE ON feedback
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION feedback_rollup_apply();
CREATE TRIGGER feedback_rollup_delete AFTER DELETE ON feedback
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION feedback_rollup_apply();
CREATE TRIGGER feedback_rollup_truncate AFTER TRUNCATE ON feedback
    FOR EACH STATEMENT EXECUTE FUNCTION feedback_rollup_reset();

TRUNCATE feedback_rollup;
INSERT INTO feedback_rollup (persona_id, block, total, good)
SELECT persona_id, id / 1024, count(*), count(*) FILTER (WHERE rating = 'good')
FROM feedback GROUP BY 1, 2;
