-- People who log in: duty officers, approvers, operators and admins. Passwords are kept
-- only as argon2id hashes (PHC strings).
CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    username         TEXT    NOT NULL UNIQUE,
    role             TEXT    NOT NULL,          -- viewer | officer | approver | admin
    password_hash    TEXT    NOT NULL,
    created_ms       INTEGER NOT NULL,
    disabled_ms      INTEGER,
    failed_logins    INTEGER NOT NULL DEFAULT 0,
    locked_until_ms  INTEGER,
    last_login_ms    INTEGER
);

-- A login's token belongs to its user and ends at its expiry; machine keys have neither.
ALTER TABLE api_tokens ADD COLUMN user_id INTEGER REFERENCES users (id);
ALTER TABLE api_tokens ADD COLUMN expires_ms INTEGER;
CREATE INDEX api_tokens_by_user ON api_tokens (user_id) WHERE user_id IS NOT NULL;
