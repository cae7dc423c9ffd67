-- canhbao schema v5 (PostgreSQL): the health of each polled source.
CREATE TABLE sources (
    id                    TEXT    PRIMARY KEY,
    url                   TEXT    NOT NULL,
    format                TEXT    NOT NULL,
    etag                  TEXT,
    last_modified         TEXT,
    last_success_ms       BIGINT,
    last_error            TEXT,
    last_error_ms         BIGINT,
    consecutive_failures  BIGINT  NOT NULL DEFAULT 0,
    accepted              BIGINT  NOT NULL DEFAULT 0,
    rejected              BIGINT  NOT NULL DEFAULT 0,
    next_poll_ms          BIGINT
);
