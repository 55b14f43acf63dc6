//! Stable reason codes: the single source of truth for every code the server emits in guidance,
//! device and network events (and, later, verdicts). Each code carries whether a retry can help,
//! a hint in English and Simplified Chinese that tells a person what to do, and what evidence an
//! operator gets with it. `docs/REASONS.md` is generated from this table and a test keeps the two
//! identical (regenerate with `UPDATE_REASONS=1 cargo test --lib reasons`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    NetworkLossHigh,
    NetworkJitterHigh,
    NetworkFrozen,
    NetworkRttHigh,
    CameraNoVideo,
    CameraBlack,
    CameraFrozen,
    CameraLowResolution,
    CameraLowFramerate,
    CameraStalled,
    MicMissing,
    MicSilent,
    LightingTooDark,
    LightingTooBright,
    Glare,
    Blur,
    ColorCast,
    FaceNotFound,
    FaceTooFar,
    FaceTooClose,
    FaceNotCentered,
    MultipleFaces,
    FaceOccluded,
    LightingBacklit,
    ChallengeTimeout,
    ChallengeFailed,
    SpeechNotMatched,
    SpoofSuspected,
    FaceMismatch,
    EnrolmentMismatch,
    NetworkUnstable,
    TooManyAttempts,
    SessionIncomplete,
    PermissionDenied,
    DeviceNotFound,
    DeviceInUse,
    DeviceUnsupported,
    BrowserUnsupported,
    ReviewRejected,
    DocumentNotShown,
    DocumentTooFar,
    DocumentTilted,
    DocumentGlare,
    DocumentBlur,
    DocumentCutOff,
    DocumentPortraitMismatch,
    IdNumberInvalid,
    IdInfoMismatch,
    ScreenLightTooBright,
    ScreenLightTooFar,
    ScreenLightNotSeen,
    ScreenLightSkipped,
}

/// Everything documented about one code.
#[derive(Debug, Clone, Copy)]
pub struct ReasonInfo {
    pub code: &'static str,
    pub meaning: &'static str,
    pub retryable: bool,
    pub hint_en: &'static str,
    pub hint_zh: &'static str,
    pub evidence: &'static str,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 52] = [
        ReasonCode::NetworkLossHigh,
        ReasonCode::NetworkJitterHigh,
        ReasonCode::NetworkFrozen,
        ReasonCode::NetworkRttHigh,
        ReasonCode::CameraNoVideo,
        ReasonCode::CameraBlack,
        ReasonCode::CameraFrozen,
        ReasonCode::CameraLowResolution,
        ReasonCode::CameraLowFramerate,
        ReasonCode::CameraStalled,
        ReasonCode::MicMissing,
        ReasonCode::MicSilent,
        ReasonCode::LightingTooDark,
        ReasonCode::LightingTooBright,
        ReasonCode::Glare,
        ReasonCode::Blur,
        ReasonCode::ColorCast,
        ReasonCode::FaceNotFound,
        ReasonCode::FaceTooFar,
        ReasonCode::FaceTooClose,
        ReasonCode::FaceNotCentered,
        ReasonCode::MultipleFaces,
        ReasonCode::FaceOccluded,
        ReasonCode::LightingBacklit,
        ReasonCode::ChallengeTimeout,
        ReasonCode::ChallengeFailed,
        ReasonCode::SpeechNotMatched,
        ReasonCode::SpoofSuspected,
        ReasonCode::FaceMismatch,
        ReasonCode::EnrolmentMismatch,
        ReasonCode::NetworkUnstable,
        ReasonCode::TooManyAttempts,
        ReasonCode::SessionIncomplete,
        ReasonCode::PermissionDenied,
        ReasonCode::DeviceNotFound,
        ReasonCode::DeviceInUse,
        ReasonCode::DeviceUnsupported,
        ReasonCode::BrowserUnsupported,
        ReasonCode::ReviewRejected,
        ReasonCode::DocumentNotShown,
        ReasonCode::DocumentTooFar,
        ReasonCode::DocumentTilted,
        ReasonCode::DocumentGlare,
        ReasonCode::DocumentBlur,
        ReasonCode::DocumentCutOff,
        ReasonCode::DocumentPortraitMismatch,
        ReasonCode::IdNumberInvalid,
        ReasonCode::IdInfoMismatch,
        ReasonCode::ScreenLightTooBright,
        ReasonCode::ScreenLightTooFar,
        ReasonCode::ScreenLightNotSeen,
        ReasonCode::ScreenLightSkipped,
    ];

    pub fn as_str(self) -> &'static str {
        self.info().code
    }

    /// The key the page uses to look up its localized hint.
    pub fn hint_key(self) -> String {
        format!("hint.{}", self.as_str())
    }

    pub fn from_code(code: &str) -> Option<ReasonCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    pub fn info(self) -> ReasonInfo {
        use ReasonCode::*;
        let (code, meaning, retryable, hint_en, hint_zh, evidence) = match self {
            NetworkLossHigh => (
                "NETWORK_LOSS_HIGH",
                "More than 5% of media packets were lost in a 1 s window for at least 2 s.",
                true,
                "Your connection is dropping data. Move closer to your Wi-Fi router or switch to a stronger network.",
                "您的网络正在丢失数据。请靠近 Wi-Fi 路由器，或切换到信号更好的网络。",
                "Per-second loss before and after repair, NACK counts, connection score.",
            ),
            NetworkJitterHigh => (
                "NETWORK_JITTER_HIGH",
                "Interarrival jitter above 50 ms for at least 2 s.",
                true,
                "Your network is unstable. Close other apps that use the internet, or switch to Wi-Fi.",
                "您的网络不稳定。请关闭其他占用网络的应用，或切换到 Wi-Fi。",
                "Jitter (RFC 3550) per stream, connection score.",
            ),
            NetworkFrozen => (
                "NETWORK_FROZEN",
                "The received video froze (an inter-frame gap of at least max(3x the mean frame time, mean + 150 ms)) while the network was poor.",
                true,
                "Your video keeps freezing. Switch to a faster network and try again.",
                "您的视频画面频繁卡住。请切换到更快的网络后重试。",
                "Freeze count and total freeze time, frame rate.",
            ),
            NetworkRttHigh => (
                "NETWORK_RTT_HIGH",
                "Round-trip time above 400 ms for at least 2 s.",
                true,
                "Your connection is very slow. Switch to a faster network.",
                "您的网络延迟很高。请切换到更快的网络。",
                "Round-trip time from RTCP.",
            ),
            CameraNoVideo => (
                "CAMERA_NO_VIDEO",
                "No decodable video frame within 3 s of connecting.",
                true,
                "We can't see any video. Check that no other app is using your camera, then try again.",
                "我们没有收到视频画面。请确认没有其他应用正在使用摄像头，然后重试。",
                "Time since connect, video packets received, decoder state.",
            ),
            CameraBlack => (
                "CAMERA_BLACK",
                "The camera sends near-black frames (mean luma < 24, range < 12) for at least 1 s.",
                true,
                "Your camera shows only black. Remove any cover from the lens, or choose another camera.",
                "摄像头画面全黑。请移开镜头遮挡物，或选择其他摄像头。",
                "Mean luma and dynamic range of the analysed frames.",
            ),
            CameraStalled => (
                "CAMERA_STALLED",
                "The sender stopped producing video for a moment (its RTP capture clock jumped with the arrival gap, no packet lost, no network delay) in consecutive one-second windows for at least 1 s.",
                true,
                "Your device paused the video. Keep this page in front, close other apps, and hold still for a moment.",
                "您的设备暂停了视频。请保持本页面在前台，关闭其他应用，并稍等片刻。",
                "Sender stalls per second (gaps in the RTP capture time without loss or network delay).",
            ),
            CameraFrozen => (
                "CAMERA_FROZEN",
                "Decoded frames are unchanged for more than 1.5 s while packets still arrive.",
                true,
                "Your camera picture is stuck. Close and reopen the camera, or restart the app.",
                "摄像头画面卡住不动。请关闭并重新打开摄像头，或重启应用。",
                "Frame-difference signature distance, packets received meanwhile.",
            ),
            CameraLowResolution => (
                "CAMERA_LOW_RESOLUTION",
                "Decoded video is smaller than 480x360 for at least 2 s.",
                true,
                "Your video quality is too low. Use your phone's front camera or a better webcam.",
                "视频清晰度太低。请使用手机前置摄像头或更好的摄像头。",
                "Decoded width and height.",
            ),
            CameraLowFramerate => (
                "CAMERA_LOW_FRAMERATE",
                "Fewer than 8 decoded frames per second over 2 s while the network is fine.",
                true,
                "Your camera is too slow. Close other apps and add more light, then try again.",
                "摄像头帧率过低。请关闭其他应用并增加光线后重试。",
                "Decoded frames per second.",
            ),
            MicMissing => (
                "MIC_MISSING",
                "The session wants audio but the call has no audio track.",
                true,
                "We can't hear you: no microphone was shared. Allow microphone access and try again.",
                "我们没有收到声音：未共享麦克风。请允许使用麦克风后重试。",
                "The negotiated media of the call.",
            ),
            MicSilent => (
                "MIC_SILENT",
                "The microphone delivers digital silence (samples at or below -90 dBFS, or only DTX) for at least 3 s, or no voice was heard within 4 s of the spoken step's prompt; room quiet elsewhere is not silence. Fails a call only from the spoken step or when the track is digitally silent.",
                true,
                "We can't hear you. Check that your microphone is not muted.",
                "我们听不到您的声音。请检查麦克风是否被静音。",
                "Audio level in dBFS over time, DTX packet share.",
            ),
            LightingTooDark => (
                "LIGHTING_TOO_DARK",
                "Mean luma below 50 for at least 1 s.",
                true,
                "It's too dark. Turn on a light or face a window.",
                "光线太暗。请打开灯或面向窗户。",
                "Mean luma, under-exposed fraction.",
            ),
            LightingTooBright => (
                "LIGHTING_TOO_BRIGHT",
                "More than 25% of the picture over-exposed (or mean luma above 215) for at least 1 s.",
                true,
                "It's too bright. Move away from direct light.",
                "光线太强。请避开直射光。",
                "Over-exposed fraction, mean luma.",
            ),
            Glare => (
                "GLARE",
                "Clipped highlight blobs cover more than 1% of the picture for at least 1 s.",
                true,
                "There is glare on the picture. Tilt the camera or move away from the light source.",
                "画面有反光。请调整摄像头角度或远离光源。",
                "Glare area fraction and blob count.",
            ),
            Blur => (
                "BLUR",
                "The picture is out of focus (low Laplacian variance) for at least 1 s.",
                true,
                "The picture is blurry. Hold the camera still and wipe the lens.",
                "画面模糊。请保持摄像头稳定并擦拭镜头。",
                "Sharpness (variance of the Laplacian at 320 px width).",
            ),
            ColorCast => (
                "COLOR_CAST",
                "A strong colour cast (mean chroma offset above 25) for at least 1 s.",
                true,
                "The colours look wrong. Use white light instead of coloured light.",
                "画面偏色。请使用白光照明，避免彩色灯光。",
                "Mean chroma offset.",
            ),
            FaceNotFound => (
                "FACE_NOT_FOUND",
                "No face in the picture for at least 1 s.",
                true,
                "We can't see your face. Look straight at the camera and keep your face inside the oval.",
                "未检测到您的脸。请正对摄像头，并将脸保持在椭圆框内。",
                "Face count per analysed frame, detector scores.",
            ),
            FaceTooFar => (
                "FACE_TOO_FAR",
                "The face is narrower than 22% of the picture for at least 1 s.",
                true,
                "Move closer to the camera.",
                "请靠近摄像头。",
                "Face box width as a share of the frame width.",
            ),
            FaceTooClose => (
                "FACE_TOO_CLOSE",
                "The face is wider than 75% of the picture for at least 1 s.",
                true,
                "Move a little further from the camera.",
                "请离摄像头稍远一些。",
                "Face box width as a share of the frame width.",
            ),
            FaceNotCentered => (
                "FACE_NOT_CENTERED",
                "The face centre is more than 25% of the picture away from its centre for at least 1 s.",
                true,
                "Move your face to the middle of the picture.",
                "请将脸移到画面中央。",
                "Face centre offset from the frame centre.",
            ),
            MultipleFaces => (
                "MULTIPLE_FACES",
                "More than one face in the picture for at least 1 s.",
                true,
                "Make sure only you are in the picture.",
                "请确保画面中只有您一个人。",
                "Face count per analysed frame.",
            ),
            FaceOccluded => (
                "FACE_OCCLUDED",
                "A face is detected but the face mesh rejects it (covered face) for at least 1 s.",
                true,
                "Part of your face is covered. Remove masks, hands, hats or sunglasses.",
                "您的脸部被遮挡。请摘下口罩、帽子或墨镜，并移开手。",
                "Detector score and mesh presence.",
            ),
            LightingBacklit => (
                "LIGHTING_BACKLIT",
                "The surroundings are more than 1.8x brighter than the face for at least 1 s.",
                true,
                "There is strong light behind you. Turn so the light is in front of you.",
                "您身后的光线太强。请转身，让光线照在您的脸上。",
                "Face luma and surround luma (ratio).",
            ),
            ChallengeTimeout => (
                "CHALLENGE_TIMEOUT",
                "A liveness step (turn, nod, blink, open mouth, move closer) was not begun within 5 s or not completed in its time.",
                true,
                "Follow the on-screen instruction when it appears, then return to looking straight at the camera.",
                "请在提示出现时按照指示完成动作，然后重新正视摄像头。",
                "The step's action, peak value reached, threshold, elapsed and paused time.",
            ),
            ChallengeFailed => (
                "CHALLENGE_FAILED",
                "Not enough liveness steps were completed.",
                true,
                "Try again in a quiet, well-lit place and follow each instruction on screen.",
                "请在安静、光线充足的地方重试，并按照屏幕上的每个指示操作。",
                "Per-step results with their evidence.",
            ),
            SpeechNotMatched => (
                "SPEECH_NOT_MATCHED",
                "In the spoken step a voice was heard, but the mouth did not move with it (correlation of the mouth-opening and speech envelopes below 0.3, or a still mouth): a voice played over a still face, or lips that follow another recording.",
                true,
                "We heard a voice but could not see your lips move with it. Face the camera and read the digits aloud yourself.",
                "我们听到了声音，但没有看到您的嘴唇随之而动。请面对摄像头，亲自大声读出这些数字。",
                "Onset time, voiced time, the best correlation and the mouth's range of opening.",
            ),
            SpoofSuspected => (
                "SPOOF_SUSPECTED",
                "The face moved like a flat picture (photo or screen) rather than a real head.",
                false,
                "We could not confirm a live person. Use your own face in front of the camera, not a photo or a screen.",
                "我们无法确认是真人。请本人面对摄像头，不要使用照片或屏幕。",
                "Planarity scores (homography vs affine residual), kind (photo or screen), frames judged.",
            ),
            FaceMismatch => (
                "FACE_MISMATCH",
                "The face does not match the reference (ID) photo.",
                false,
                "The face in the video does not match your ID photo. The account holder must verify in person.",
                "视频中的人脸与您的证件照片不一致。请由账户本人进行验证。",
                "Similarity, threshold, the frames compared.",
            ),
            EnrolmentMismatch => (
                "ENROLMENT_MISMATCH",
                "A re-verification: the face does not match the face enrolled when this account last passed.",
                false,
                "The face in the video does not match the face this account was verified with. The account holder must verify in person.",
                "视频中的人脸与该账户此前验证时登记的人脸不一致。请由账户本人进行验证。",
                "Similarity, threshold, the frames compared, against: enrolment.",
            ),
            NetworkUnstable => (
                "NETWORK_UNSTABLE",
                "The network was too poor to judge the checks fairly.",
                true,
                "Your connection was unstable, so we could not finish. Switch to Wi-Fi or a stronger signal and try again.",
                "网络不稳定，验证未能完成。请切换到 Wi-Fi 或信号更好的网络后重试。",
                "Time spent with poor quality, loss, jitter and freezes during the steps.",
            ),
            TooManyAttempts => (
                "TOO_MANY_ATTEMPTS",
                "This person failed too many verifications recently.",
                true,
                "Too many attempts. Please wait an hour before trying again.",
                "尝试次数过多。请一小时后再试。",
                "Failed attempts of the subject in the window.",
            ),
            SessionIncomplete => (
                "SESSION_INCOMPLETE",
                "The call ended before the checks were finished.",
                true,
                "The verification was interrupted. Please start again and stay on the page until it finishes.",
                "验证被中断。请重新开始，并在完成前保持在此页面。",
                "How the call ended and which steps were done.",
            ),
            PermissionDenied => (
                "PERMISSION_DENIED",
                "The browser or app was not allowed to use the camera or microphone (reported by the client before the call).",
                true,
                "Allow this page to use your camera and microphone (in the browser's address bar or your phone's settings), then try again.",
                "请允许此页面使用摄像头和麦克风（在浏览器地址栏或手机设置中开启），然后重试。",
                "The client's report: which device and the browser error name.",
            ),
            DeviceNotFound => (
                "DEVICE_NOT_FOUND",
                "No camera or no microphone was found on the device (reported by the client).",
                true,
                "We can't find a camera or microphone. Connect one, or use a phone with a front camera.",
                "未找到摄像头或麦克风。请连接设备，或改用带前置摄像头的手机。",
                "The client's report: which device and the browser error name.",
            ),
            DeviceInUse => (
                "DEVICE_IN_USE",
                "The camera or microphone could not be started, usually because another app holds it (reported by the client).",
                true,
                "Your camera or microphone is busy. Close other apps that use it (video calls, camera apps), then try again.",
                "摄像头或麦克风正被占用。请关闭其他正在使用它们的应用（如视频通话、相机），然后重试。",
                "The client's report: which device and the browser error name.",
            ),
            DeviceUnsupported => (
                "DEVICE_UNSUPPORTED",
                "The camera cannot deliver a usable picture (e.g. only an infrared camera, or no mode at 640x480) (reported by the client).",
                true,
                "This camera can't be used for verification. Use your phone's front camera or another webcam.",
                "此摄像头无法用于验证。请使用手机前置摄像头或其他摄像头。",
                "The client's report: which device and the browser error name.",
            ),
            BrowserUnsupported => (
                "BROWSER_UNSUPPORTED",
                "The page is not in a secure context or the browser lacks WebRTC or camera access (reported by the client).",
                true,
                "This browser can't run the video check. Open the link in an up-to-date Chrome, Safari, Edge or Firefox.",
                "此浏览器无法进行视频验证。请用最新版的 Chrome、Safari、Edge 或 Firefox 打开链接。",
                "The client's report: what the browser lacks.",
            ),
            ReviewRejected => (
                "REVIEW_REJECTED",
                "An operator reviewed the session and rejected it.",
                false,
                "We could not confirm your identity from this verification. Please contact support.",
                "我们无法通过本次验证确认您的身份。请联系客服。",
                "The operator, their note and the original verdict (audit log).",
            ),
            DocumentNotShown => (
                "DOCUMENT_NOT_SHOWN",
                "No ID card was seen during the document step.",
                true,
                "Hold the front of your ID card up to the camera, with the photo side facing it.",
                "请将身份证人像面对准摄像头。",
                "Seconds without a card, the best capture's measurements if any.",
            ),
            DocumentTooFar => (
                "DOCUMENT_TOO_FAR",
                "The card is too small in the picture to read.",
                true,
                "Bring your ID card closer to the camera, so it fills most of the frame.",
                "请将证件靠近摄像头，使其占据画面的大部分。",
                "Card width in pixels and as a share of the frame, the thresholds.",
            ),
            DocumentTilted => (
                "DOCUMENT_TILTED",
                "The card is turned away from the camera (strong perspective).",
                true,
                "Hold your ID card flat, facing the camera straight on.",
                "请将证件正对摄像头放平，不要倾斜。",
                "Ratio of opposite card sides, the threshold.",
            ),
            DocumentGlare => (
                "DOCUMENT_GLARE",
                "A reflection blows out part of the card.",
                true,
                "There is a reflection on your ID card. Tilt it slightly or move away from the lamp or window.",
                "证件上有反光。请稍微倾斜证件，或避开灯光和窗户。",
                "Share of the card's pixels that are blown out, the threshold.",
            ),
            DocumentBlur => (
                "DOCUMENT_BLUR",
                "The card is blurred or its text could not be read.",
                true,
                "Your ID card is blurry. Hold it still for a moment and let the camera focus.",
                "证件画面模糊。请保持证件静止片刻，让摄像头对焦。",
                "Sharpness of the card, the threshold, which fields could not be read.",
            ),
            DocumentCutOff => (
                "DOCUMENT_CUT_OFF",
                "Part of the card is outside the picture.",
                true,
                "Part of your ID card is outside the frame. Move it so all four corners are visible.",
                "证件有部分在画面之外。请移动证件，使四个角都在画面内。",
                "Which side touches the frame's edge.",
            ),
            DocumentPortraitMismatch => (
                "DOCUMENT_PORTRAIT_MISMATCH",
                "The portrait on the card does not match the live face (or no portrait was found on it).",
                false,
                "The photo on the ID card does not match your face. Use your own ID card.",
                "证件上的照片与您本人不一致。请使用您本人的证件。",
                "Similarity of the card portrait to the live face, the threshold.",
            ),
            IdNumberInvalid => (
                "ID_NUMBER_INVALID",
                "The number read from the card fails its check digit (GB 11643 MOD 11-2, ICAO 9303) or holds an impossible date.",
                true,
                "The ID number could not be confirmed. Use your original ID card and hold it steady so the number is sharp.",
                "无法核验证件号码。请使用本人原件，并保持证件稳定使号码清晰。",
                "Which check failed (check digit, length, date); never the number itself in logs.",
            ),
            IdInfoMismatch => (
                "ID_INFO_MISMATCH",
                "The name, number or birth date on the card differ from the identity the relying party expects.",
                false,
                "The information on this ID card does not match your account. Use the ID card registered with your account.",
                "证件信息与您的账户信息不一致。请使用账户登记的本人证件。",
                "Which fields matched, differed or could not be read (no values).",
            ),
            ScreenLightTooBright => (
                "SCREEN_LIGHT_TOO_BRIGHT",
                "The screen's colours could not be seen on the face: the face is lit far brighter than a screen can add to (sunlight, a strong lamp).",
                true,
                "Move out of direct sunlight or away from bright lamps, then try again.",
                "请避开阳光直射或强光灯，然后重试。",
                "Per attempt: correlation with the colour sequence, reflection gain, face luma, inter-eye distance.",
            ),
            ScreenLightTooFar => (
                "SCREEN_LIGHT_TOO_FAR",
                "The screen's colours could not be seen on the face: the face is too far from the screen for its light to reach it.",
                true,
                "Hold your phone or sit closer to the screen, and turn up its brightness, then try again.",
                "请把手机拿近或坐得离屏幕近一些，并调高屏幕亮度，然后重试。",
                "Per attempt: correlation with the colour sequence, reflection gain, face luma, inter-eye distance.",
            ),
            ScreenLightNotSeen => (
                "SCREEN_LIGHT_NOT_SEEN",
                "The face reflected the screen's colours too weakly or too unlike the sequence sent to judge, or too few frames arrived during the sequence to measure it (a stalling camera); the session goes to review, never failed as a spoof.",
                true,
                "Turn up your screen brightness, face the screen and keep still while the colours change.",
                "请调高屏幕亮度，面向屏幕，并在颜色变化时保持不动。",
                "Per attempt: correlation with the colour sequence, reflection gain, best-fitting latency, windows and frames measured.",
            ),
            ScreenLightSkipped => (
                "SCREEN_LIGHT_SKIPPED",
                "The person chose to skip the screen-colour check (photosensitivity); a reviewer decides instead.",
                true,
                "You skipped the colour check. A member of staff will review your verification.",
                "您跳过了颜色检测，工作人员将人工审核您的认证。",
                "That the step was skipped at the person's request.",
            ),
        };
        ReasonInfo {
            code,
            meaning,
            retryable,
            hint_en,
            hint_zh,
            evidence,
        }
    }
}

/// Crockford's base-32 alphabet: digits and capitals without I, L, O and U, so a reference read
/// aloud or typed from a screenshot has no look-alikes.
const SUPPORT_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The short reference a person quotes to customer service about a session: 8 characters of
/// Crockford base 32 (40 bits of SHA-256 of the session id), shown as `XXXX-XXXX` on every result
/// screen and carried by the verdict, the signed verdict and the webhook. Derived from the id, so
/// every part of the server names it alike; the review console finds the session by it.
pub(crate) fn support_reference(session_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(session_id.as_bytes());
    let bits = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut out = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            out.push('-');
        }
        let symbol = (bits >> (35 - 5 * i)) & 31;
        out.push(SUPPORT_ALPHABET[symbol as usize] as char);
    }
    out
}

/// A support reference as a person or an agent typed it (any case, with or without the dash or
/// spaces, `O` for zero and `I`/`L` for one, as Crockford decoding allows), in the canonical
/// `XXXX-XXXX` form; `None` when it cannot be one.
pub(crate) fn parse_support_reference(typed: &str) -> Option<String> {
    let mut symbols = String::with_capacity(8);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !SUPPORT_ALPHABET.contains(&(c as u8)) || symbols.len() == 8 {
            return None;
        }
        symbols.push(c);
    }
    (symbols.len() == 8).then(|| format!("{}-{}", &symbols[..4], &symbols[4..]))
}

/// docs/REASONS.md, rendered from the table above.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Reason codes\n\nGenerated from `src/reasons.rs` (`UPDATE_REASONS=1 cargo test --lib reasons` rewrites this file; a test fails when they differ).\nEvery guidance, device, network and verdict reason the server emits is one of these stable codes. Scores are never shown to the person being verified; hints are.\n\n| code | meaning | retryable | hint (en) | hint (zh-CN) | evidence for the operator |\n|---|---|---|---|---|---|\n",
    );
    for c in ReasonCode::ALL {
        let i = c.info();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            i.code,
            i.meaning,
            if i.retryable { "yes" } else { "no" },
            i.hint_en,
            i.hint_zh,
            i.evidence
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn support_references_are_eight_unambiguous_symbols_and_read_back_however_typed() {
        let r = super::support_reference("ses_01JABCDEF");
        assert_eq!(r.len(), 9);
        assert_eq!(&r[4..5], "-");
        assert!(r
            .chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))));
        assert_eq!(r, super::support_reference("ses_01JABCDEF"), "stable");
        assert_ne!(r, super::support_reference("ses_01JABCDEG"));
        let typed = r
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(super::parse_support_reference(&typed), Some(r.clone()));
        assert_eq!(super::parse_support_reference(&r.replace('-', "")), Some(r));
        for bad in [
            "",
            "ABCD-EFG",
            "ABCD-EFGHJ",
            "ABCD-EFGU",
            "ÄBCD-EFGH",
            "ABCD/EFGH",
        ] {
            assert_eq!(super::parse_support_reference(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ReasonCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
            assert_eq!(ReasonCode::from_code(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            let i = c.info();
            assert!(!i.hint_en.is_empty() && !i.hint_zh.is_empty());
            assert!(
                i.hint_zh
                    .chars()
                    .any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch)),
                "{} zh hint is not Chinese",
                i.code
            );
        }
    }

    #[test]
    fn docs_reasons_md_matches_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/REASONS.md");
        let rendered = render_markdown();
        if std::env::var_os("UPDATE_REASONS").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/REASONS.md is stale: run UPDATE_REASONS=1 cargo test --lib reasons"
        );
    }
}
