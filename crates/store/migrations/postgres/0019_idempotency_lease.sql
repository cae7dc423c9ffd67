-- canhbao schema v19 (PostgreSQL). A running Idempotency-Key claim holds a lease that the
-- instance running the request renews; a retry takes over a claim whose lease ran out (its
-- instance died), never one that is still running, however long it takes. The claim
-- also names the alert its request sent, written with the alert: a retry that takes over
-- after the alert was sent answers with it instead of sending again.
ALTER TABLE idempotency_keys ADD COLUMN lease_ms BIGINT;
UPDATE idempotency_keys SET lease_ms = created_ms;
ALTER TABLE idempotency_keys ADD COLUMN alert_id TEXT;
