//! Tables for the relying party and the operators: signing keys, webhooks and their outbox,
//! review-console operators and logins, the audit log, session listings and subject deletion.
//! Same SQL on SQLite and PostgreSQL (through `sqlx::Any`, `$n` placeholders, BIGINT times).

use sqlx::Row;

use super::{Store, StoreResult};

#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    /// Base64 (standard) PKCS#8 document of the Ed25519 key pair.
    pub pkcs8: String,
    /// Base64url (no padding) of the 32-byte public key, as in a JWK's `x`.
    pub public_key: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub api_key_id: String,
    pub session_id: String,
    pub event: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_status: Option<String>,
    /// When the relying party last asked for it to be sent again (retries count from here).
    pub resent_at: Option<i64>,
}

/// One delivery attempt, as shown in the delivery log.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttempt {
    pub attempt: i64,
    /// When the attempt finished (Unix ms).
    pub at: i64,
    /// The HTTP status, or `timeout`, `connect_error`, `blocked_address`, `no_webhook`, `error`.
    pub status: String,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub operator: String,
    pub action: String,
    pub session_id: Option<String>,
    pub note: Option<String>,
}

/// A session as listed (no network summary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionListing {
    pub id: String,
    pub api_key_id: String,
    pub subject: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub verdict_status: Option<String>,
    pub verdict: Option<String>,
    /// The relying party's opaque reference.
    pub reference: Option<String>,
}

/// Filters for `list_sessions`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub api_key_id: Option<String>,
    pub verdict_status: Option<String>,
    pub subject: Option<String>,
    /// Only sessions created before this (Unix ms). Kept for old clients: sessions created in
    /// the same millisecond as the last one seen are skipped; page with `after` instead.
    pub created_before: Option<i64>,
    /// Only sessions after this one in the listing order (keyset paging, exact).
    pub after: Option<ListCursor>,
    pub limit: i64,
    /// Oldest first (review queue) instead of newest first.
    pub oldest_first: bool,
}

/// A position in a session listing: the last session seen, by its sort key `(created_at, id)`.
/// Handed to the relying party as an opaque token (`encode`/`decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: i64,
    pub id: String,
}

impl ListCursor {
    /// `c1.<base64url(created_at:id)>`: opaque to clients, versioned for us.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.created_at, self.id);
        format!(
            "c1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    pub fn decode(token: &str) -> Option<ListCursor> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.strip_prefix("c1.")?)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (at, id) = text.split_once(':')?;
        if id.is_empty() || id.len() > 128 {
            return None;
        }
        Some(ListCursor {
            created_at: at.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// An open session the server must end without its call (restart, lost node).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSession {
    pub id: String,
    pub api_key_id: String,
    pub subject: Option<String>,
    pub reference: Option<String>,
}

pub(super) fn open_session(r: &sqlx::any::AnyRow) -> StoreResult<OpenSession> {
    Ok(OpenSession {
        id: r.try_get(0)?,
        api_key_id: r.try_get(1)?,
        subject: r.try_get(2)?,
        reference: r.try_get(3)?,
    })
}

/// A decided verdict and what goes with it, written in one transaction by `record_verdict`.
#[derive(Debug, Clone)]
pub struct VerdictRecord<'a> {
    pub session_id: &'a str,
    pub status: &'a str,
    pub verdict_json: &'a str,
    /// The compact JWS of the verdict, made once at decision time (`None` only when it could
    /// not be signed; it is then made on first read).
    pub signed_verdict: Option<&'a str>,
    pub decided_at: i64,
    /// The webhook delivery, when the relying party has a webhook.
    pub outbox: Option<&'a OutboxRow>,
}

/// How a verdict is written.
#[derive(Debug, Clone)]
pub enum VerdictWrite<'a> {
    /// The session ends now with this verdict, unless it has already ended.
    End {
        at: i64,
        reason: &'a str,
        network_summary: Option<&'a str>,
        document_fields: Option<&'a str>,
        /// Append `session_ended` to the stored timeline (when no live event bus does it).
        timeline_event: bool,
    },
    /// An operator's decision replaces the verdict while it still has `expected_status`.
    Replace { expected_status: &'a str },
    /// A session that ended without a verdict (before every end had one) gets one now.
    Backfill {
        /// Also deliver it by webhook (recent ends only: older ones would be given up anyway).
        notify: bool,
    },
}

/// An ended session without a verdict, from before every end had one.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecidedSession {
    pub session: OpenSession,
    pub end_reason: Option<String>,
    pub ended_at: i64,
}

const OUTBOX_COLUMNS: &str = "id, api_key_id, session_id, event, body, created_at, attempts, next_attempt_at, delivered_at, failed_at, last_status, resent_at";

fn outbox_row(r: &sqlx::any::AnyRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        api_key_id: r.try_get(1)?,
        session_id: r.try_get(2)?,
        event: r.try_get(3)?,
        body: r.try_get(4)?,
        created_at: r.try_get(5)?,
        attempts: r.try_get(6)?,
        next_attempt_at: r.try_get(7)?,
        delivered_at: r.try_get(8)?,
        failed_at: r.try_get(9)?,
        last_status: r.try_get(10)?,
        resent_at: r.try_get(11)?,
    })
}

/// A subject's enrolled face (`Store::upsert_enrolment`): the template of a passed session's live
/// face, never an image.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrolmentRow {
    pub api_key_id: String,
    pub subject: String,
    /// The face template, hex of little-endian f32s.
    pub embedding: String,
    /// The passed session it came from.
    pub session_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Store {
    /// A subject's practice runs under `api_key_id`: how many, and the last one's
    /// `(session id, outcome JSON, ended_at)` (the outcome once it ended).
    pub(crate) async fn practice_runs(
        &self,
        api_key_id: &str,
        subject: &str,
    ) -> StoreResult<(i64, Option<(String, Option<String>, Option<i64>)>)> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE api_key_id = $1 AND subject = $2 AND practice = 1",
        )
        .bind(api_key_id)
        .bind(subject)
        .fetch_one(&self.pool)
        .await?;
        let last = sqlx::query(
            "SELECT id, verdict, ended_at FROM sessions \
             WHERE api_key_id = $1 AND subject = $2 AND practice = 1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(api_key_id)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| -> StoreResult<_> {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
        .transpose()?;
        Ok((count, last))
    }

    /// Ends, without a verdict, practice runs left open: this node's (`older_than` none: after a
    /// restart) or any node's created before `older_than` (a lost node). Nothing about a
    /// practice run is delivered, so no verdict is made for it.
    pub(crate) async fn close_open_practice_runs(
        &self,
        now: i64,
        reason: &str,
        older_than: Option<i64>,
    ) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE sessions SET state = 'ended', ended_at = $1, end_reason = $2 \
             WHERE practice = 1 AND ended_at IS NULL \
             AND (($3 IS NULL AND (node = $4 OR node IS NULL)) OR created_at < $3)",
        )
        .bind(now)
        .bind(reason)
        .bind(older_than)
        .bind(&*self.node)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Keeps (or replaces) a subject's enrolment: the face template of a passed session.
    pub async fn upsert_enrolment(&self, e: &EnrolmentRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrolments (api_key_id, subject, embedding, session_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (api_key_id, subject) DO UPDATE SET \
             embedding = excluded.embedding, session_id = excluded.session_id, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(&e.api_key_id)
        .bind(&e.subject)
        .bind(&e.embedding)
        .bind(&e.session_id)
        .bind(e.created_at)
        .bind(e.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `subject`'s enrolment under `api_key_id`, unless it expired before `now_ms`.
    pub async fn get_enrolment(
        &self,
        api_key_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> StoreResult<Option<EnrolmentRow>> {
        let row = sqlx::query(
            "SELECT api_key_id, subject, embedding, session_id, created_at, expires_at FROM enrolments \
             WHERE api_key_id = $1 AND subject = $2 AND expires_at > $3",
        )
        .bind(api_key_id)
        .bind(subject)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(EnrolmentRow {
            api_key_id: r.try_get(0)?,
            subject: r.try_get(1)?,
            embedding: r.try_get(2)?,
            session_id: r.try_get(3)?,
            created_at: r.try_get(4)?,
            expires_at: r.try_get(5)?,
        }))
    }

    /// Deletes `subject`'s enrolment under `api_key_id` (subject deletion); returns how many.
    pub(crate) async fn delete_enrolment(
        &self,
        api_key_id: &str,
        subject: &str,
    ) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM enrolments WHERE api_key_id = $1 AND subject = $2")
                .bind(api_key_id)
                .bind(subject)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Deletes enrolments that expired before `now_ms` (retention).
    pub(crate) async fn purge_expired_enrolments(&self, now_ms: i64) -> StoreResult<u64> {
        Ok(sqlx::query("DELETE FROM enrolments WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    // ---- signing keys ----

    pub async fn insert_signing_key(&self, k: &SigningKeyRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, public_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&k.kid)
        .bind(&k.pkcs8)
        .bind(&k.public_key)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every key, newest first.
    pub async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        let rows = sqlx::query(
            "SELECT kid, pkcs8, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get(0)?,
                    pkcs8: r.try_get(1)?,
                    public_key: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    retired_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Retires every active key except `keep`.
    pub async fn retire_signing_keys_except(&self, keep: &str, at: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL",
        )
        .bind(at)
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    // ---- webhooks ----

    pub async fn set_webhook(
        &self,
        api_key_id: &str,
        target: Option<&WebhookTarget>,
    ) -> StoreResult<bool> {
        // A new URL starts with one secret: no earlier one stays valid.
        let done =
            sqlx::query("UPDATE api_keys SET webhook_url = $1, webhook_secret = $2, webhook_previous_secret = NULL, webhook_previous_secret_until = NULL WHERE id = $3")
                .bind(target.map(|t| t.url.clone()))
                .bind(target.map(|t| t.secret.clone()))
                .bind(api_key_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_webhook(&self, api_key_id: &str) -> StoreResult<Option<WebhookTarget>> {
        let row = sqlx::query(
            "SELECT webhook_url, webhook_secret FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(api_key_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let url: Option<String> = r.try_get(0)?;
        let secret: Option<String> = r.try_get(1)?;
        Ok(url
            .zip(secret)
            .map(|(url, secret)| WebhookTarget { url, secret }))
    }

    /// Replaces the webhook secret; the current one stays valid (deliveries carry both
    /// signatures) until `previous_until` (Unix ms). False when the key has no webhook.
    pub(crate) async fn rotate_webhook_secret(
        &self,
        api_key_id: &str,
        secret: &str,
        previous_until: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET webhook_previous_secret = webhook_secret, webhook_previous_secret_until = $1, webhook_secret = $2 \
             WHERE id = $3 AND webhook_url IS NOT NULL AND webhook_secret IS NOT NULL",
        )
        .bind(previous_until)
        .bind(secret)
        .bind(api_key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The previous webhook secret while it is still valid at `now` (after a rotation).
    pub(crate) async fn webhook_previous_secret(
        &self,
        api_key_id: &str,
        now: i64,
    ) -> StoreResult<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT webhook_previous_secret, webhook_previous_secret_until FROM api_keys WHERE id = $1 AND webhook_previous_secret_until > $2",
        )
        .bind(api_key_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let secret: Option<String> = r.try_get(0)?;
        let until: Option<i64> = r.try_get(1)?;
        Ok(secret.zip(until))
    }

    /// One delivery by id, if it belongs to this API key.
    pub(crate) async fn webhook_delivery(
        &self,
        api_key_id: &str,
        id: &str,
    ) -> StoreResult<Option<OutboxRow>> {
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE id = $1 AND api_key_id = $2"
        ))
        .bind(id)
        .bind(api_key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(outbox_row).transpose()
    }

    /// Queues a finished delivery (delivered or given up) again, due at `now`, with the same id
    /// (receivers deduplicate by it). False when it is still pending or not this key's.
    pub(crate) async fn resend_webhook(
        &self,
        api_key_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_outbox SET delivered_at = NULL, failed_at = NULL, next_attempt_at = $1, resent_at = $1 \
             WHERE id = $2 AND api_key_id = $3 AND (delivered_at IS NOT NULL OR failed_at IS NOT NULL)",
        )
        .bind(now)
        .bind(id)
        .bind(api_key_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn enqueue_webhook(&self, o: &OutboxRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_outbox (id, api_key_id, session_id, event, body, created_at, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(&o.id)
        .bind(&o.api_key_id)
        .bind(&o.session_id)
        .bind(&o.event)
        .bind(&o.body)
        .bind(o.created_at)
        .bind(o.next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Undelivered, not given up, due at `now`: oldest first.
    pub async fn due_webhooks(&self, now: i64, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, created_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Claims a due delivery for one attempt by moving its `next_attempt_at` to `lease_until`,
    /// only if nobody moved it since it was read: with several instances on one database, each
    /// attempt is made by one of them.
    pub async fn claim_webhook(
        &self,
        id: &str,
        seen_next_attempt_at: i64,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3 AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .bind(lease_until)
        .bind(id)
        .bind(seen_next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn pending_webhooks(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn webhook_deliveries(&self, session_id: &str) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE session_id = $1 ORDER BY created_at, id"
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Records one delivery attempt and its outcome on the outbox row: delivered, retry at
    /// `next_attempt_at`, or given up (`give_up`).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_webhook_attempt(
        &self,
        id: &str,
        attempt: i64,
        at: i64,
        status: &str,
        duration_ms: i64,
        delivered: bool,
        next_attempt_at: i64,
        give_up: bool,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, duration_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(attempt)
        .bind(at)
        .bind(status)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = $1, last_status = $2, delivered_at = $3, failed_at = $4, next_attempt_at = $5 WHERE id = $6",
        )
        .bind(attempt)
        .bind(status)
        .bind(delivered.then_some(at))
        .bind((give_up && !delivered).then_some(at))
        .bind(next_attempt_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// (attempt, status) of every attempt of a delivery, in order.
    pub async fn webhook_attempts(&self, delivery_id: &str) -> StoreResult<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT attempt, status FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every attempt of a delivery with its time, status and duration, in order.
    pub(crate) async fn webhook_attempt_log(
        &self,
        delivery_id: &str,
    ) -> StoreResult<Vec<WebhookAttempt>> {
        let rows = sqlx::query(
            "SELECT attempt, at, status, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookAttempt {
                    attempt: r.try_get(0)?,
                    at: r.try_get(1)?,
                    status: r.try_get(2)?,
                    duration_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    // ---- operators ----

    pub async fn insert_operator(&self, username: &str, hash: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO operators (username, password_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(username)
        .bind(hash)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The password hash of an enabled operator.
    pub(crate) async fn operator_password(&self, username: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT password_hash FROM operators WHERE username = $1 AND disabled_at IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// (username, created_at, disabled_at) of every operator.
    pub async fn list_operators(&self) -> StoreResult<Vec<(String, i64, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT username, created_at, disabled_at FROM operators ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Disables an operator and ends their logins.
    pub async fn disable_operator(&self, username: &str, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE operators SET disabled_at = $1 WHERE username = $2 AND disabled_at IS NULL",
        )
        .bind(at)
        .bind(username)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM operator_logins WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn insert_login(
        &self,
        token_hash: &str,
        username: &str,
        at: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO operator_logins (token_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(username)
        .bind(at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The operator logged in with this token, if the login is unexpired and they are enabled.
    pub async fn find_login(&self, token_hash: &str, now: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT l.username FROM operator_logins l JOIN operators o ON o.username = l.username WHERE l.token_hash = $1 AND l.expires_at > $2 AND o.disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(crate) async fn delete_login(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM operator_logins WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- audit log ----

    pub async fn insert_audit(&self, a: &AuditRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, operator, action, session_id, note) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.id)
        .bind(a.at)
        .bind(&a.operator)
        .bind(&a.action)
        .bind(&a.session_id)
        .bind(&a.note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit entries of one session, or every entry (`None`), oldest first.
    pub async fn list_audit(&self, session_id: Option<&str>) -> StoreResult<Vec<AuditRow>> {
        let rows = match session_id {
            Some(id) => sqlx::query(
                "SELECT id, at, operator, action, session_id, note FROM audit_log WHERE session_id = $1 ORDER BY at, id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(
                "SELECT id, at, operator, action, session_id, note FROM audit_log ORDER BY at, id",
            )
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    operator: r.try_get(2)?,
                    action: r.try_get(3)?,
                    session_id: r.try_get(4)?,
                    note: r.try_get(5)?,
                })
            })
            .collect()
    }

    // ---- listings, review, deletion ----

    pub async fn list_sessions(&self, f: &SessionFilter) -> StoreResult<Vec<SessionListing>> {
        // Optional filters as `($n IS NULL OR col = $n)`, so one statement serves every filter.
        // Pages follow the total order (created_at, id), so sessions created in the same
        // millisecond are neither skipped nor repeated.
        let (order, beyond) = if f.oldest_first {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        let sql = format!(
            "SELECT id, api_key_id, subject, state, created_at, ended_at, end_reason, verdict_status, verdict, reference FROM sessions \
             WHERE practice = 0 AND ($1 IS NULL OR api_key_id = $1) AND ($2 IS NULL OR verdict_status = $2) \
             AND ($3 IS NULL OR subject = $3) AND ($4 IS NULL OR created_at < $4) \
             AND ($5 IS NULL OR created_at {beyond} $5 OR (created_at = $5 AND id {beyond} $6)) \
             ORDER BY created_at {order}, id {order} LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(f.api_key_id.clone())
            .bind(f.verdict_status.clone())
            .bind(f.subject.clone())
            .bind(f.created_before)
            .bind(f.after.as_ref().map(|c| c.created_at))
            .bind(f.after.as_ref().map(|c| c.id.clone()))
            .bind(f.limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionListing {
                    id: r.try_get(0)?,
                    api_key_id: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    state: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    ended_at: r.try_get(5)?,
                    end_reason: r.try_get(6)?,
                    verdict_status: r.try_get(7)?,
                    verdict: r.try_get(8)?,
                    reference: r.try_get(9)?,
                })
            })
            .collect()
    }

    /// Replaces a verdict only while it still has `expected_status` (an operator decision must
    /// not overwrite a decision made meanwhile); returns whether it did.
    pub async fn replace_verdict(
        &self,
        id: &str,
        expected_status: &str,
        status: &str,
        verdict_json: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET verdict_status = $1, verdict = $2 WHERE id = $3 AND verdict_status = $4",
        )
        .bind(status)
        .bind(verdict_json)
        .bind(id)
        .bind(expected_status)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Open sessions of any node created before `cutoff`: nothing running can be that old, so
    /// their node is gone (a pod replaced under another name never restarts to end them).
    pub async fn stale_sessions(&self, cutoff: i64) -> StoreResult<Vec<OpenSession>> {
        let rows = sqlx::query(
            "SELECT id, api_key_id, subject, reference FROM sessions WHERE ended_at IS NULL AND practice = 0 AND created_at < $1 ORDER BY created_at, id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(open_session).collect()
    }

    /// Ended sessions that have no verdict (ended by a version that could leave them so).
    pub(crate) async fn ended_without_verdict(&self) -> StoreResult<Vec<UndecidedSession>> {
        let rows = sqlx::query(
            "SELECT id, api_key_id, subject, reference, end_reason, ended_at FROM sessions WHERE ended_at IS NOT NULL AND verdict IS NULL AND practice = 0 ORDER BY ended_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UndecidedSession {
                    session: open_session(r)?,
                    end_reason: r.try_get(4)?,
                    ended_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Writes a decided verdict, its signed form and its webhook delivery in one transaction:
    /// either all of them are stored or none. With `VerdictWrite::End` the session ends too
    /// (only once: false when it had already ended); with `Replace`, only while the verdict
    /// still has the expected status (false otherwise).
    pub async fn record_verdict(
        &self,
        v: &VerdictRecord<'_>,
        write: &VerdictWrite<'_>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = match write {
            VerdictWrite::End {
                at,
                reason,
                network_summary,
                document_fields,
                ..
            } => {
                sqlx::query(
                    "UPDATE sessions SET state = 'ended', ended_at = $1, end_reason = $2, verdict_status = $3, verdict = $4, \
                     signed_verdict = $5, decided_at = $6, network_summary = COALESCE($7, network_summary), \
                     document_fields = COALESCE($8, document_fields) WHERE id = $9 AND ended_at IS NULL",
                )
                .bind(*at)
                .bind(*reason)
                .bind(v.status)
                .bind(v.verdict_json)
                .bind(v.signed_verdict)
                .bind(v.decided_at)
                .bind(*network_summary)
                .bind(*document_fields)
                .bind(v.session_id)
                .execute(&mut *tx)
                .await?
            }
            VerdictWrite::Replace { expected_status } => {
                sqlx::query(
                    "UPDATE sessions SET verdict_status = $1, verdict = $2, signed_verdict = $3, decided_at = $4 \
                     WHERE id = $5 AND verdict_status = $6",
                )
                .bind(v.status)
                .bind(v.verdict_json)
                .bind(v.signed_verdict)
                .bind(v.decided_at)
                .bind(v.session_id)
                .bind(*expected_status)
                .execute(&mut *tx)
                .await?
            }
            VerdictWrite::Backfill { .. } => {
                sqlx::query(
                    "UPDATE sessions SET verdict_status = $1, verdict = $2, signed_verdict = $3, decided_at = $4 \
                     WHERE id = $5 AND verdict IS NULL AND ended_at IS NOT NULL",
                )
                .bind(v.status)
                .bind(v.verdict_json)
                .bind(v.signed_verdict)
                .bind(v.decided_at)
                .bind(v.session_id)
                .execute(&mut *tx)
                .await?
            }
        };
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let VerdictWrite::End {
            at,
            reason,
            timeline_event: true,
            ..
        } = write
        {
            let seq: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE session_id = $1",
            )
            .bind(v.session_id)
            .fetch_one(&mut *tx)
            .await?;
            let body = serde_json::json!({ "type": "session_ended", "seq": seq, "at_ms": at, "reason": reason });
            sqlx::query(
                "INSERT INTO events (session_id, seq, at_ms, kind, body) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(v.session_id)
            .bind(seq)
            .bind(*at)
            .bind("session_ended")
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(o) = v.outbox {
            sqlx::query(
                "INSERT INTO webhook_outbox (id, api_key_id, session_id, event, body, created_at, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
            )
            .bind(&o.id)
            .bind(&o.api_key_id)
            .bind(&o.session_id)
            .bind(&o.event)
            .bind(&o.body)
            .bind(o.created_at)
            .bind(o.next_attempt_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The stored signed verdict and its decision time (Unix ms).
    pub async fn get_signed_verdict(&self, id: &str) -> StoreResult<Option<(String, i64)>> {
        let row = sqlx::query("SELECT signed_verdict, decided_at FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let jws: Option<String> = r.try_get(0)?;
        let at: Option<i64> = r.try_get(1)?;
        Ok(jws.zip(at))
    }

    /// Stores a signed verdict for a session decided before signed verdicts were stored (made
    /// once, on first read); false when one was stored meanwhile.
    pub(crate) async fn set_signed_verdict_if_missing(
        &self,
        id: &str,
        jws: &str,
        decided_at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET signed_verdict = $1, decided_at = $2 WHERE id = $3 AND signed_verdict IS NULL",
        )
        .bind(jws)
        .bind(decided_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Session ids of a subject under one API key.
    pub async fn subject_sessions(
        &self,
        api_key_id: &str,
        subject: &str,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM sessions WHERE api_key_id = $1 AND subject = $2 ORDER BY created_at",
        )
        .bind(api_key_id)
        .bind(subject)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Retention: ids of sessions that ended before `before_ms` and have no webhook delivery
    /// still pending (each delivered or given up), oldest first, at most `limit`.
    pub(crate) async fn expired_sessions(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM sessions s WHERE s.ended_at IS NOT NULL AND s.ended_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox w WHERE w.session_id = s.id \
             AND w.delivered_at IS NULL AND w.failed_at IS NULL) \
             ORDER BY s.ended_at, s.id LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Retention: deletes the sessions that [`Store::expired_sessions`] finds, with every row
    /// about them, `batch` sessions per transaction; returns how many were deleted.
    pub async fn purge_expired_sessions(&self, before_ms: i64, batch: i64) -> StoreResult<u64> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let ids = self.expired_sessions(before_ms, batch).await?;
            if ids.is_empty() {
                break;
            }
            let deleted = self.delete_sessions(&ids).await?;
            total += deleted;
            // A batch that deleted nothing (another instance got there first) or was not full
            // was the last one.
            if deleted == 0 || (ids.len() as i64) < batch {
                break;
            }
        }
        Ok(total)
    }

    /// Deletes every row about these sessions (timeline, webhook deliveries and attempts, audit
    /// entries, the sessions themselves) in one transaction.
    pub async fn delete_sessions(&self, ids: &[String]) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for id in ids {
            sqlx::query("DELETE FROM events WHERE session_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_outbox WHERE session_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM webhook_outbox WHERE session_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_log WHERE session_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            deleted += sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        // The deleted rows were zeroed in place (secure_delete); older page images in the
        // write-ahead log go too.
        self.checkpoint().await?;
        Ok(deleted)
    }
}
