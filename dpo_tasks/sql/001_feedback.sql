-- Feedback the recipe app writes: one row per thumbs-up/down on a response.
CREATE TABLE IF NOT EXISTS feedback (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    persona_id    TEXT        NOT NULL CHECK (persona_id ~ '^[a-z][a-z0-9_]{0,62}$'),
    model_version TEXT,
    prompt        TEXT        NOT NULL CHECK (btrim(prompt) <> ''),
    response      TEXT        NOT NULL CHECK (btrim(response) <> ''),
    rating        TEXT        NOT NULL CHECK (rating IN ('good', 'bad')),
    comment       TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The threshold query counts one persona's rows above its watermark id and
-- how many are good: (persona_id, id) with rating INCLUDEd answers it from
-- the index alone (an index-only scan), however large the table grows.
CREATE INDEX IF NOT EXISTS feedback_persona_id_idx ON feedback (persona_id, id) INCLUDE (rating);

-- Per persona: the last feedback id consumed by a triggered training run and
-- when that run was triggered (for the cooldown). The monitor locks this row
-- (SELECT ... FOR UPDATE) while it decides, so one crossing triggers one run.
CREATE TABLE IF NOT EXISTS feedback_watermarks (
    persona_id       TEXT        PRIMARY KEY,
    last_feedback_id BIGINT      NOT NULL DEFAULT 0,
    last_trigger_at  TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per triggered training run: the feedback window it consumed.
-- claim_key is unique so a retried monitor task finds its own earlier claim
-- instead of claiming (and triggering) again.
CREATE TABLE IF NOT EXISTS feedback_triggers (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    persona_id   TEXT        NOT NULL,
    claim_key    TEXT        NOT NULL UNIQUE,
    from_id      BIGINT      NOT NULL,
    to_id        BIGINT      NOT NULL,
    total        INTEGER     NOT NULL,
    good         INTEGER     NOT NULL,
    triggered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (to_id > from_id)
);
CREATE INDEX IF NOT EXISTS feedback_triggers_persona_idx ON feedback_triggers (persona_id, triggered_at DESC);
