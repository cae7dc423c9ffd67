-- canhbao schema v2 (SQLite): the rules engine's levels per area, and its transitions.

-- The current risk level per CAP status series, hazard and commune (the state machine's
-- state, so that a restart does not announce every level again).
CREATE TABLE area_levels (
    status     TEXT    NOT NULL,
    hazard     TEXT    NOT NULL,
    commune    TEXT    NOT NULL,
    level      INTEGER NOT NULL,
    since_ms   INTEGER NOT NULL,
    PRIMARY KEY (status, hazard, commune)
);

-- Every transition (new, escalate, de-escalate, end): pre-warnings for duty officers, or
-- the reason an alert was issued automatically (alert_id).
CREATE TABLE assessments (
    id             INTEGER PRIMARY KEY,
    status         TEXT    NOT NULL,
    at_ms          INTEGER NOT NULL,
    hazard         TEXT    NOT NULL,
    commune        TEXT    NOT NULL,
    transition     TEXT    NOT NULL,
    level          INTEGER,
    action         TEXT    NOT NULL,          -- auto-issue | pre-warning
    official       INTEGER NOT NULL,
    source         TEXT    NOT NULL,          -- computed | bulletin:<id>
    rules          TEXT    NOT NULL,          -- JSON array of rule keys
    detail         TEXT    NOT NULL,          -- JSON: inputs, provisional reasons, diagnostics
    alert_id       TEXT
);
CREATE INDEX assessments_by_time ON assessments (at_ms);

CREATE INDEX observations_by_status_time ON observations (status, observed_ms);
