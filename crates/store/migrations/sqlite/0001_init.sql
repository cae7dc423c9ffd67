-- canhbao schema v1 (SQLite). Times are UTC milliseconds since the Unix epoch (*_ms).

CREATE TABLE observations (
    id            INTEGER PRIMARY KEY,
    station       TEXT    NOT NULL,
    parameter     TEXT    NOT NULL,
    value         REAL    NOT NULL,
    observed_ms   INTEGER NOT NULL,
    received_ms   INTEGER NOT NULL,
    source        TEXT    NOT NULL,
    -- CAP status of the source: Actual readings never mix with Exercise or Test ones.
    status        TEXT    NOT NULL,
    UNIQUE (station, parameter, status, observed_ms)
);

CREATE TABLE alerts (
    id                TEXT    PRIMARY KEY,
    province          TEXT    NOT NULL,
    msg_type          TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    refs              TEXT    NOT NULL,          -- JSON array of alert ids
    origin_kind       TEXT    NOT NULL,          -- computed | officer | bulletin
    origin_detail     TEXT    NOT NULL,          -- rule id, user or bulletin source
    hazard            TEXT    NOT NULL,
    risk_level        INTEGER,
    alarm_level       INTEGER,
    station           TEXT,
    class             TEXT    NOT NULL,
    communes          TEXT    NOT NULL,          -- JSON array of commune codes
    sent_ms           INTEGER NOT NULL,
    effective_ms      INTEGER NOT NULL,
    expires_ms        INTEGER NOT NULL,
    headline          TEXT    NOT NULL,
    description       TEXT    NOT NULL,
    instruction       TEXT    NOT NULL,
    repeat_times      INTEGER NOT NULL,
    repeat_interval_s INTEGER NOT NULL,
    provisional       TEXT    NOT NULL,          -- JSON array of reasons
    payload           BLOB    NOT NULL,          -- the exact signed payload bytes
    key_id            TEXT    NOT NULL,
    sig               TEXT    NOT NULL,          -- base64 Ed25519 signature over payload
    created_ms        INTEGER NOT NULL
);
CREATE INDEX alerts_by_station ON alerts (station, hazard, expires_ms);

-- The outbox: one row per alert and commune topic.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    alert_id        TEXT    NOT NULL REFERENCES alerts (id),
    commune         TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    priority        INTEGER NOT NULL,          -- higher is claimed first (emergency = 2)
    state           TEXT    NOT NULL,          -- queued | published | expired
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER,
    last_error      TEXT,
    published_ms    INTEGER,
    UNIQUE (alert_id, commune)
);
CREATE INDEX deliveries_due ON deliveries (state, priority DESC, next_attempt_ms);

CREATE TABLE receipts (
    id           INTEGER PRIMARY KEY,
    alert_id     TEXT    NOT NULL,              -- not a foreign key: a forged id is recorded too
    receiver_id  TEXT    NOT NULL,
    commune      TEXT,
    status       TEXT    NOT NULL,              -- received | played | rejected | failed
    reason       TEXT,
    receiver_ms  INTEGER NOT NULL,              -- the time the receiver reports
    recorded_ms  INTEGER NOT NULL,
    UNIQUE (alert_id, receiver_id, status)
);
CREATE INDEX receipts_by_alert ON receipts (alert_id);

CREATE TABLE receivers (
    receiver_id   TEXT    PRIMARY KEY,
    commune       TEXT,
    online        INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    detail        TEXT                          -- the last heartbeat, as received
);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    token_sha256  TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER
);

-- Inputs that were refused (a malformed observation, a forged receipt), for operators.
CREATE TABLE rejections (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    channel    TEXT    NOT NULL,                -- http | mqtt | feed
    source     TEXT    NOT NULL,                -- token label, topic or feed id
    reason     TEXT    NOT NULL
);
