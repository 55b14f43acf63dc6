//! `vericall-loadgen`: many WebRTC peers streaming pre-encoded media into a running server, then
//! a JSON report of what the server received (`vericall::testkit::load`). A separate binary so
//! that the server carries none of the test support (built with `--features testkit`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vericall::testkit::load::{run_load, LoadOptions};

/// Load generator: many WebRTC peers streaming pre-encoded VP8 (a test pattern, or rendered
/// people who follow their challenges) into a running server.
#[derive(Parser)]
#[command(name = "vericall-loadgen", version)]
struct LoadgenArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "VERICALL_API_KEY")]
    api_key: String,
    #[arg(long, default_value_t = 4)]
    peers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 150)]
    stagger_ms: u64,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    #[arg(long, default_value_t = 15)]
    fps: u32,
    #[arg(long, default_value_t = 500)]
    kbps: u32,
    /// Also send Opus audio.
    #[arg(long)]
    audio: bool,
    /// Full verifications: stream rendered people who follow their challenges (until each
    /// call's verdict, at most --seconds), rendered from the face models in this folder.
    #[arg(long, value_name = "MODELS_DIR")]
    people: Option<PathBuf>,
    /// With --people: milliseconds each person takes to start a motion after it is asked, on
    /// top of the clips' own 0.3 s (0: at once, the densest call).
    #[arg(long, default_value_t = 0)]
    reaction_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = LoadgenArgs::parse();
    let report = run_load(LoadOptions {
        base_url: a.url.trim_end_matches('/').to_string(),
        api_key: a.api_key,
        peers: a.peers,
        duration: Duration::from_secs(a.seconds),
        stagger: Duration::from_millis(a.stagger_ms),
        width: a.width,
        height: a.height,
        fps: a.fps,
        bitrate_kbps: a.kbps,
        audio: a.audio,
        people: a.people,
        reaction: Duration::from_millis(a.reaction_ms),
    })
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        LoadgenArgs::command().debug_assert();
        let a = LoadgenArgs::try_parse_from(["vericall-loadgen", "--api-key", "k", "--peers", "8"])
            .unwrap();
        assert_eq!((a.peers, a.seconds), (8, 10));
    }
}
