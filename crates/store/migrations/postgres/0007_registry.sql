-- The receiver registry: the loudspeaker receivers the province installed. Only a
-- registered receiver's receipts, heartbeats and statuses are taken; others are counted
-- in unregistered_receivers and otherwise ignored.
CREATE TABLE receiver_registry (
    receiver_id    TEXT    PRIMARY KEY,
    commune        TEXT    NOT NULL,
    -- The broker password's hash in Mosquitto's PBKDF2-SHA512 form ($7$...), for
    -- `canhbao mosquitto-config`; the password itself is shown once and never stored.
    password_hash  TEXT,
    trusted_keys   TEXT    NOT NULL DEFAULT '[]',   -- JSON array of signing key ids
    firmware       TEXT,
    registered_ms  BIGINT  NOT NULL,
    removed_ms     BIGINT
);
CREATE INDEX receiver_registry_by_commune ON receiver_registry (commune, removed_ms);

CREATE TABLE unregistered_receivers (
    receiver_id   TEXT    PRIMARY KEY,
    messages      BIGINT  NOT NULL,
    last_ms       BIGINT  NOT NULL,
    last_topic    TEXT    NOT NULL
);

-- Per-receiver delivery tracking: one row per alert and registered receiver of a target
-- commune, written with the alert. The state only moves forward (queued, sent, rejected,
-- received, then failed or played); expired and superseded end a row that never reached
-- received.
CREATE TABLE receiver_deliveries (
    alert_id     TEXT    NOT NULL REFERENCES alerts (id),
    receiver_id  TEXT    NOT NULL,
    commune      TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    state_ms     BIGINT  NOT NULL,
    sent_ms      BIGINT,
    received_ms  BIGINT,
    played_ms    BIGINT,
    reason       TEXT,
    -- Stands in for SQLite's implicit rowid (rows are picked by it in updates).
    rowid        BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (alert_id, receiver_id)
);
CREATE INDEX receiver_deliveries_open ON receiver_deliveries (alert_id, commune, state);
-- The rows still waiting for a receiver's `received`: what resends and expiry look at, so
-- that neither reads the whole history.
CREATE INDEX receiver_deliveries_unacknowledged ON receiver_deliveries (alert_id, commune)
    WHERE state IN ('queued', 'sent', 'rejected');
-- Live alerts, found by expiry.
CREATE INDEX alerts_by_expiry ON alerts (expires_ms);

-- Resending: a published commune topic is sent again on a schedule until every registered
-- receiver of the commune has sent `played` (or `failed`), or the alert ends.
ALTER TABLE deliveries ADD COLUMN resends BIGINT NOT NULL DEFAULT 0;

-- Retained messages to clear (an empty retained publish) once due: the topics of alerts
-- that expired, or were updated or cancelled.
CREATE TABLE retained_clears (
    topic    TEXT    PRIMARY KEY,
    due_ms   BIGINT  NOT NULL,
    done_ms  BIGINT
);
CREATE INDEX retained_clears_due ON retained_clears (due_ms) WHERE done_ms IS NULL;
