//! Persistence through sqlx: a SQLite file by default, PostgreSQL when the URL says so.
//!
//! Queries are plain SQL that both engines accept (`$N` placeholders in ascending order,
//! BIGINT timestamps in Unix milliseconds, JSON as TEXT), run through sqlx's `Any` driver.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::mpsc;

use crate::events::Event;

mod cluster;
pub mod evidence;
mod integration;

pub use cluster::SessionOwner;
pub use integration::{
    AuditRow, EnrolmentRow, ListCursor, OpenSession, OutboxRow, SessionFilter, SessionListing,
    SigningKeyRow, UndecidedSession, VerdictRecord, VerdictWrite, WebhookAttempt, WebhookTarget,
};

/// The schema's migrations (`migrations/`), embedded at build time and applied by sqlx's
/// migrator: recorded with their checksums in `_sqlx_migrations` (an applied file that was edited
/// afterwards stops the server instead of drifting), each in a transaction, and on PostgreSQL
/// under sqlx's advisory lock, so instances starting at once migrate one at a time. The SQL is
/// the same on both engines (see the module documentation).
///
/// Versions the database has and this build does not know are ignored: during a rolling update
/// the older release's pods keep (re)starting on the schema the newer one already migrated
/// (migrations only add tables, columns and indexes).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!();
    migrator.set_ignore_missing(true);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// A sandbox key may force verdicts (marked `sandbox: true`); a live key may not.
    pub sandbox: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub api_key_id: String,
    pub subject: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub connected_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub network_summary: Option<String>,
    /// A practice run (migrations/0009_practice.sql says what that leaves out).
    pub practice: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// This server instance (`Config::node_id`), stamped on the sessions it creates.
    node: Arc<str>,
    is_sqlite: bool,
    /// Where evidence frames are kept, when this store keeps them (the server's does).
    evidence: Option<evidence::EvidenceStore>,
}

impl Store {
    /// Connects (creating the SQLite file and its folder when needed) and applies migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite {
            create_sqlite_folder(url)?;
        }
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a few connections let readers proceed.
            .max_connections(if is_sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        // Deleted rows (a deleted subject's sessions, webhook bodies) are
                        // overwritten with zeros instead of lingering in free pages of the file.
                        sqlx::Executor::execute(&mut *conn, "PRAGMA secure_delete = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if is_sqlite {
            // WAL lets the API read while the event writer writes.
            sqlx::raw_sql("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store {
            pool,
            node: "local".into(),
            is_sqlite,
            evidence: None,
        };
        store.migrate(!is_sqlite).await?;
        Ok(store)
    }

    /// The same store, stamping new sessions with `node` (and ending only its orphans).
    pub fn for_node(mut self, node: &str) -> Store {
        self.node = node.into();
        self
    }

    /// The same store, keeping evidence frames in `evidence`.
    pub(crate) fn with_evidence(mut self, evidence: evidence::EvidenceStore) -> Store {
        self.evidence = Some(evidence);
        self
    }

    /// Where evidence frames are kept; `None` for a store that keeps none (tools, tests).
    pub fn evidence(&self) -> Option<&evidence::EvidenceStore> {
        self.evidence.as_ref()
    }

    async fn migrate(&self, postgres: bool) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        if postgres {
            // One instance at a time, for the whole of it: the releases before sqlx's migrator
            // took this lock for their runs, and may still start during a rolling update.
            sqlx::query("SELECT pg_advisory_lock(7361726)")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            import_legacy_record(&mut conn, postgres).await?;
            migrator().run(&mut *conn).await?;
            keep_legacy_record(&mut conn).await
        }
        .await;
        if postgres {
            sqlx::query("SELECT pg_advisory_unlock(7361726)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    /// SQLite: copies the write-ahead log into the database file and empties it, so rows just
    /// deleted (and zeroed by `secure_delete`) leave no older copy in the log. No-op elsewhere.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        if self.is_sqlite {
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- API keys ----

    pub async fn count_active_api_keys(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        key_hash: &str,
        at: i64,
    ) -> StoreResult<()> {
        self.insert_api_key_of_kind(id, name, key_hash, at, false)
            .await
    }

    /// Inserts a live key, or a sandbox key (`sandbox`) that may force verdicts.
    pub async fn insert_api_key_of_kind(
        &self,
        id: &str,
        name: &str,
        key_hash: &str,
        at: i64,
        sandbox: bool,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, created_at, sandbox) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(name)
        .bind(key_hash)
        .bind(at)
        .bind(i64::from(sandbox))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The active (not revoked) key with this hash.
    pub(crate) async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        let row = sqlx::query(
            "SELECT id, name, created_at, revoked_at, sandbox FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| api_key_from_row(&r)).transpose()
    }

    pub async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, revoked_at, sandbox FROM api_keys ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    /// Revokes a key; returns false when no active key has that id.
    pub async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- sessions ----

    pub async fn insert_session(&self, s: &SessionRow) -> StoreResult<()> {
        self.insert_session_with_reference(s, None).await
    }

    /// A new session with the relying party's opaque `reference` (an order or case id).
    pub(crate) async fn insert_session_with_reference(
        &self,
        s: &SessionRow,
        reference: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, api_key_id, subject, state, created_at, expires_at, node, reference, support_ref, practice) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&s.id)
        .bind(&s.api_key_id)
        .bind(&s.subject)
        .bind(&s.state)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(&*self.node)
        .bind(reference)
        .bind(crate::reasons::support_reference(&s.id))
        .bind(i64::from(s.practice))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sessions whose support reference is `support_ref` (canonical `XXXX-XXXX`), newest
    /// first: one in practice (40 bits per reference), more only by a rare collision.
    pub(crate) async fn find_by_support_reference(
        &self,
        support_ref: &str,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM sessions WHERE support_ref = $1 ORDER BY created_at DESC LIMIT 10",
        )
        .bind(support_ref)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The relying party's reference of a session.
    pub(crate) async fn get_session_reference(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT reference FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    pub(crate) async fn set_session_connected(&self, id: &str, at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET state = 'connected', connected_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn set_session_state(&self, id: &str, state: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET state = $1 WHERE id = $2 AND ended_at IS NULL")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the end of a session once; a second end (e.g. DELETE after a timeout) is ignored.
    pub async fn end_session(&self, id: &str, at: i64, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET state = 'ended', ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_verdict(&self, id: &str, status: &str, verdict_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET verdict_status = $1, verdict = $2 WHERE id = $3")
            .bind(status)
            .bind(verdict_json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The text read from the session's ID document (JSON), when its policy retains it.
    pub async fn set_document_fields(&self, id: &str, fields_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET document_fields = $1 WHERE id = $2")
            .bind(fields_json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn get_document_fields(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT document_fields FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Retention: clears the document text of sessions that ended before `before_ms`; returns
    /// how many sessions had some.
    pub(crate) async fn purge_document_fields(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET document_fields = NULL WHERE document_fields IS NOT NULL AND ended_at < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn get_verdict(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT verdict FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// Failed verdicts of a subject under one API key that ended at or after `since` (Unix ms).
    /// Subjects are the relying party's ids: another key's subject of the same name is another
    /// person, so its failures neither count here nor show. Sessions the server ended itself
    /// (restart, lost node, shutdown) are not the person's failures.
    pub async fn count_failed_attempts(
        &self,
        api_key_id: &str,
        subject: &str,
        since: i64,
    ) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE api_key_id = $1 AND subject = $2 AND verdict_status = 'failed' AND ended_at >= $3 AND practice = 0 \
             AND (end_reason IS NULL OR end_reason NOT IN ('server_restart', 'node_lost', 'server_shutdown'))",
        )
        .bind(api_key_id)
        .bind(subject)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Sessions this node left open in a previous process: they cannot resume (their media state
    /// was in memory) and are ended with a verdict by `SessionRegistry::end_orphaned_sessions`.
    /// Other nodes' sessions are theirs to end.
    pub async fn orphaned_sessions(&self) -> StoreResult<Vec<OpenSession>> {
        let rows = sqlx::query(
            "SELECT id, api_key_id, subject, reference FROM sessions WHERE ended_at IS NULL AND practice = 0 AND (node = $1 OR node IS NULL) ORDER BY created_at, id",
        )
        .bind(&*self.node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(integration::open_session).collect()
    }

    pub async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT id, api_key_id, subject, state, created_at, expires_at, connected_at, ended_at, end_reason, network_summary, practice FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(SessionRow {
            id: r.try_get(0)?,
            api_key_id: r.try_get(1)?,
            subject: r.try_get(2)?,
            state: r.try_get(3)?,
            created_at: r.try_get(4)?,
            expires_at: r.try_get(5)?,
            connected_at: r.try_get(6)?,
            ended_at: r.try_get(7)?,
            end_reason: r.try_get(8)?,
            network_summary: r.try_get(9)?,
            practice: r.try_get::<i64, _>(10)? != 0,
        }))
    }

    // ---- events ----

    pub async fn insert_events(&self, events: &[Arc<Event>]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query("INSERT INTO events (session_id, seq, at_ms, kind, body) VALUES ($1, $2, $3, $4, $5)")
                .bind(&*e.session_id)
                .bind(e.seq as i64)
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind(e.json_text().to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The timeline after `after_seq`, oldest first.
    pub async fn list_events(
        &self,
        session_id: &str,
        after_seq: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, kind, body FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(session_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    body: r.try_get(3)?,
                })
            })
            .collect()
    }
}

fn api_key_from_row(r: &sqlx::any::AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        revoked_at: r.try_get(3)?,
        sandbox: r.try_get::<i64, _>(4)? != 0,
    })
}

/// Releases before sqlx's migrator recorded their migrations in a table of their own,
/// `schema_migrations` (version, time applied), and read only that one: a rolling update runs
/// both for a while, and a rollback goes back to one. So the two records are kept in step around
/// the migrator's run. Before it: versions in `schema_migrations` and not in `_sqlx_migrations`
/// are copied there, in one transaction, with each migration's checksum as sqlx would have
/// written it, so the migrator applies only what is new (a database an older release migrated,
/// or advanced after a rollback).
async fn import_legacy_record(conn: &mut sqlx::AnyConnection, postgres: bool) -> StoreResult<()> {
    use sqlx::migrate::Migrate;
    use sqlx::Connection;
    // Resolved as the queries below resolve the name (the search path on PostgreSQL).
    let exists = if postgres {
        "SELECT CAST(CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 ELSE 1 END AS BIGINT)"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    };
    let legacy: i64 = sqlx::query_scalar(exists).fetch_one(&mut *conn).await?;
    if legacy > 0 {
        conn.ensure_migrations_table().await?;
        let recorded: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        let mut imported = 0;
        for m in migrator().iter().filter(|m| recorded.contains(&m.version)) {
            imported += sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
            )
            .bind(m.version)
            .bind(m.description.to_string())
            .bind(m.checksum.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        if imported > 0 {
            tracing::info!(imported, "copied schema_migrations into _sqlx_migrations");
        }
    }
    Ok(())
}

/// After the migrator's run: every version it applied is added to `schema_migrations` (see
/// [`import_legacy_record`]), so an older release on this database applies nothing twice.
async fn keep_legacy_record(conn: &mut sqlx::AnyConnection) -> StoreResult<()> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO schema_migrations (version, applied_at) \
         SELECT version, $1 FROM _sqlx_migrations WHERE success \
         AND version NOT IN (SELECT version FROM schema_migrations)",
    )
    .bind(crate::events::unix_ms_now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn create_sqlite_folder(url: &str) -> StoreResult<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Writes published events to the timeline in batches, off the media path.
pub(crate) struct EventWriter {
    queue: mpsc::Sender<Arc<Event>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl EventWriter {
    /// `queue` is a sender of the same channel as `rx`, kept to observe when it has drained.
    pub fn spawn(
        store: Store,
        queue: mpsc::Sender<Arc<Event>>,
        mut rx: mpsc::Receiver<Arc<Event>>,
    ) -> Self {
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = busy.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            loop {
                if rx.recv_many(&mut batch, 64).await == 0 {
                    return;
                }
                flag.store(true, std::sync::atomic::Ordering::Release);
                if let Err(e) = store.insert_events(&batch).await {
                    tracing::error!(error = %e, count = batch.len(), "failed to store events");
                }
                batch.clear();
                flag.store(false, std::sync::atomic::Ordering::Release);
            }
        });
        EventWriter { queue, busy, task }
    }

    /// Waits (up to 5 s) until every queued event is written, then stops the writer.
    pub(crate) async fn flush(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let idle = || {
            self.queue.capacity() == self.queue.max_capacity()
                && !self.busy.load(std::sync::atomic::Ordering::Acquire)
        };
        // Idle twice in a row: a batch just taken from the queue sets `busy` within microseconds.
        let mut idle_checks = 0;
        while idle_checks < 2 && tokio::time::Instant::now() < deadline {
            idle_checks = if idle() { idle_checks + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;

    async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/v.db?mode=rwc", dir.path().display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn keys_sessions_and_events_round_trip_in_a_sqlite_file() {
        let (store, dir) = temp_store().await;
        assert!(dir.path().join("sub/v.db").exists());
        store.insert_api_key("k1", "dev", "hash1", 1).await.unwrap();
        assert_eq!(store.count_active_api_keys().await.unwrap(), 1);
        assert_eq!(store.find_api_key("hash1").await.unwrap().unwrap().id, "k1");
        assert!(store.find_api_key("other").await.unwrap().is_none());
        assert!(store.revoke_api_key("k1", 2).await.unwrap());
        assert!(store.find_api_key("hash1").await.unwrap().is_none());

        let row = SessionRow {
            id: "s1".into(),
            api_key_id: "k1".into(),
            subject: Some("user-7".into()),
            state: "created".into(),
            created_at: 10,
            expires_at: 20,
            connected_at: None,
            ended_at: None,
            end_reason: None,
            network_summary: None,
            practice: false,
        };
        store.insert_session(&row).await.unwrap();
        store.set_session_connected("s1", 12).await.unwrap();
        assert!(store.end_session("s1", 15, "deleted").await.unwrap());
        assert!(!store.end_session("s1", 16, "idle_timeout").await.unwrap());
        let got = store.get_session("s1").await.unwrap().unwrap();
        assert_eq!(got.state, "ended");
        assert_eq!(got.end_reason.as_deref(), Some("deleted"));
        assert_eq!(got.connected_at, Some(12));

        let bus = EventBus::new("s1".into(), None);
        let e1 = bus.publish_value("a", serde_json::json!({"x": 1}));
        let e2 = bus.publish_value("b", serde_json::Value::Null);
        store.insert_events(&[e1, e2]).await.unwrap();
        let evs = store.list_events("s1", 1).await.unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, "b");
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_orphans_are_closed() {
        let (store, dir) = temp_store().await;
        let row = SessionRow {
            id: "s2".into(),
            api_key_id: "k".into(),
            subject: None,
            state: "connected".into(),
            created_at: 1,
            expires_at: 2,
            connected_at: None,
            ended_at: None,
            end_reason: None,
            network_summary: None,
            practice: false,
        };
        store.insert_session(&row).await.unwrap();
        drop(store);
        let url = format!("sqlite://{}/sub/v.db?mode=rwc", dir.path().display());
        let again = Store::connect(&url).await.unwrap();
        let orphans = again.orphaned_sessions().await.unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].id, "s2");
    }
}
