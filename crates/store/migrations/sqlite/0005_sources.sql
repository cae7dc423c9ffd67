-- canhbao schema v5 (SQLite): the health of each polled source.
CREATE TABLE sources (
    id                    TEXT    PRIMARY KEY,
    url                   TEXT    NOT NULL,
    format                TEXT    NOT NULL,
    etag                  TEXT,
    last_modified         TEXT,
    last_success_ms       INTEGER,
    last_error            TEXT,
    last_error_ms         INTEGER,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    accepted              INTEGER NOT NULL DEFAULT 0,
    rejected              INTEGER NOT NULL DEFAULT 0,
    next_poll_ms          INTEGER
);
