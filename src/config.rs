//! Server configuration: defaults that work out of the box, overridden by an optional TOML file,
//! then by `VERICALL_<KEY>` environment variables (every key), then by command-line flags (see
//! `main.rs`). The layering is figment's; docs/CONFIG.md lists every key and is generated from
//! this file (`UPDATE_CONFIG_DOC=1 cargo test --lib config` rewrites it; a test fails when they
//! differ).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that set configuration keys: `VERICALL_MAX_SESSIONS=100`
/// sets `max_sessions`. Values are read as TOML-like literals (`true`, `3`, `["a", "b"]`,
/// `{key = "v"}`); anything else is a string.
pub(crate) const ENV_PREFIX: &str = "VERICALL_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A key from the file or the environment has the wrong type or is unknown.
    #[error("invalid configuration: {0}")]
    Layer(Box<figment::Error>),
}

/// A STUN/TURN server advertised to clients in the WHIP `Link` headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API, WHIP and pages.
    pub http_addr: SocketAddr,
    /// The one UDP port that carries every session's media.
    pub media_addr: SocketAddr,
    /// Address put in ICE candidates (public/NAT/Kubernetes node address). Defaults to the media
    /// bind address, or 127.0.0.1 when that is unspecified (0.0.0.0).
    pub public_ip: Option<IpAddr>,
    /// Base URL for links handed to clients (WHIP, events, page). Defaults to `http://<http_addr>`.
    pub public_url: Option<String>,
    /// `sqlite://...` (default, a file under ./data/) or `postgres://...`.
    pub database_url: String,
    /// Folder of the default SQLite file and, without `evidence_url`, of evidence frames
    /// (`<data_dir>/evidence/`).
    pub data_dir: String,
    /// Sessions with media at once; WHIP answers 503 + Retry-After beyond this.
    pub max_sessions: usize,
    /// Lifetime of a session's client token before the call connects.
    pub session_ttl_secs: u64,
    /// Hard limit on one call's duration.
    pub max_call_secs: u64,
    /// A connected call with no media for this long ends as `idle_timeout`.
    pub idle_timeout_secs: u64,
    /// ICE + DTLS must complete within this after the WHIP offer.
    pub connect_timeout_secs: u64,
    /// After the connection drops, the client may ICE-restart within this window.
    pub reconnect_grace_secs: u64,
    /// Frames analysed per second while a step is judged (the full rate; other phases analyse
    /// fewer, `analysis::effort`). Decoding still sees every frame.
    pub analysis_fps: f64,
    /// Run face tracking (needs the models from `scripts/setup`).
    pub face_analysis: bool,
    /// Where `scripts/setup` put the ONNX models.
    pub models_dir: String,
    /// Liveness steps per call (0: no challenges and no verdict from the call).
    pub challenge_steps: usize,
    /// Start the challenges with the screen-light step (the page lights the face with a random
    /// colour sequence; docs/FACE.md). A person may still skip it, which sends them to review.
    pub screen_light: bool,
    /// Failed verdicts of one subject within `attempt_window_secs` before new sessions are refused
    /// (`TOO_MANY_ATTEMPTS`).
    pub max_failed_attempts: u32,
    pub attempt_window_secs: u64,
    /// Evidence frames are deleted after this many days.
    pub retention_days: u64,
    /// Sessions that ended this many days ago are deleted with their timeline, webhook
    /// deliveries and audit entries (after their deliveries are done); unset: `retention_days`.
    pub session_retention_days: Option<u64>,
    /// A subject's enrolled face (kept by a session created with `"enrol": true` that passed,
    /// matched by later `"reverify": true` sessions) is deleted this many days after the pass.
    pub enrolment_retention_days: u64,
    /// Largest accepted SDP / sdpfrag body.
    pub max_sdp_bytes: usize,
    /// STUN and TURN servers handed to clients in the WHIP `Link` headers (`[[ice_servers]]` with
    /// `urls`, and for a TURN server without `turn_secret` a `username` and `credential`).
    pub ice_servers: Vec<IceServer>,
    /// coturn's REST-API shared secret (its `static-auth-secret`). When set, every `turn:` or
    /// `turns:` server in `ice_servers` without its own username gets a username and password
    /// minted for each session's WHIP answer, valid `turn_credential_secs`; without it a TURN
    /// server's static credentials are handed to every client.
    pub turn_secret: Option<String>,
    /// How long a minted TURN credential is valid (longer than the longest call, so that the
    /// relay's allocation refreshes keep working).
    pub turn_credential_secs: u64,
    /// Development mode: prints a ready-to-open page URL at start-up.
    pub dev: bool,
    /// `text` or `json` logs.
    pub log_format: String,
    /// First webhook retry after this; each later wait is 3x longer (at most 6 h).
    pub webhook_retry_base_ms: u64,
    /// A webhook delivery is given up this long after it was created.
    pub webhook_give_up_secs: u64,
    /// Sessions one API key may create per minute (0: unlimited); beyond it, 429 + Retry-After.
    pub sessions_per_minute: u32,
    /// WHIP offers one client IP may make per minute (0: unlimited).
    pub whip_offers_per_minute: u32,
    /// Origins (e.g. `https://wallet.example`) whose pages may call the API from the browser and
    /// embed the verification page in a frame. Empty: same origin only.
    pub allowed_origins: Vec<String>,
    /// Review-console logins last this long.
    pub operator_login_hours: u64,
    /// This instance's name when several share one database (defaults to `$HOSTNAME`, i.e. the
    /// pod name). A restart ends only the sessions this node left open.
    pub node_id: Option<String>,
    /// Where evidence frames are kept: unset, the folder `<data_dir>/evidence`; on a cluster,
    /// S3-compatible storage every node reads (`s3://bucket/prefix`; credentials, region and
    /// endpoint from the standard `AWS_*` environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` for MinIO and the like).
    pub evidence_url: Option<String>,
    /// The secret the nodes sharing one database sign forwarded requests with (docs/SCALING.md).
    /// When set, a node that receives a request only a session's owner can answer (WHIP, events,
    /// reference, client report, cancel) forwards it to the owner, so that every node can sit
    /// behind one hostname. Unset: no forwarding (one node, or one hostname per node).
    pub node_secret: Option<String>,
    /// The URL this node's peers reach its HTTP listener at (e.g. `http://$(POD_IP):8080`).
    /// Defaults to `http://<http_addr>`, which suits only a specific listening address.
    pub internal_url: Option<String>,
    /// A node whose heartbeat (every 2 s, in the database) is this old is lost: another node
    /// ends its open sessions `node_lost`, each with a verdict and its webhook.
    pub node_lost_secs: u64,
    /// On shutdown, running calls get this long to finish before they are ended.
    pub drain_secs: u64,
    /// Allow webhook URLs on loopback/private addresses and plain http (tests, lab setups).
    pub webhook_allow_internal: bool,
    /// Signed verdicts may be relied on this long after the decision (`exp` - `iat`). Retired
    /// signing keys stay published at least this long, so an unexpired verdict always verifies.
    pub signed_verdict_lifetime_secs: u64,
    /// Fixed DNS answers for webhook host names (like curl's `--resolve`: `{"hooks.example" =
    /// ["203.0.113.5"]}`), for split-horizon DNS and tests. The answers are still checked: an
    /// internal address is refused unless `webhook_allow_internal`.
    pub webhook_resolve: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// Take the client address for rate limits from the last `X-Forwarded-For` entry (set this
    /// only behind a proxy or ingress that overwrites that header).
    pub trust_forwarded_for: bool,
    /// An HTTP client must send a request's headers, and then its whole body, within this many
    /// seconds each, or the connection is closed (slow clients cannot hold connections open).
    pub http_read_timeout_secs: u64,
    /// When set, `GET /metrics` answers only requests with `Authorization: Bearer <token>` (the
    /// metrics name the node's load and its calls' outcomes); unset, it is open, for a metrics
    /// port that only the cluster reaches.
    pub metrics_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50000)),
            public_ip: None,
            public_url: None,
            database_url: "sqlite://data/vericall.db?mode=rwc".into(),
            data_dir: "data".into(),
            max_sessions: 50,
            session_ttl_secs: 600,
            max_call_secs: 300,
            idle_timeout_secs: 10,
            connect_timeout_secs: 20,
            reconnect_grace_secs: 15,
            analysis_fps: 15.0,
            face_analysis: true,
            models_dir: "models".into(),
            challenge_steps: crate::liveness::DEFAULT_STEPS,
            screen_light: true,
            max_failed_attempts: 5,
            attempt_window_secs: 3600,
            retention_days: 30,
            session_retention_days: None,
            enrolment_retention_days: 365,
            max_sdp_bytes: 64 * 1024,
            ice_servers: Vec::new(),
            turn_secret: None,
            turn_credential_secs: 900,
            dev: false,
            log_format: "text".into(),
            webhook_retry_base_ms: 10_000,
            webhook_give_up_secs: 24 * 3600,
            sessions_per_minute: 600,
            whip_offers_per_minute: 60,
            allowed_origins: Vec::new(),
            operator_login_hours: 12,
            node_id: None,
            evidence_url: None,
            node_secret: None,
            internal_url: None,
            node_lost_secs: 20,
            drain_secs: 90,
            webhook_allow_internal: false,
            webhook_resolve: Default::default(),
            signed_verdict_lifetime_secs: 30 * 24 * 3600,
            trust_forwarded_for: false,
            http_read_timeout_secs: 15,
            metrics_token: None,
        }
    }
}

impl Config {
    /// Every configuration key: the TOML keys, and `VERICALL_<KEY>` upper-cased in the environment.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The layers below the flags: defaults < the TOML file (when given) < `VERICALL_<KEY>`
    /// environment variables. Other `VERICALL_*` variables (`VERICALL_CONFIG`,
    /// `VERICALL_API_KEY`, ...) are not keys and are left alone.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut layers = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            // Parsed here first so that a syntax error names the file, as before.
            toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            })?;
            layers = layers.merge(Toml::string(&text));
        }
        let keys = Config::keys();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        layers
            .merge(Env::prefixed(ENV_PREFIX).only(&keys))
            .extract()
            .map_err(|e| ConfigError::Layer(Box::new(e)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "http_read_timeout_secs must be at least 1".into(),
            ));
        }
        if self.max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "max_sessions must be at least 1".into(),
            ));
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return Err(ConfigError::Invalid(
                "database_url must start with sqlite: or postgres://".into(),
            ));
        }
        if self.enrolment_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "enrolment_retention_days must be at least 1".into(),
            ));
        }
        // Zero would delete a session the moment it ends, before its relying party reads it.
        if self.session_retention_days == Some(0) {
            return Err(ConfigError::Invalid(
                "session_retention_days must be at least 1".into(),
            ));
        }
        if self.signed_verdict_lifetime_secs < 60 {
            return Err(ConfigError::Invalid(
                "signed_verdict_lifetime_secs must be at least 60".into(),
            ));
        }
        if !(self.analysis_fps > 0.0 && self.analysis_fps <= 60.0) {
            return Err(ConfigError::Invalid(
                "analysis_fps must be in (0, 60]".into(),
            ));
        }
        // Three missed heartbeats at least, so that one slow database write loses no node.
        if self.node_lost_secs < 6 {
            return Err(ConfigError::Invalid(
                "node_lost_secs must be at least 6".into(),
            ));
        }
        if let Some(secret) = &self.node_secret {
            if secret.len() < 16 {
                return Err(ConfigError::Invalid(
                    "node_secret must be at least 16 characters".into(),
                ));
            }
            if self.internal_url.is_none() && self.http_addr.ip().is_unspecified() {
                return Err(ConfigError::Invalid(format!(
                    "node_secret needs internal_url: peers cannot reach {} (set e.g. http://$(POD_IP):{})",
                    self.http_addr,
                    self.http_addr.port()
                )));
            }
        }
        if self.metrics_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "metrics_token must not be empty (leave it unset for open metrics)".into(),
            ));
        }
        if self.turn_secret.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "turn_secret must not be empty (leave it unset for static TURN credentials)".into(),
            ));
        }
        // A relay checks the expiry again on each allocation refresh: it must outlast a call.
        if self.turn_credential_secs <= self.max_call_secs {
            return Err(ConfigError::Invalid(format!(
                "turn_credential_secs ({}) must exceed max_call_secs ({})",
                self.turn_credential_secs, self.max_call_secs
            )));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(
                "log_format must be text or json".into(),
            ));
        }
        for o in &self.allowed_origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                // What an HTTP header value may hold (the check `HeaderValue` makes), without
                // making configuration depend on the HTTP stack.
                && !o.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "allowed_origins: {o:?} is not an origin like https://wallet.example"
                )));
            }
        }
        Ok(())
    }

    /// The IP address clients are told to send media to.
    pub(crate) fn advertised_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or_else(|| {
            let ip = self.media_addr.ip();
            if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip
            }
        })
    }

    /// Where peers reach this node (`internal_url`, else the listening address).
    pub fn internal_url(&self, http_local: SocketAddr) -> String {
        match &self.internal_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{http_local}"),
        }
    }

    pub fn base_url(&self, http_local: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{http_local}"),
        }
    }

    pub fn node(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "local".into())
    }

    /// `iss` of signed verdicts: the public URL, or `vericall` when none is configured.
    pub(crate) fn issuer(&self) -> String {
        self.public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| "vericall".into())
    }

    pub(crate) fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_advertise_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.advertised_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let c = Config {
            media_addr: "0.0.0.0:5000".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(c.advertised_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail returns figment's (large) error type
    fn every_key_is_settable_from_the_environment_over_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("v.toml", "max_sessions = 3\nlog_format = \"json\"\n")?;
            jail.set_env("VERICALL_MAX_SESSIONS", "7");
            jail.set_env("VERICALL_FACE_ANALYSIS", "false");
            jail.set_env("VERICALL_PUBLIC_IP", "203.0.113.7");
            jail.set_env("VERICALL_HTTP_ADDR", "0.0.0.0:8081");
            jail.set_env("VERICALL_ALLOWED_ORIGINS", "[\"https://wallet.example\"]");
            jail.set_env("VERICALL_WEBHOOK_RESOLVE", "{hooks = [\"203.0.113.5\"]}");
            jail.set_env(
                "VERICALL_ICE_SERVERS",
                "[{urls = \"stun:stun.example.org\"}]",
            );
            // Not keys: ignored, not refused.
            jail.set_env("VERICALL_CONFIG", "v.toml");
            jail.set_env("VERICALL_API_KEY", "vck_x");
            let c = Config::load(Some(Path::new("v.toml"))).expect("layers");
            assert_eq!(c.max_sessions, 7, "the environment wins over the file");
            assert_eq!(c.log_format, "json", "the file wins over the defaults");
            assert!(!c.face_analysis);
            assert_eq!(c.advertised_ip().to_string(), "203.0.113.7");
            assert_eq!(c.http_addr.port(), 8081);
            assert_eq!(c.allowed_origins, ["https://wallet.example"]);
            assert_eq!(c.webhook_resolve["hooks"][0].to_string(), "203.0.113.5");
            assert_eq!(c.ice_servers[0].urls, "stun:stun.example.org");
            jail.set_env("VERICALL_MAX_SESSIONS", "many");
            assert!(Config::load(None).is_err(), "a wrong type is an error");
            Ok(())
        });
        let keys = Config::keys();
        assert!(
            keys.contains(&"session_retention_days".to_string()),
            "None fields are keys too"
        );
        assert_eq!(keys.len(), config_doc_rows().len());
    }

    /// (key, default, doc) for every field of `Config`, docs read from this file's source.
    fn config_doc_rows() -> Vec<(String, String, String)> {
        let source = include_str!("config.rs");
        let body = &source[source.find("pub struct Config {").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut rows = Vec::new();
        let mut doc = Vec::new();
        for line in body.lines().skip(1).map(str::trim) {
            if let Some(d) = line.strip_prefix("///") {
                doc.push(d.trim().to_string());
            } else if let Some(field) = line.strip_prefix("pub ") {
                let key = field.split(':').next().unwrap().trim().to_string();
                let default = match &defaults[&key] {
                    serde_json::Value::Null => "(unset)".to_string(),
                    v => format!("`{v}`"),
                };
                rows.push((key, default, doc.join(" ").replace('|', "\\|")));
                doc.clear();
            }
        }
        rows
    }

    #[test]
    fn config_doc_is_generated_from_the_code() {
        let mut out = String::from(
            "# Configuration\n\nGenerated from `src/config.rs` (`UPDATE_CONFIG_DOC=1 cargo test --lib config` rewrites this file; a test fails when they differ).\n\nLayers, later wins: built-in defaults < the TOML file (`--config` / `$VERICALL_CONFIG`) < environment (`VERICALL_<KEY>`, and `DATABASE_URL`) < `vericall serve` flags. Environment values are TOML-like literals (`true`, `3`, `[\"https://a.example\"]`, `{host = [\"203.0.113.5\"]}`); anything else is a string.\n\n| key (TOML) | environment | default | meaning |\n|---|---|---|---|\n",
        );
        for (key, default, doc) in config_doc_rows() {
            out.push_str(&format!(
                "| `{key}` | `{ENV_PREFIX}{}` | {default} | {doc} |\n",
                key.to_uppercase()
            ));
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
        if std::env::var_os("UPDATE_CONFIG_DOC").is_some() {
            std::fs::write(path, &out).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == out,
            "docs/CONFIG.md is stale: UPDATE_CONFIG_DOC=1 cargo test --lib config"
        );
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c: Config = toml::from_str(
            "max_sessions = 3\npublic_ip = \"203.0.113.7\"\n[[ice_servers]]\nurls = \"stun:stun.example.org\"\n",
        )
        .unwrap();
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.advertised_ip().to_string(), "203.0.113.7");
        assert_eq!(c.ice_servers.len(), 1);
        assert!(toml::from_str::<Config>("max_sesions = 3").is_err());
        let bad = Config {
            database_url: "mysql://x".into(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}
