-- canhbao schema v3 (SQLite): official bulletins whose stated risk level is authoritative.
CREATE TABLE bulletins (
    id             INTEGER PRIMARY KEY,
    identifier     TEXT    NOT NULL,          -- the CAP identifier
    status         TEXT    NOT NULL,          -- Actual | Exercise | Test
    sender         TEXT    NOT NULL,
    hazard         TEXT    NOT NULL,
    level          INTEGER,                   -- null: the bulletin states none
    communes       TEXT    NOT NULL,          -- JSON array of commune codes
    effective_ms   INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL,
    received_ms    INTEGER NOT NULL,
    replaced_ms    INTEGER,                   -- set when an Update or Cancel replaces it
    UNIQUE (identifier, hazard)
);
CREATE INDEX bulletins_live ON bulletins (status, expires_ms);
