//! `GET /v1/requirements`: what this deployment asks of a person's device, browser, network, room
//! and ID card before the call, in English and Simplified Chinese. Every number comes from the
//! constant or configuration value the check itself uses, so the list cannot drift from what is
//! enforced (a person told in advance is not failed by surprise).

use axum::extract::State;
use axum::http::header;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::analysis::{device, quality};
use crate::config::Config;
use crate::document::{card, step};
use crate::media::netstats;

/// The requirements under `cfg`: one entry per area, each with its values and a sentence per
/// language.
pub fn requirements(cfg: &Config) -> Value {
    let light = quality::Thresholds::default();
    let capture = card::CaptureThresholds::default();
    let relay = cfg
        .ice_servers
        .iter()
        .any(|s| super::turn::is_turn(&s.urls));
    let minutes = (cfg.max_call_secs as f64 / 60.0).ceil() as u64;
    let steps = cfg.challenge_steps;
    let (light_en, light_zh) = if cfg.screen_light {
        (
            " First the screen shows a few calm colours for about 3 s (look at it and keep still); \
             people sensitive to changing light can skip this step.",
            "开始时屏幕会显示几种柔和的颜色约 3 秒（请看着屏幕并保持不动）；对光线变化敏感的人可以跳过这一步。",
        )
    } else {
        ("", "")
    };
    json!({
        "browser": {
            "webrtc": true,
            "text": {
                "en": "A current browser with WebRTC (Chrome, Edge, Firefox or Safari) or an app that \
                       joins by WHIP, allowed to use the camera (and the microphone when asked).",
                "zh-CN": "支持 WebRTC 的较新浏览器（Chrome、Edge、Firefox 或 Safari）或钱包应用，并允许其使用摄像头（需要时还有麦克风）。",
            },
        },
        "camera": {
            "min_width": device::MIN_WIDTH,
            "min_height": device::MIN_HEIGHT,
            "min_fps": device::MIN_FPS,
            "text": {
                "en": format!(
                    "A working camera giving at least {}x{} pixels at {} frames per second, not \
                     covered and not used by another app.",
                    device::MIN_WIDTH, device::MIN_HEIGHT, device::MIN_FPS
                ),
                "zh-CN": format!(
                    "可正常使用的摄像头，画面至少 {}x{} 像素、每秒 {} 帧，未被遮挡，也未被其他应用占用。",
                    device::MIN_WIDTH, device::MIN_HEIGHT, device::MIN_FPS
                ),
            },
        },
        "microphone": {
            "silent_below_dbfs": device::SILENCE_DBFS,
            "text": {
                "en": "When the call asks you to read digits aloud: a working, unmuted microphone.",
                "zh-CN": "如果通话要求你读出数字：需要一个可正常使用且未静音的麦克风。",
            },
        },
        "network": {
            "max_loss_percent": netstats::LOSS_HIGH_FRACTION * 100.0,
            "max_jitter_ms": netstats::JITTER_HIGH_MS,
            "max_rtt_ms": netstats::RTT_HIGH_MS,
            "relay_available": relay,
            "text": {
                "en": format!(
                    "A steady connection: under {}% packet loss, under {} ms jitter and under {} ms \
                     round trip; Wi-Fi close to the router or good mobile data.{}",
                    netstats::LOSS_HIGH_FRACTION * 100.0,
                    netstats::JITTER_HIGH_MS,
                    netstats::RTT_HIGH_MS,
                    if relay { " Networks that block UDP are relayed." } else { "" }
                ),
                "zh-CN": format!(
                    "稳定的网络：丢包低于 {}%，抖动低于 {} 毫秒，往返时延低于 {} 毫秒；请靠近路由器使用 Wi-Fi 或使用信号良好的移动数据。{}",
                    netstats::LOSS_HIGH_FRACTION * 100.0,
                    netstats::JITTER_HIGH_MS,
                    netstats::RTT_HIGH_MS,
                    if relay { "屏蔽 UDP 的网络会通过中继连接。" } else { "" }
                ),
            },
        },
        "lighting": {
            "dark_below_mean_luma": light.dark_on_mean,
            "bright_above_mean_luma": light.bright_on_mean,
            "text": {
                "en": "Your face evenly lit from the front: not a dark room, no bright window or lamp \
                       behind you, no direct sunlight on the screen.",
                "zh-CN": "脸部正面光线均匀：不要在昏暗的房间，身后不要有明亮的窗户或灯，屏幕不要被阳光直射。",
            },
        },
        "call": {
            "max_call_secs": cfg.max_call_secs,
            "movement_steps": steps,
            "screen_light": cfg.screen_light,
            "text": {
                "en": format!(
                    "The call takes at most {minutes} min: follow {steps} short instructions (turn, \
                     blink, ...).{light_en}"
                ),
                "zh-CN": format!(
                    "通话最长 {minutes} 分钟：按提示完成 {steps} 个简短动作（转头、眨眼等）。{light_zh}"
                ),
            },
        },
        "document": {
            "min_card_width_share": capture.min_width_share,
            "min_card_width_px": capture.min_width_px,
            "max_glare_share": capture.max_glare,
            "max_side_ratio": capture.max_side_ratio,
            "time_limit_secs": step::STEP_TIME_LIMIT.as_secs(),
            "text": {
                "en": format!(
                    "When asked for your ID card: hold the whole card flat towards the camera, \
                     filling at least {}% of the picture's width, without glare, within {} s.",
                    (capture.min_width_share * 100.0).round(),
                    step::STEP_TIME_LIMIT.as_secs()
                ),
                "zh-CN": format!(
                    "如需出示身份证：请在 {} 秒内将整张证件平对摄像头，至少占画面宽度的 {}%，避免反光。",
                    step::STEP_TIME_LIMIT.as_secs(),
                    (capture.min_width_share * 100.0).round()
                ),
            },
        },
    })
}

/// `GET /v1/requirements` (public: the page shows it before a session exists).
pub async fn get(
    State(state): State<AppState>,
) -> ([(header::HeaderName, &'static str); 1], Json<Value>) {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(requirements(&state.cfg)),
    )
}
