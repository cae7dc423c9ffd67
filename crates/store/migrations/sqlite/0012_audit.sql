-- Every action of people and keys, appended to a hash chain: each row's hash covers its
-- fields and the previous row's hash, so changing or removing a row breaks the chain.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    detail     TEXT    NOT NULL,     -- JSON
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
