-- Quality control: every reading is kept with its flag and why (docs/rules.md, "Quality
-- control"). Only `ok` readings decide a level.
ALTER TABLE observations ADD COLUMN quality TEXT NOT NULL DEFAULT 'ok';
ALTER TABLE observations ADD COLUMN quality_reason TEXT;

-- Each time a reading is flagged (or a flagged one is confirmed), for duty officers: the
-- events feed, GET /api/v1/readings/flagged and /metrics.
CREATE TABLE quality_events (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    station      TEXT    NOT NULL,
    parameter    TEXT    NOT NULL,
    observed_ms  INTEGER NOT NULL,
    value        REAL    NOT NULL,
    quality      TEXT    NOT NULL,
    reason       TEXT
);
CREATE INDEX quality_events_by_time ON quality_events (at_ms);

-- Why the station follower sent an alert: issue | escalate | renew | de-escalate | all-clear.
ALTER TABLE alerts ADD COLUMN follow TEXT;

-- Whether a bulletin arrived over a channel that vouches for its sender (a bulletins key,
-- or an HTTPS source configured for the sender). One that did not only raises, as a
-- pre-warning.
ALTER TABLE bulletins ADD COLUMN authoritative INTEGER NOT NULL DEFAULT 1;

-- A receiver's clock against the service's, at its last heartbeat (receiver minus service).
ALTER TABLE receivers ADD COLUMN clock_offset_ms INTEGER;

-- The commune state (docs/receiver-protocol.md §4a) reads a commune's alerts through their
-- deliveries. A delivery's state may now also be `superseded`: an Update or Cancel
-- replaced its alert before it was published, and it never will be.
CREATE INDEX deliveries_by_commune ON deliveries (commune, alert_id);
