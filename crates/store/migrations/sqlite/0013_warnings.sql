-- Duty officers' warnings before and after issue: draft -> pending (approval) -> issued,
-- or back to draft (rejected), or discarded. `draft` is the validated draft as JSON;
-- once issued, `alert_id` names the alert it became.
CREATE TABLE warnings (
    id               TEXT    PRIMARY KEY,
    state            TEXT    NOT NULL,          -- draft | pending | issued | discarded
    author           TEXT    NOT NULL,
    updates          TEXT,                      -- the alert an Update replaces
    prewarning_id    INTEGER,                   -- the assessment it confirms
    draft            TEXT    NOT NULL,          -- JSON
    needs_approval   INTEGER NOT NULL DEFAULT 0,
    approval_reason  TEXT,                      -- why the two-person rule applies
    override_reason  TEXT,                      -- an officer issued it alone: why
    submitted_ms     INTEGER,
    reviewed_by      TEXT,
    reviewed_ms      INTEGER,
    review_note      TEXT,                      -- the approver's note, or why it was returned
    alert_id         TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    -- Bumped by every change: an approval names the version its approver read.
    version          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX warnings_by_state ON warnings (state, updated_ms);
-- One live warning per pre-warning: a confirm racing another confirm loses (a confirm that
-- failed is discarded, and the pre-warning is open again).
CREATE UNIQUE INDEX warnings_by_prewarning ON warnings (prewarning_id)
    WHERE prewarning_id IS NOT NULL AND state <> 'discarded';

-- What a person must be told: an override to every approver, a returned draft to its author.
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY,
    recipient   TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    warning_id  TEXT,
    alert_id    TEXT,
    text        TEXT    NOT NULL,
    read_ms     INTEGER
);
CREATE INDEX notifications_by_recipient ON notifications (recipient, id);

-- Pre-warnings a duty officer dismissed, with why (confirmed ones are warnings).
CREATE TABLE prewarning_dismissals (
    assessment_id  INTEGER PRIMARY KEY,
    by             TEXT    NOT NULL,
    at_ms          INTEGER NOT NULL,
    reason         TEXT    NOT NULL
);

-- Idempotency-Key: the first response to a sending request, replayed to its retries.
CREATE TABLE idempotency_keys (
    scope           TEXT    NOT NULL,           -- who asked (the caller)
    key             TEXT    NOT NULL,
    request_sha256  TEXT    NOT NULL,
    state           TEXT    NOT NULL,           -- running | done
    status          INTEGER,
    content_type    TEXT,
    body            BLOB,
    created_ms      INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

-- An alert's optional English text (JSON {headline, description, instruction}), for the
-- CAP document's second <info>.
ALTER TABLE alerts ADD COLUMN text_en TEXT;

-- What an API key may do (JSON list: observations, bulletins, read); NULL: its role's
-- default (a station key: observations and read).
ALTER TABLE api_tokens ADD COLUMN scopes TEXT;

-- Receivers enrolled for drills: only they are expected to play Exercise and Test alerts.
ALTER TABLE receiver_registry ADD COLUMN drills INTEGER NOT NULL DEFAULT 0;

-- Whether an alert may go by SMS (the fallback to officials); an officer may keep a
-- warning to the loudspeakers.
ALTER TABLE alerts ADD COLUMN sms INTEGER NOT NULL DEFAULT 1;
