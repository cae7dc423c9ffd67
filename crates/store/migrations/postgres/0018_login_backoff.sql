-- canhbao schema v18 (PostgreSQL). Failed logins are counted per (name as typed, client
-- address), not per account: a flood of wrong passwords from one address holds off that
-- address alone, for that name, and an unknown name is treated like a known one. The
-- account-wide lockout (users.locked_until_ms) is no longer set.
CREATE TABLE login_failures (
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    failures BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    blocked_until_ms BIGINT NOT NULL,
    PRIMARY KEY (username, address)
);
CREATE INDEX login_failures_last ON login_failures (last_ms);
UPDATE users SET locked_until_ms = NULL;
