-- The SMS channel: fallback decisions, the SMS outbox and delivery reports.

-- Whether each tracked receiver was online when the alert was issued (heard from within
-- the fleet's stale window and not offline): a commune with none gets SMS at once.
ALTER TABLE receiver_deliveries ADD COLUMN online_at_issue INTEGER NOT NULL DEFAULT 0;

-- Which alerts reference which (Update and Cancel): found without parsing JSON.
CREATE TABLE alert_refs (
    alert_id    TEXT NOT NULL REFERENCES alerts (id),
    refers_to   TEXT NOT NULL,
    PRIMARY KEY (refers_to, alert_id)
);
INSERT OR IGNORE INTO alert_refs (alert_id, refers_to)
    SELECT a.id, r.value FROM alerts a, json_each(a.refs) r;

-- One decision per alert and commune that its officials get it by SMS, and why.
CREATE TABLE sms_fallbacks (
    alert_id     TEXT    NOT NULL REFERENCES alerts (id),
    commune      TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    recipients   INTEGER NOT NULL,
    decided_ms   INTEGER NOT NULL,
    PRIMARY KEY (alert_id, commune)
);

-- The SMS outbox: one row per alert version and number, never a second.
-- state: queued, sending (claimed: the gateway call may be under way), submitted,
-- buffered, smsc_accepted, delivered, failed, unconfirmed (the gateway may have it: no
-- answer came), unreported (no report by the deadline and no other gateway), superseded
-- (an update or cancel came before it was sent), expired (the alert ended first).
CREATE TABLE sms_messages (
    id                  INTEGER PRIMARY KEY,
    alert_id            TEXT    NOT NULL REFERENCES alerts (id),
    phone               TEXT    NOT NULL,
    commune             TEXT    NOT NULL,
    role                TEXT    NOT NULL,
    cause               TEXT    NOT NULL,          -- fallback | follow_up
    message_ref         TEXT    NOT NULL UNIQUE,
    text                TEXT    NOT NULL,
    encoding            TEXT    NOT NULL,          -- UCS-2 | GSM-7
    segments            INTEGER NOT NULL,
    priority            INTEGER NOT NULL,
    state               TEXT    NOT NULL,
    gateway             TEXT,                      -- the gateway that has it, or will
    tried               TEXT    NOT NULL DEFAULT '[]',  -- gateways it left that may have it (JSON)
    refused             TEXT    NOT NULL DEFAULT '[]',  -- gateways that refused it for good (JSON)
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms     INTEGER NOT NULL,
    lease_until_ms      INTEGER,
    sending_ms          INTEGER,
    submitted_ms        INTEGER,
    report_deadline_ms  INTEGER,
    final_ms            INTEGER,
    last_error          TEXT,
    created_ms          INTEGER NOT NULL,
    UNIQUE (alert_id, phone)
);
CREATE INDEX sms_due ON sms_messages (priority DESC, next_attempt_ms) WHERE state = 'queued';
CREATE INDEX sms_waiting ON sms_messages (report_deadline_ms)
    WHERE state IN ('submitted', 'unconfirmed');
CREATE INDEX sms_sending ON sms_messages (lease_until_ms) WHERE state = 'sending';

-- Every authenticated delivery report, once (gateways repeat them).
CREATE TABLE sms_reports (
    id           INTEGER PRIMARY KEY,
    message_ref  TEXT    NOT NULL,
    gateway      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    reported_ms  INTEGER,
    recorded_ms  INTEGER NOT NULL,
    UNIQUE (message_ref, gateway, status)
);
