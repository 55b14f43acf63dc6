//! The store suite: the same calls against a SQLite file and a real PostgreSQL server
//! (`VERICALL_TEST_POSTGRES_URL`, which `make test` sets with scripts/test-postgres; in CI a
//! missing server is a failure, elsewhere the PostgreSQL half is skipped with a message).

use sqlx::Connection;
use vericall::events::EventBus;
use vericall::store::{
    AuditRow, ListCursor, OutboxRow, SessionFilter, SessionRow, SigningKeyRow, Store,
    VerdictRecord, VerdictWrite, WebhookTarget,
};

fn session(id: &str, key: &str, subject: &str, created_at: i64) -> SessionRow {
    SessionRow {
        id: id.into(),
        api_key_id: key.into(),
        subject: Some(subject.into()),
        state: "created".into(),
        created_at,
        expires_at: created_at + 1000,
        connected_at: None,
        ended_at: None,
        end_reason: None,
        network_summary: None,
        practice: false,
    }
}

fn outbox(id: &str, session: &str, next: i64) -> OutboxRow {
    OutboxRow {
        id: id.into(),
        api_key_id: "k1".into(),
        session_id: session.into(),
        event: "verdict".into(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: next,
        attempts: 0,
        next_attempt_at: next,
        delivered_at: None,
        failed_at: None,
        last_status: None,
        resent_at: None,
    }
}

async fn ids(store: Store, f: SessionFilter) -> Vec<String> {
    store
        .list_sessions(&f)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn suite(store: Store, label: &str) {
    // Keys and webhooks.
    store.insert_api_key("k1", "wallet", "h1", 1).await.unwrap();
    store.insert_api_key("k2", "other", "h2", 1).await.unwrap();
    assert_eq!(store.count_active_api_keys().await.unwrap(), 2);
    assert!(store.get_webhook("k1").await.unwrap().is_none());
    let target = WebhookTarget {
        url: "https://rp.example/hook".into(),
        secret: "whsec_x".into(),
    };
    assert!(store.set_webhook("k1", Some(&target)).await.unwrap());
    assert_eq!(
        store.get_webhook("k1").await.unwrap().unwrap().url,
        target.url
    );

    // Sessions, verdicts and listings.
    for (i, (id, key, subject)) in [
        ("s1", "k1", "alice"),
        ("s2", "k1", "alice"),
        ("s3", "k1", "bob"),
        ("s4", "k2", "alice"),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .insert_session(&session(id, key, subject, 100 + i as i64))
            .await
            .unwrap();
    }
    store
        .set_verdict("s1", "needs_review", r#"{"status":"needs_review"}"#)
        .await
        .unwrap();
    store
        .set_verdict("s2", "failed", r#"{"status":"failed"}"#)
        .await
        .unwrap();
    assert!(store.end_session("s2", 200, "completed").await.unwrap());
    assert_eq!(
        store
            .count_failed_attempts("k1", "alice", 150)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_failed_attempts("k2", "alice", 150)
            .await
            .unwrap(),
        0,
        "another key's subject of the same name is another person"
    );
    let list = |f: SessionFilter| ids(store.clone(), f);
    let all_k1 = SessionFilter {
        api_key_id: Some("k1".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(list(all_k1.clone()).await, ["s3", "s2", "s1"], "{label}");
    assert_eq!(
        list(SessionFilter {
            subject: Some("alice".into()),
            ..all_k1.clone()
        })
        .await,
        ["s2", "s1"]
    );
    assert_eq!(
        list(SessionFilter {
            verdict_status: Some("needs_review".into()),
            api_key_id: None,
            oldest_first: true,
            limit: 10,
            ..Default::default()
        })
        .await,
        ["s1"]
    );
    assert_eq!(
        list(SessionFilter {
            created_before: Some(102),
            limit: 1,
            ..all_k1.clone()
        })
        .await,
        ["s2"]
    );
    // A decision replaces a verdict only while it is still under review.
    assert!(store
        .replace_verdict("s1", "needs_review", "passed", r#"{"status":"passed"}"#)
        .await
        .unwrap());
    assert!(!store
        .replace_verdict("s1", "needs_review", "failed", r#"{"status":"failed"}"#)
        .await
        .unwrap());
    assert_eq!(
        store.get_verdict("s1").await.unwrap().as_deref(),
        Some(r#"{"status":"passed"}"#)
    );

    // Timeline.
    let bus = EventBus::new("s1".into(), None);
    let events = vec![
        bus.publish_value("a", serde_json::json!({"x": 1})),
        bus.publish_value("b", serde_json::Value::Null),
    ];
    store.insert_events(&events).await.unwrap();
    assert_eq!(store.list_events("s1", 0).await.unwrap().len(), 2);

    // Outbox: due order, claims, attempts, delivery.
    store
        .enqueue_webhook(&outbox("d1", "s1", 10))
        .await
        .unwrap();
    store
        .enqueue_webhook(&outbox("d2", "s3", 20))
        .await
        .unwrap();
    let due: Vec<String> = store
        .due_webhooks(15, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(due, ["d1"]);
    assert!(store.claim_webhook("d1", 10, 1000).await.unwrap());
    assert!(
        !store.claim_webhook("d1", 10, 1000).await.unwrap(),
        "a claim is taken once"
    );
    store
        .record_webhook_attempt("d1", 1, 16, "500", 3, false, 40, false)
        .await
        .unwrap();
    store
        .record_webhook_attempt("d1", 2, 41, "200", 2, true, 41, false)
        .await
        .unwrap();
    let d1 = &store.webhook_deliveries("s1").await.unwrap()[0];
    assert_eq!(d1.delivered_at, Some(41));
    assert_eq!(d1.attempts, 2);
    assert_eq!(
        store.webhook_attempts("d1").await.unwrap(),
        [(1, "500".to_string()), (2, "200".to_string())]
    );
    assert_eq!(store.pending_webhooks().await.unwrap(), 1);

    // Signing keys.
    for (kid, at) in [("a", 1), ("b", 2)] {
        store
            .insert_signing_key(&SigningKeyRow {
                kid: kid.into(),
                pkcs8: "p".into(),
                public_key: "x".into(),
                created_at: at,
                retired_at: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.retire_signing_keys_except("b", 3).await.unwrap(), 1);
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys[0].kid, "b");
    assert_eq!(keys[1].retired_at, Some(3));

    // Operators, logins, audit.
    store.insert_operator("ann", "hash", 1).await.unwrap();
    store.insert_login("t1", "ann", 1, 100).await.unwrap();
    assert_eq!(
        store.find_login("t1", 50).await.unwrap().as_deref(),
        Some("ann")
    );
    assert!(
        store.find_login("t1", 100).await.unwrap().is_none(),
        "expired"
    );
    for (id, session) in [("a1", Some("s1")), ("a2", Some("s3")), ("a3", None)] {
        store
            .insert_audit(&AuditRow {
                id: id.into(),
                at: 5,
                operator: "ann".into(),
                action: "view".into(),
                session_id: session.map(String::from),
                note: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.list_audit(Some("s1")).await.unwrap().len(), 1);
    assert!(store.disable_operator("ann", 60).await.unwrap());
    assert!(store.find_login("t1", 50).await.unwrap().is_none());

    // Subject deletion removes alice's rows under k1 and nothing else.
    let ids = store.subject_sessions("k1", "alice").await.unwrap();
    assert_eq!(ids, ["s1", "s2"]);
    assert_eq!(store.delete_sessions(&ids).await.unwrap(), 2);
    assert!(store.get_session("s1").await.unwrap().is_none());
    assert!(store.list_events("s1", 0).await.unwrap().is_empty());
    assert!(store.webhook_deliveries("s1").await.unwrap().is_empty());
    assert!(store.webhook_attempts("d1").await.unwrap().is_empty());
    assert!(store.list_audit(Some("s1")).await.unwrap().is_empty());
    assert!(store.get_session("s3").await.unwrap().is_some());
    assert!(
        store.get_session("s4").await.unwrap().is_some(),
        "k2's alice stays"
    );
    assert_eq!(store.webhook_deliveries("s3").await.unwrap().len(), 1);
    assert_eq!(store.list_audit(None).await.unwrap().len(), 2);

    // Retention: sessions that ended before the cutoff go with their timeline and finished
    // deliveries; a recent one, an open one and one with a delivery still pending stay.
    for (id, ended_at) in [
        ("r-old", Some(10)),
        ("r-new", Some(5_000)),
        ("r-open", None),
    ] {
        store
            .insert_session(&session(id, "k4", "r", 10))
            .await
            .unwrap();
        store
            .insert_events(&[EventBus::new(id.into(), None)
                .publish_value("session_created", serde_json::json!({}))])
            .await
            .unwrap();
        if let Some(at) = ended_at {
            assert!(store.end_session(id, at, "completed").await.unwrap());
        }
    }
    store
        .enqueue_webhook(&outbox("d-old", "r-old", 11))
        .await
        .unwrap();
    store
        .record_webhook_attempt("d-old", 1, 12, "200", 2, true, 12, false)
        .await
        .unwrap();
    store
        .insert_session(&session("r-pending", "k4", "r", 10))
        .await
        .unwrap();
    assert!(store
        .end_session("r-pending", 10, "completed")
        .await
        .unwrap());
    store
        .enqueue_webhook(&outbox("d-pending", "r-pending", 11))
        .await
        .unwrap();
    assert_eq!(
        store.purge_expired_sessions(1_000, 1).await.unwrap(),
        1,
        "{label}"
    );
    assert!(store.get_session("r-old").await.unwrap().is_none());
    assert!(store.list_events("r-old", 0).await.unwrap().is_empty());
    assert!(store.webhook_deliveries("r-old").await.unwrap().is_empty());
    assert!(store.webhook_attempts("d-old").await.unwrap().is_empty());
    for stays in ["r-new", "r-open", "r-pending"] {
        assert!(store.get_session(stays).await.unwrap().is_some(), "{stays}");
    }
    assert_eq!(store.list_events("r-new", 0).await.unwrap().len(), 1);
    assert_eq!(store.purge_expired_sessions(1_000, 1).await.unwrap(), 0);

    // Orphans: only this node's open sessions end on restart.
    let mine = store.clone().for_node("pod-a");
    let theirs = store.clone().for_node("pod-b");
    mine.insert_session(&session("o1", "k1", "x", 1))
        .await
        .unwrap();
    theirs
        .insert_session(&session("o2", "k1", "x", 1))
        .await
        .unwrap();
    let orphans = mine.orphaned_sessions().await.unwrap();
    assert_eq!(
        orphans.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        ["o1"]
    );
    // Ending one writes the end, verdict, signed verdict, outbox row and timeline event at once,
    // and only once.
    let delivery = OutboxRow {
        api_key_id: "k1".into(),
        ..outbox("d-o1", "o1", 9)
    };
    let record = VerdictRecord {
        session_id: "o1",
        status: "failed",
        verdict_json: r#"{"status":"failed"}"#,
        signed_verdict: Some("jws-o1"),
        decided_at: 9,
        outbox: Some(&delivery),
    };
    let end = VerdictWrite::End {
        at: 9,
        reason: "server_restart",
        network_summary: None,
        document_fields: None,
        timeline_event: true,
    };
    assert!(mine.record_verdict(&record, &end).await.unwrap());
    assert!(
        !mine.record_verdict(&record, &end).await.unwrap(),
        "ended once"
    );
    let o1 = store.get_session("o1").await.unwrap().unwrap();
    assert_eq!(o1.end_reason.as_deref(), Some("server_restart"));
    assert_eq!(
        store.get_signed_verdict("o1").await.unwrap(),
        Some(("jws-o1".to_string(), 9))
    );
    assert_eq!(store.webhook_deliveries("o1").await.unwrap().len(), 1);
    let ended = store.list_events("o1", 0).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].kind, "session_ended");
    assert!(mine.orphaned_sessions().await.unwrap().is_empty());
    assert!(theirs
        .get_session("o2")
        .await
        .unwrap()
        .unwrap()
        .ended_at
        .is_none());
    // Stale sessions of any node (a pod that vanished) are found by age.
    theirs
        .insert_session(&session("o3", "k1", "x", 5))
        .await
        .unwrap();
    let stale: Vec<String> = store
        .stale_sessions(6)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(stale, ["o2", "o3"], "o2 and o3 are open and old");
    // Paging by cursor: sessions created in the same millisecond are each listed once.
    for i in 0..7 {
        store
            .insert_session(&session(&format!("p{i}"), "k3", "p", 500))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_sessions(&SessionFilter {
                api_key_id: Some("k3".into()),
                after: after.clone(),
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(ListCursor {
            created_at: last.created_at,
            id: last.id.clone(),
        });
        seen.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(seen, ["p6", "p5", "p4", "p3", "p2", "p1", "p0"], "{label}");
    println!("store suite passed on {label}");
}

/// Two nodes on one database: who owns a session and where it is reached, a node that stops
/// beating and its open sessions, and a rate limit both nodes draw from.
async fn cluster_suite(url: &str, label: &str) {
    let a = Store::connect(url).await.unwrap().for_node("node-a");
    let b = Store::connect(url).await.unwrap().for_node("node-b");
    a.insert_api_key("ck", "wallet", "hc", 1).await.unwrap();
    let t0 = 1_800_000_000_000i64;
    a.heartbeat("http://10.0.0.1:8080", t0).await.unwrap();
    b.heartbeat("http://10.0.0.2:8080", t0).await.unwrap();
    a.insert_session(&session("c1", "ck", "carol", t0))
        .await
        .unwrap();
    a.insert_session(&session("c2", "ck", "carol", t0))
        .await
        .unwrap();
    b.insert_session(&session("c3", "ck", "carol", t0))
        .await
        .unwrap();
    let owner = b.session_owner("c1").await.unwrap().unwrap();
    assert_eq!(owner.node, "node-a", "{label}");
    assert_eq!(owner.internal_url.as_deref(), Some("http://10.0.0.1:8080"));
    assert_eq!(owner.heartbeat_at, Some(t0));
    assert!(!owner.ended);
    assert!(b.session_owner("nope").await.unwrap().is_none());
    assert!(a.end_session("c2", t0 + 1, "completed").await.unwrap());
    assert!(b.session_owner("c2").await.unwrap().unwrap().ended);

    // A beats on, B stops: after the cutoff A sees B's open session, B never sees its own.
    a.heartbeat("http://10.0.0.1:8080", t0 + 30_000)
        .await
        .unwrap();
    let cutoff = t0 + 10_000;
    let lost: Vec<String> = a
        .lost_nodes_sessions(cutoff)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(lost, ["c3"], "{label}");
    assert!(b.lost_nodes_sessions(cutoff).await.unwrap().is_empty());
    // Not forgotten while a session is open; forgotten once it ended.
    assert_eq!(a.forget_lost_nodes(cutoff, t0 + 30_000).await.unwrap(), 0);
    assert!(a.end_session("c3", t0 + 30_000, "node_lost").await.unwrap());
    assert_eq!(a.forget_lost_nodes(cutoff, t0 + 30_000).await.unwrap(), 1);
    assert_eq!(
        b.session_owner("c3").await.unwrap().unwrap().internal_url,
        None
    );
    b.leave().await.unwrap();
    a.leave().await.unwrap();
    assert_eq!(
        b.session_owner("c1").await.unwrap().unwrap().internal_url,
        None
    );

    // An idempotency key is held by the node that claimed it first, until it expires or is
    // released by that node.
    let claim = |s: &Store, at: i64| {
        let s = s.clone();
        async move {
            s.claim_idempotency_key("ck", "d1", at, at + 600_000)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim(&a, t0).await, "node-a", "{label}");
    assert_eq!(claim(&b, t0 + 1).await, "node-a");
    b.release_idempotency_key("ck", "d1").await.unwrap();
    assert_eq!(
        claim(&b, t0 + 2).await,
        "node-a",
        "only the holder releases"
    );
    a.release_idempotency_key("ck", "d1").await.unwrap();
    assert_eq!(claim(&b, t0 + 3).await, "node-b");
    assert_eq!(claim(&a, t0 + 600_003).await, "node-a", "after expiry");
    assert_eq!(a.purge_idempotency_keys(t0 + 1_200_003).await.unwrap(), 1);
    a.heartbeat("http://10.0.0.1:8080", t0).await.unwrap();
    assert_eq!(
        b.node_url("node-a").await.unwrap().as_deref(),
        Some("http://10.0.0.1:8080")
    );
    a.leave().await.unwrap();

    // 3 per minute (20 s apart, bursts of 3), taken alternately through both nodes.
    let take = |s: &Store, at: i64| {
        let s = s.clone();
        async move { s.take_rate_token("t:key", at, 20_000, 3).await.unwrap() }
    };
    assert_eq!(take(&a, t0).await, Ok(()));
    assert_eq!(take(&b, t0).await, Ok(()));
    assert_eq!(take(&a, t0 + 1).await, Ok(()));
    assert_eq!(
        take(&b, t0 + 2).await,
        Err(19_998),
        "{label}: the 4th waits for a refill"
    );
    assert_eq!(take(&a, t0 + 20_000).await, Ok(()), "one refilled");
    assert!(take(&b, t0 + 20_000).await.is_err());
    assert_eq!(
        a.take_rate_token("t:other", t0, 20_000, 3).await.unwrap(),
        Ok(()),
        "keys are independent"
    );
    assert_eq!(a.purge_rate_limits(t0 + 60_000).await.unwrap(), 1);
    assert_eq!(a.purge_rate_limits(t0 + 120_000).await.unwrap(), 1);
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v.db?mode=rwc", dir.path().display());
    suite(Store::connect(&url).await.unwrap(), "sqlite").await;
    let cluster_url = format!("sqlite://{}/c.db?mode=rwc", dir.path().display());
    cluster_suite(&cluster_url, "sqlite").await;
    // Migrations are idempotent on reopen.
    Store::connect(&url).await.unwrap();
}

/// Makes the database at `url` as the server did before it used sqlx's migrator: migrations 1 to
/// `upto` applied and recorded in `schema_migrations` (version, time applied) only.
async fn legacy_database(url: &str, upto: i64) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (version, file) in (1..=upto).zip(files) {
        sqlx::raw_sql(&std::fs::read_to_string(file).unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// The versions in sqlx's record, and whether every one succeeded.
async fn sqlx_record(url: &str) -> (Vec<i64>, bool) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    // The flag as a number: the `Any` driver reads no SQLite booleans.
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, CASE WHEN success THEN 1 ELSE 0 END FROM _sqlx_migrations ORDER BY version",
    )
            .fetch_all(&mut conn)
            .await
            .unwrap();
    (
        rows.iter().map(|r| r.0).collect(),
        rows.iter().all(|r| r.1 == 1),
    )
}

/// The versions in the record the releases before sqlx's migrator read.
async fn legacy_record(url: &str) -> Vec<i64> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// A database the server migrated before it used sqlx's migrator (its record in
/// `schema_migrations`) opens: the record is imported once, only the newer migrations run, and
/// its rows are kept; the old record is kept in step, so an older release (a rolling update, a
/// rollback) applies nothing twice. A new database gets both records.
async fn legacy_record_is_imported(url: &str, fresh_url: &str, label: &str) {
    legacy_database(url, 10).await;
    {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ('k1', 'kept', 'h1', 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // On PostgreSQL several instances may start at once (a rolling update); SQLite has one node.
    let instances = if label == "postgres" { 3 } else { 1 };
    let starts = (0..instances).map(|_| Store::connect(url));
    for store in futures_util::future::join_all(starts).await {
        let store = store.expect(label);
        assert_eq!(store.count_active_api_keys().await.unwrap(), 1, "{label}");
    }
    let all: Vec<i64> = (1..=12).collect();
    assert_eq!(sqlx_record(url).await, (all.clone(), true), "{label}");
    assert_eq!(legacy_record(url).await, all, "{label}");
    // Reopening changes nothing.
    Store::connect(url).await.expect(label);
    assert_eq!(sqlx_record(url).await, (all.clone(), true), "{label}");
    assert_eq!(legacy_record(url).await, all, "{label}");
    Store::connect(fresh_url).await.expect(label);
    assert_eq!(sqlx_record(fresh_url).await, (all.clone(), true), "{label}");
    assert_eq!(legacy_record(fresh_url).await, all, "{label}");
}

#[tokio::test]
async fn a_database_migrated_by_the_old_runner_opens_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/legacy.db?mode=rwc", dir.path().display());
    let fresh = format!("sqlite://{}/fresh.db?mode=rwc", dir.path().display());
    legacy_record_is_imported(&url, &fresh, "sqlite").await;
}

#[tokio::test]
async fn a_database_migrated_by_the_old_runner_opens_on_postgres() {
    let (Some(url), Some(fresh)) = (postgres_schema().await, postgres_schema().await) else {
        return;
    };
    legacy_record_is_imported(&url, &fresh, "postgres").await;
}

/// A fresh schema per run on the PostgreSQL server, so runs never see each other's rows.
pub(crate) async fn postgres_schema() -> Option<String> {
    let Ok(base) = std::env::var("VERICALL_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL suite: make test starts the server (scripts/test-postgres)"
        );
        println!("VERICALL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half (make test sets it)");
        return None;
    };
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(&base)
        .await
        .expect("the test PostgreSQL server accepts connections");
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    Some(url)
}

/// With `sslmode=require` the connection to PostgreSQL is encrypted (sqlx is built with rustls;
/// scripts/test-postgres serves TLS with a self-signed certificate, which `require` accepts as
/// libpq does), and the store works over it.
#[tokio::test]
async fn postgres_with_sslmode_require_is_encrypted() {
    let Some(url) = postgres_schema().await else {
        return;
    };
    let url = format!("{url}&sslmode=require");
    let mut conn = sqlx::AnyConnection::connect(&url)
        .await
        .expect("a TLS connection with sslmode=require");
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(ssl, "the connection is encrypted");
    Store::connect(&url).await.expect("the store over TLS");
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let Some(url) = postgres_schema().await else {
        return;
    };
    suite(Store::connect(&url).await.unwrap(), "postgres").await;
    Store::connect(&url).await.unwrap();
    let Some(cluster_url) = postgres_schema().await else {
        return;
    };
    cluster_suite(&cluster_url, "postgres").await;
}

/// Several instances starting at once on an empty database migrate one at a time.
#[tokio::test]
async fn concurrent_starts_migrate_once_on_postgres() {
    let Some(url) = postgres_schema().await else {
        return;
    };
    // Four instances' start-ups interleaved on one runtime (each on its own connections).
    let starts = (0..4).map(|_| Store::connect(&url));
    for result in futures_util::future::join_all(starts).await {
        result.expect("every instance starts");
    }
}

/// The whole server on PostgreSQL: create, end, read the signed verdict, list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres() {
    let Some(url) = postgres_schema().await else {
        return;
    };
    let ts = crate::common::TestServer::start_on_database(crate::common::test_config(), &url).await;
    let s = ts.create_session().await;
    let v = ts.end_unused(&s).await;
    assert_eq!(v["verdict"]["status"], "cancelled");
    let jwks = ts.get_json("/.well-known/jwks.json").await;
    let claims =
        vericall::notify::signing::verify(v["signed_verdict"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["sid"], s.id.as_str());
    let list: serde_json::Value = ts.get_json("/v1/sessions?status=cancelled").await;
    assert_eq!(list["sessions"][0]["id"], s.id.as_str());
    let timeline = ts.timeline_until(&s.id, "session_ended").await;
    assert!(timeline.iter().any(|e| e["type"] == "session_ended"));
    ts.server.shutdown(std::time::Duration::from_secs(1)).await;
}
