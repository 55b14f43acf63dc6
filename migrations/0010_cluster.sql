-- Issue 21, scale-out behind one hostname (docs/SCALING.md).
--
-- The nodes sharing this database: the internal URL their peers forward a session's owner-only
-- requests to, and a heartbeat every few seconds. A node whose heartbeat is older than
-- `node_lost_secs` is lost: another node ends its open sessions `node_lost`.
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    internal_url TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Request rate limits that hold for the whole cluster (PostgreSQL): one GCRA cell per limited
-- key, the key being a digest (never the address or name itself), `tat` the theoretical arrival
-- time in Unix milliseconds. Cells whose `tat` has passed are full buckets and are deleted.
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
