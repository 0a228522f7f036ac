-- Liveness from PostgreSQL itself (src/store/sql/liveness.ts): each daemon holds a session-level
-- advisory lock on this key on its long-lived session connection; the server releases it the moment
-- that connection dies, so the other daemons learn of a killed daemon in about a second instead of
-- waiting for its heartbeat to go stale. NULL for daemons that hold no such lock (the heartbeat
-- alone decides for them).
ALTER TABLE daemons ADD COLUMN liveness_key bigint;
