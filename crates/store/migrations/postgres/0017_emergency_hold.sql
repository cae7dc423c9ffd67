-- canhbao schema v17 (PostgreSQL). A computed Emergency that rests on a figure not verified
-- (an [S] or [M] alarm level, a provisional rule) waits for a duty officer's confirmation
-- until `held_until_ms`; then it goes out anyway. Its deliveries are queued for that time;
-- a confirmation (POST /api/v1/alerts/{id}/release) brings them forward.
ALTER TABLE alerts ADD COLUMN held_until_ms BIGINT;
