-- canhbao schema v16 (PostgreSQL). A station's historic flood level (Decision 18/2021 Art. 5:
-- the highest flood peak of the record) is raised when a stored reading exceeds it and an
-- administrator confirms that reading (audited). The confirmed level replaces the area
-- file's for the rules, on every instance.
CREATE TABLE station_historic (
    station      TEXT    PRIMARY KEY,
    value_m      DOUBLE PRECISION NOT NULL,
    observed_ms  BIGINT  NOT NULL,
    confirmed_by TEXT    NOT NULL,
    confirmed_ms BIGINT  NOT NULL,
    reason       TEXT    NOT NULL
);

-- The highest reading above a station's historic level that duty officers were told of,
-- so that they are told once per new height, not at every reading.
CREATE TABLE historic_candidates (
    station      TEXT    PRIMARY KEY,
    value_m      DOUBLE PRECISION NOT NULL,
    observed_ms  BIGINT  NOT NULL,
    noticed_ms   BIGINT  NOT NULL
);
