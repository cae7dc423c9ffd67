-- canhbao schema v4 (PostgreSQL): a station token may write only for its own stations.
ALTER TABLE api_tokens ADD COLUMN stations TEXT;   -- JSON array of station ids; null: any
