-- A receiver may refuse one alert for several reasons (a tampered copy, then one signed by
-- an unknown key): each kind of refusal is kept, not only the first. Receipts stay
-- idempotent per alert, receiver, status and reason code.
CREATE TABLE receipts_v2 (
    id           INTEGER PRIMARY KEY,
    alert_id     TEXT    NOT NULL,
    receiver_id  TEXT    NOT NULL,
    commune      TEXT,
    status       TEXT    NOT NULL,
    reason       TEXT,
    -- For rejected and failed: the reason's code (bad_signature, expired, ..., or other);
    -- empty otherwise.
    reason_code  TEXT    NOT NULL DEFAULT '',
    receiver_ms  INTEGER NOT NULL,
    recorded_ms  INTEGER NOT NULL,
    UNIQUE (alert_id, receiver_id, status, reason_code)
);
INSERT INTO receipts_v2 (id, alert_id, receiver_id, commune, status, reason, reason_code, receiver_ms, recorded_ms)
    SELECT id, alert_id, receiver_id, commune, status, reason,
           CASE WHEN status IN ('rejected', 'failed') AND instr(reason, ':') > 0
                THEN substr(reason, 1, instr(reason, ':') - 1)
                WHEN status IN ('rejected', 'failed') THEN 'other'
                ELSE '' END,
           receiver_ms, recorded_ms
    FROM receipts;
DROP TABLE receipts;
ALTER TABLE receipts_v2 RENAME TO receipts;
CREATE INDEX receipts_by_alert ON receipts (alert_id);
