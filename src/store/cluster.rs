//! What the nodes sharing one database know of each other (migrations/0010_cluster.sql): who is
//! alive and where, which node owns a session, and rate limits that hold for all of them.

use sqlx::Row;

use super::{integration, OpenSession, Store, StoreResult};

/// Where a session's call runs, for a node that does not hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOwner {
    /// The node that created the session.
    pub node: String,
    /// That node's internal URL, if it has registered one.
    pub internal_url: Option<String>,
    /// Its last heartbeat (Unix ms).
    pub heartbeat_at: Option<i64>,
    /// Whether the session has ended (nothing left to forward to).
    pub ended: bool,
}

impl Store {
    /// This node is alive at `now` and reachable by its peers at `internal_url`.
    pub async fn heartbeat(&self, internal_url: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO nodes (node, internal_url, heartbeat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET internal_url = excluded.internal_url, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&*self.node)
        .bind(internal_url)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This node leaves the cluster (a clean shutdown, after its calls ended).
    pub async fn leave(&self) -> StoreResult<()> {
        sqlx::query("DELETE FROM nodes WHERE node = $1")
            .bind(&*self.node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The node that owns session `id` and where to reach it; `None` for an unknown session.
    pub async fn session_owner(&self, id: &str) -> StoreResult<Option<SessionOwner>> {
        let row = sqlx::query(
            "SELECT s.node, n.internal_url, n.heartbeat_at, s.ended_at FROM sessions s \
             LEFT JOIN nodes n ON n.node = s.node WHERE s.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let node: Option<String> = r.try_get(0)?;
        let ended_at: Option<i64> = r.try_get(3)?;
        Ok(Some(SessionOwner {
            node: node.unwrap_or_default(),
            internal_url: r.try_get(1)?,
            heartbeat_at: r.try_get(2)?,
            ended: ended_at.is_some(),
        }))
    }

    /// Open sessions (not practice runs) of other nodes whose heartbeat is older than `cutoff`.
    pub async fn lost_nodes_sessions(&self, cutoff: i64) -> StoreResult<Vec<OpenSession>> {
        let rows = sqlx::query(
            "SELECT id, api_key_id, subject, reference FROM sessions \
             WHERE ended_at IS NULL AND practice = 0 AND node IN \
             (SELECT node FROM nodes WHERE heartbeat_at < $1 AND node <> $2) \
             ORDER BY created_at, id",
        )
        .bind(cutoff)
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(integration::open_session).collect()
    }

    /// Ends the open practice runs of lost nodes (heartbeat older than `cutoff`) and forgets
    /// those nodes; call after [`Store::lost_nodes_sessions`]' sessions were ended. Returns the
    /// nodes forgotten.
    pub async fn forget_lost_nodes(&self, cutoff: i64, now: i64) -> StoreResult<u64> {
        sqlx::query(
            "UPDATE sessions SET state = 'ended', ended_at = $1, end_reason = 'node_lost' \
             WHERE practice = 1 AND ended_at IS NULL AND node IN \
             (SELECT node FROM nodes WHERE heartbeat_at < $2 AND node <> $3)",
        )
        .bind(now)
        .bind(cutoff)
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        // A node is forgotten only once none of its sessions is open: one that ended between
        // the two queries is caught on the next pass.
        Ok(sqlx::query(
            "DELETE FROM nodes WHERE heartbeat_at < $1 AND node <> $2 AND NOT EXISTS \
             (SELECT 1 FROM sessions s WHERE s.node = nodes.node AND s.ended_at IS NULL)",
        )
        .bind(cutoff)
        .bind(&*self.node)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Takes one request of `key`'s allowance at `now` (Unix ms), `interval_ms` apart on average
    /// with bursts of `burst`: the generic cell rate algorithm (a token bucket stored as one
    /// timestamp), updated in one statement, so every node sees every other node's requests.
    /// `Err` carries the milliseconds until the next request is allowed.
    pub async fn take_rate_token(
        &self,
        key: &str,
        now: i64,
        interval_ms: i64,
        burst: i64,
    ) -> StoreResult<Result<(), i64>> {
        let window = interval_ms * burst;
        // `tat` moves on from max(tat, now) by one interval if that stays within the window;
        // otherwise the row is left alone and nothing is returned.
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_limits (key, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET \
             tat = (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 \
             WHERE (CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END) + $3 - $2 <= $4 \
             RETURNING tat",
        )
        .bind(key)
        .bind(now)
        .bind(interval_ms)
        .bind(window)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(Ok(()));
        }
        let tat: Option<i64> = sqlx::query_scalar("SELECT tat FROM rate_limits WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let wait = tat.map_or(0, |tat| tat + interval_ms - now - window);
        Ok(Err(wait.max(1)))
    }

    /// Deletes rate-limit cells that are full again (their `tat` passed before `now`).
    pub async fn purge_rate_limits(&self, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM rate_limits WHERE tat < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The internal URL of `node`, if it is in the cluster's list.
    pub async fn node_url(&self, node: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT internal_url FROM nodes WHERE node = $1")
                .bind(node)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Claims an idempotency key (its digest) for this node until `expires_at`, unless another
    /// node holds it unexpired; returns the node that holds it now.
    pub async fn claim_idempotency_key(
        &self,
        api_key_id: &str,
        key_digest: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<String> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key_digest = $2 AND expires_at <= $3",
        )
        .bind(api_key_id)
        .bind(key_digest)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (api_key_id, key_digest, node, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key_id, key_digest) DO NOTHING",
        )
        .bind(api_key_id)
        .bind(key_digest)
        .bind(&*self.node)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(
            "SELECT node FROM idempotency_keys WHERE api_key_id = $1 AND key_digest = $2",
        )
        .bind(api_key_id)
        .bind(key_digest)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_else(|| self.node.to_string()))
    }

    /// Gives up this node's claim on an idempotency key (its creation failed: a retry may start
    /// over anywhere).
    pub async fn release_idempotency_key(
        &self,
        api_key_id: &str,
        key_digest: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key_digest = $2 AND node = $3",
        )
        .bind(api_key_id)
        .bind(key_digest)
        .bind(&*self.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes idempotency claims that expired before `now`.
    pub async fn purge_idempotency_keys(&self, now: i64) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Whether this store is shared by several nodes (PostgreSQL) rather than a local file.
    pub(crate) fn is_shared(&self) -> bool {
        !self.is_sqlite
    }
}
