//! The OpenAPI description (docs/openapi.json, served at /openapi.json) is kept true: every
//! documented path and method exists on the real router, every relying-party route of the router
//! is documented, and a third-party validator accepts the document.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestServer;

const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "options"];

/// Routes of the router that are not the relying party's: the review console, the person's
/// client (WHIP, device reports) and Prometheus.
fn relying_party_route(path: &str) -> bool {
    !(path.starts_with("/v1/review")
        || path.starts_with("/whip/")
        || path == "/metrics"
        || path.ends_with("/client-report"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(path, method)` of every `.route(...)` in the router (src/api/mod.rs): the path literal and
/// the method routers chained in its second argument.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(repo().join("src/api/mod.rs")).unwrap();
    let body = &src[src.find("pub fn router(").unwrap()..];
    let body = &body[..body.find(".fallback_service(").unwrap()];
    let mut out = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap().to_string();
        // The route's own arguments end at its closing parenthesis.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap();
        let args = &chunk[..end];
        for m in METHODS {
            let called = args.match_indices(&format!("{m}(")).any(|(i, _)| {
                i == 0
                    || !args.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && args.as_bytes()[i - 1] != b'_'
            });
            if called {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_string()));
            }
        }
    }
    out
}

async fn served_document(ts: &TestServer) -> Value {
    let r = ts.http.get(ts.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.json().await.unwrap()
}

/// Every documented path and method is routed (never the router's 404 or a 405), and every
/// relying-party route of the router is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router() {
    let ts = TestServer::start().await;
    let doc = served_document(&ts).await;
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(doc, file, "/openapi.json serves docs/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["Error"]["required"] == json!(["error", "message"]),
        "the error shape is documented"
    );

    let documented = documented_routes(&doc);
    let routed = router_routes();
    assert!(routed.len() >= 20, "router parsed: {routed:?}");
    let undocumented: Vec<_> = routed
        .iter()
        .filter(|(p, _)| relying_party_route(p))
        .filter(|r| !documented.contains(*r))
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented routes: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not in the router source: {unrouted:?}"
    );

    // Ask the running router: every documented operation is answered by a handler. A route
    // miss is the static files' 404 (not JSON) and a wrong method is 405; a handler's 404 is the
    // JSON error. Deletions go last, so the session stays usable for the others.
    let session = ts.create_session().await;
    let mut calls: Vec<_> = documented.iter().collect();
    calls.sort_by_key(|(_, m)| m == "delete");
    for (path, method) in calls {
        let url = ts.url(
            &path
                .replace(
                    "/v1/webhook/deliveries/{id}",
                    "/v1/webhook/deliveries/dlv_none",
                )
                .replace("{id}", &session.id)
                .replace("{subject}", "nobody"),
        );
        let req = ts
            .http
            .request(method.to_uppercase().parse().unwrap(), &url)
            .bearer_auth(&ts.api_key)
            .timeout(Duration::from_secs(15));
        let req = match method.as_str() {
            "post" | "put" | "patch" => req.json(&json!({})),
            _ => req,
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert_ne!(status, 405, "{method} {path}: method not routed");
        if status == 404 {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                body["error"].is_string(),
                "{method} {path}: not routed (404 without the JSON error)"
            );
        }
    }
    ts.server.shutdown(Duration::from_secs(1)).await;
}

/// A third-party OpenAPI 3.1 validator (@seriousme/openapi-schema-validator, installed by
/// scripts/setup) accepts the served document, with every $ref resolving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_passes_a_third_party_validator() {
    assert!(
        repo()
            .join("node_modules/@seriousme/openapi-schema-validator/package.json")
            .exists(),
        "the OpenAPI validator is not installed: run scripts/setup (npm ci)"
    );
    let ts = TestServer::start().await;
    let doc = served_document(&ts).await;
    let file = ts.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let script = repo().join("tests/openapi/validate.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script).arg(&file).current_dir(repo());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("node runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "validator: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("the validator printed no JSON ({e}): {stdout}"));
    assert_eq!(report["version"], "3.1", "{report}");
    assert_eq!(report["valid"], true, "{report}");
    assert!(out.status.success());
    ts.server.shutdown(Duration::from_secs(1)).await;
}
