//! `vericall` command line: `serve` runs the server; `keys`, `operators` and `signing-keys`
//! manage the server's database. The load generator is its own binary, `vericall-loadgen`
//! (`src/bin/loadgen.rs`, feature `testkit`), so the server carries no test support.
//!
//! Every command finds the database the same way as `serve`: `--database-url` (or
//! `$DATABASE_URL`), else the `database_url` of the `--config` file (or `$VERICALL_CONFIG`), else
//! the built-in `sqlite://data/vericall.db` relative to the current folder. `--database-url` and
//! `--config` may come before or after the subcommand.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vericall::config::Config;
use vericall::events::unix_ms_now;
use vericall::session::tokens::{new_id, new_secret};
use vericall::store::Store;

#[derive(Parser)]
#[command(
    name = "vericall",
    version,
    about = "Real-time video verification server"
)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage relying-party API keys (in the server's database).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage review-console operators (in the server's database).
    Operators {
        #[command(subcommand)]
        action: OperatorsAction,
    },
    /// Manage the keys that sign verdicts (published at /.well-known/jwks.json).
    SigningKeys {
        #[command(subcommand)]
        action: SigningKeysAction,
    },
}

#[derive(Subcommand)]
enum OperatorsAction {
    /// Create an operator. The password comes from $VERICALL_OPERATOR_PASSWORD, or a random one
    /// is generated and printed once.
    Create { username: String },
    /// List operators.
    List,
    /// Disable an operator (their logins end at once).
    Disable { username: String },
}

#[derive(Subcommand)]
enum SigningKeysAction {
    /// Make a new signing key; older keys are retired but stay published for 30 days.
    Rotate,
    /// List key ids and their state.
    List,
}

/// Where the database is: the same for every subcommand, so `keys` and `operators` act on the
/// database the server uses when given the same flags, environment or config file.
#[derive(Args)]
struct DbArgs {
    /// Database URL (defaults to the config file's `database_url`, then
    /// sqlite://data/vericall.db under the current folder).
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// TOML configuration file (the server's; its `database_url` is used).
    #[arg(long, env = "VERICALL_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
        /// A sandbox key: its sessions' verdicts can be forced (POST
        /// /v1/sessions/{id}/sandbox-verdict) and are marked `sandbox: true`.
        #[arg(long)]
        sandbox: bool,
    },
    /// List keys (ids and names, never the keys).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

/// Flags override environment variables (`VERICALL_<KEY>` for every key of the config file, see
/// docs/CONFIG.md), which override the config file.
#[derive(Args)]
struct ServeArgs {
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// UDP address of the one media port.
    #[arg(long)]
    media_addr: Option<SocketAddr>,
    /// Address advertised in ICE candidates (public IP, NAT, Kubernetes node).
    #[arg(long)]
    public_ip: Option<IpAddr>,
    /// Base URL put in links handed to clients.
    #[arg(long)]
    public_url: Option<String>,
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Folder with the page (static/).
    #[arg(long, env = "VERICALL_STATIC_DIR", default_value = "static")]
    static_dir: String,
    /// Development mode: print a ready-to-open page URL.
    #[arg(long)]
    dev: bool,
    #[arg(long)]
    log_format: Option<String>,
    /// Folder with the ONNX models written by scripts/setup.
    #[arg(long)]
    models_dir: Option<String>,
    /// Run without face tracking (no models needed).
    #[arg(long, env = "VERICALL_NO_FACE_ANALYSIS")]
    no_face_analysis: bool,
}

fn load_config(db: &DbArgs) -> anyhow::Result<Config> {
    // Defaults < TOML file < `VERICALL_<KEY>` environment; `DATABASE_URL` and flags on top.
    let mut cfg = Config::load(db.config.as_deref())?;
    if let Some(url) = &db.database_url {
        cfg.database_url = url.clone();
    }
    Ok(cfg)
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,str0m=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let db = cli.db;
    match cli.command {
        Command::Serve(args) => serve(db, args).await,
        Command::Keys { action } => keys(db, action).await,
        Command::Operators { action } => operators(db, action).await,
        Command::SigningKeys { action } => signing_keys(db, action).await,
    }
}

async fn serve(db: DbArgs, args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(&db)?;
    cfg.http_addr = args.http_addr.unwrap_or(cfg.http_addr);
    cfg.media_addr = args.media_addr.unwrap_or(cfg.media_addr);
    cfg.public_ip = args.public_ip.or(cfg.public_ip);
    cfg.public_url = args.public_url.or(cfg.public_url);
    cfg.max_sessions = args.max_sessions.unwrap_or(cfg.max_sessions);
    cfg.dev |= args.dev;
    cfg.models_dir = args.models_dir.unwrap_or(cfg.models_dir);
    cfg.face_analysis &= !args.no_face_analysis;
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    init_logs(&cfg.log_format);
    let dev = cfg.dev;
    let drain_secs = cfg.drain_secs;
    let server = vericall::server::start(cfg, &args.static_dir)
        .await
        .context("starting vericall")?;
    if let Some(key) = &server.created_api_key {
        // Printed once to the terminal, never to the log.
        println!(
            "Created an API key (shown only now; store it safely):\n  {key}\n  its id (the `aud` of signed verdicts): {}",
            server.created_api_key_id.as_deref().unwrap_or("")
        );
    }
    if dev {
        let created = server
            .registry
            .create_dev_session()
            .await
            .context("creating the development session")?;
        println!(
            "Development session ready. Open this URL in a browser on this machine:\n  {}/#session={}&token={}",
            server.base_url, created.session.id, created.client_token
        );
    }
    println!(
        "vericall listening on {} (HTTP {}, media UDP {})",
        server.base_url, server.http_addr, server.media_addr
    );
    shutdown_signal().await;
    tracing::info!(
        drain_secs,
        "shutting down: no new calls; letting running calls finish"
    );
    server.shutdown(Duration::from_secs(drain_secs)).await;
    Ok(())
}

async fn operators(db: DbArgs, action: OperatorsAction) -> anyhow::Result<()> {
    let store = open_store(&db).await?;
    match action {
        OperatorsAction::Create { username } => {
            let valid = !username.is_empty()
                && username.len() <= 64
                && username
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
            anyhow::ensure!(valid, "usernames are 1-64 of A-Z a-z 0-9 . _ - @");
            let (password, shown) = match std::env::var("VERICALL_OPERATOR_PASSWORD") {
                Ok(p) if p.len() >= 12 => (p, false),
                Ok(_) => anyhow::bail!("VERICALL_OPERATOR_PASSWORD must be at least 12 characters"),
                Err(_) => (new_secret("").0, true),
            };
            let hash = vericall::api::review::hash_password(&password);
            store
                .insert_operator(&username, &hash, unix_ms_now())
                .await?;
            if shown {
                println!("operator {username} created; password (shown only now): {password}");
            } else {
                println!("operator {username} created");
            }
        }
        OperatorsAction::List => {
            for (name, _, disabled) in store.list_operators().await? {
                let state = if disabled.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                println!("{name}\t{state}");
            }
        }
        OperatorsAction::Disable { username } => {
            anyhow::ensure!(
                store.disable_operator(&username, unix_ms_now()).await?,
                "no active operator {username}"
            );
            println!("disabled {username}");
        }
    }
    Ok(())
}

async fn signing_keys(db: DbArgs, action: SigningKeysAction) -> anyhow::Result<()> {
    let store = open_store(&db).await?;
    match action {
        SigningKeysAction::Rotate => {
            let row = vericall::notify::signing::rotate_key(&store).await?;
            println!(
                "new signing key {} (running servers switch to it within a minute)",
                row.kid
            );
        }
        SigningKeysAction::List => {
            for k in store.list_signing_keys().await? {
                let state = if k.retired_at.is_some() {
                    "retired"
                } else {
                    "active"
                };
                println!("{}\t{}", k.kid, state);
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Opens the database a subcommand manages, saying which one (a relative SQLite path means a
/// different file in another folder, the usual cause of "my key is not accepted").
async fn open_store(db: &DbArgs) -> anyhow::Result<Store> {
    let cfg = load_config(db)?;
    eprintln!("database: {}", redact_url(&cfg.database_url));
    Ok(Store::connect(&cfg.database_url).await?)
}

/// A database URL without its password.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

async fn keys(db: DbArgs, action: KeysAction) -> anyhow::Result<()> {
    let store = open_store(&db).await?;
    match action {
        KeysAction::Create { name, sandbox } => {
            let (key, hash) = new_secret("vck_");
            let id = new_id("key_");
            store
                .insert_api_key_of_kind(&id, &name, &hash.to_hex(), unix_ms_now(), sandbox)
                .await?;
            let kind = if sandbox { "sandbox" } else { "live" };
            println!(
                "id:   {id}\nkey:  {key}\nkind: {kind}\n(the key is shown only now; the id is the `aud` of its signed verdicts)"
            );
        }
        KeysAction::List => {
            for k in store.list_api_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let kind = if k.sandbox { "sandbox" } else { "live" };
                println!("{}\t{}\t{}\t{}", k.id, k.name, kind, status);
            }
        }
        KeysAction::Revoke { id } => {
            if store.revoke_api_key(&id, unix_ms_now()).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent_and_labels_each_command() {
        Cli::command().debug_assert();
        let about = |name: &str| {
            Cli::command()
                .find_subcommand(name)
                .and_then(|c| c.get_about().map(|a| a.to_string()))
                .unwrap_or_default()
        };
        assert!(Cli::command().find_subcommand("loadgen").is_none());
        assert!(about("keys").contains("API keys"), "{}", about("keys"));
        assert!(about("operators").contains("operators"));
    }

    #[test]
    fn database_flags_work_before_and_after_the_subcommand() {
        for args in [
            &["vericall", "--config", "v.toml", "keys", "list"][..],
            &["vericall", "keys", "--config", "v.toml", "list"][..],
            &["vericall", "keys", "list", "--config", "v.toml"][..],
            &["vericall", "signing-keys", "list", "--config", "v.toml"][..],
            &["vericall", "serve", "--config", "v.toml"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.db.config, Some(PathBuf::from("v.toml")), "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "vericall",
            "operators",
            "list",
            "--database-url",
            "sqlite://x.db",
        ])
        .unwrap();
        assert_eq!(cli.db.database_url.as_deref(), Some("sqlite://x.db"));
        assert_eq!(
            redact_url("postgres://u:secret@db/v"),
            "postgres://u:***@db/v"
        );
    }
}
