//! The few SDP facts the server needs beyond what str0m parses: which video codecs an offer
//! carries (to answer 406 before negotiating), ICE credentials, and trickle-ICE fragments
//! (`application/trickle-ice-sdpfrag`, RFC 8840).

use str0m::{Candidate, IceCreds};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SdpError {
    #[error("malformed SDP: {0}")]
    Malformed(String),
    #[error("unsupported media: {0}")]
    Unsupported(String),
    #[error("SDP rejected: {0}")]
    Rejected(String),
}

const VIDEO_CODECS: [&str; 3] = ["VP8", "VP9", "H264"];

/// ICE credential lengths (RFC 8839 section 5.4).
const UFRAG_LEN: std::ops::RangeInclusive<usize> = 4..=256;
const PWD_LEN: std::ops::RangeInclusive<usize> = 22..=256;
/// Longest SDP line considered (a candidate or fingerprint line is far shorter).
const MAX_LINE: usize = 4096;

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 section 5.4).
fn ice_chars(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// RFC 4566 `token` characters (attribute names, media types).
fn token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
}

/// Checks an ICE ufrag or password value.
fn check_ice(
    kind: &str,
    value: &str,
    len: std::ops::RangeInclusive<usize>,
) -> Result<(), SdpError> {
    if !len.contains(&value.len()) || !ice_chars(value) {
        return Err(SdpError::Malformed(format!(
            "{kind} must be {} to {} ICE characters (RFC 8839)",
            len.start(),
            len.end()
        )));
    }
    Ok(())
}

/// Checks `a=fingerprint:<hash-func> <XX:XX:...>` (RFC 8122): a SHA-family hash with the
/// number of bytes that hash produces.
fn check_fingerprint(value: &str) -> Result<(), SdpError> {
    let bad = |why: &str| SdpError::Malformed(format!("fingerprint: {why} (RFC 8122)"));
    let (func, hex) = value
        .split_once(' ')
        .ok_or_else(|| bad("expected a hash function and a value"))?;
    let bytes = match func.to_ascii_lowercase().as_str() {
        "sha-1" => 20,
        "sha-224" => 28,
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        _ => return Err(bad("unsupported hash function (use sha-256)")),
    };
    let pairs: Vec<&str> = hex.trim().split(':').collect();
    let hex_pair = |p: &&str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if pairs.len() != bytes || !pairs.iter().all(hex_pair) {
        return Err(bad(&format!("{func} needs {bytes} hex bytes")));
    }
    Ok(())
}

/// Checks `m=<media> <port>[/<count>] <proto> <fmt> ...` (RFC 4566 section 5.14).
fn check_media_line(m: &str) -> Result<(), SdpError> {
    let bad = || SdpError::Malformed(format!("bad media line: m={m:.60}"));
    let parts: Vec<&str> = m.split(' ').collect();
    if parts.len() < 4 || parts.iter().any(|p| p.is_empty()) || !token(parts[0]) {
        return Err(bad());
    }
    let port = parts[1].split('/').next().unwrap_or("");
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(bad());
    }
    if !parts[2].split('/').all(token) {
        return Err(bad());
    }
    Ok(())
}

/// One `m=` section while checking an offer.
#[derive(Default)]
struct Section {
    kind: String,
    port_zero: bool,
    bundle_only: bool,
    direction_receives_only: bool,
    codec_ok: bool,
}

impl Section {
    /// Whether media flows in it: a non-zero port, or port 0 marked `bundle-only` (RFC 8843
    /// section 6; the form RFC 9725's own example uses).
    fn active(&self) -> bool {
        !self.port_zero || self.bundle_only
    }
}

/// Checks that an offer is well-formed SDP a WebRTC client would send (lines, media lines, ICE
/// credentials, DTLS fingerprints) and sends video in a codec we decode. Returns the offer as it
/// is given to the WebRTC stack: `bundle-only` sections with port 0 get the placeholder port 9.
pub fn check_offer(offer: &str) -> Result<String, SdpError> {
    if !offer.trim_start().starts_with("v=0") {
        return Err(SdpError::Malformed("an SDP offer starts with v=0".into()));
    }
    let mut sections: Vec<Section> = Vec::new();
    let (mut ufrags, mut pwds, mut fingerprints) = (0, 0, 0);
    for line in offer.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(SdpError::Malformed("an SDP line is too long".into()));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(SdpError::Malformed("control characters in the SDP".into()));
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
            return Err(SdpError::Malformed(format!(
                "not an SDP line: {:.40}",
                line.escape_debug()
            )));
        }
        let value = &line[2..];
        match bytes[0] {
            b'm' => {
                check_media_line(value)?;
                let mut parts = value.split(' ');
                let kind = parts.next().unwrap_or("").to_string();
                let port_zero = parts.next().and_then(|p| p.split('/').next()) == Some("0");
                sections.push(Section {
                    kind,
                    port_zero,
                    ..Section::default()
                });
            }
            b'a' => {
                let (name, attr) = value.split_once(':').unwrap_or((value, ""));
                if !token(name) {
                    return Err(SdpError::Malformed(format!(
                        "bad attribute name: {:.40}",
                        name.escape_debug()
                    )));
                }
                match name {
                    "ice-ufrag" => {
                        check_ice("ice-ufrag", attr, UFRAG_LEN)?;
                        ufrags += 1;
                    }
                    "ice-pwd" => {
                        check_ice("ice-pwd", attr, PWD_LEN)?;
                        pwds += 1;
                    }
                    "fingerprint" => {
                        check_fingerprint(attr)?;
                        fingerprints += 1;
                    }
                    _ => {}
                }
                let Some(section) = sections.last_mut() else {
                    continue;
                };
                match name {
                    "bundle-only" => section.bundle_only = true,
                    "recvonly" | "inactive" => section.direction_receives_only = true,
                    "rtpmap" if section.kind == "video" => {
                        let encoding = attr
                            .split_whitespace()
                            .nth(1)
                            .and_then(|e| e.split('/').next())
                            .unwrap_or("");
                        section.codec_ok |= VIDEO_CODECS
                            .iter()
                            .any(|c| c.eq_ignore_ascii_case(encoding));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if ufrags == 0 || pwds == 0 {
        return Err(SdpError::Malformed(
            "the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)".into(),
        ));
    }
    if fingerprints == 0 {
        return Err(SdpError::Malformed(
            "the offer has no DTLS fingerprint (a=fingerprint)".into(),
        ));
    }
    let video: Vec<&Section> = sections
        .iter()
        .filter(|s| s.kind == "video" && s.active())
        .collect();
    if video.is_empty() {
        return Err(SdpError::Unsupported("the offer has no video".into()));
    }
    if video.iter().all(|s| s.direction_receives_only) {
        return Err(SdpError::Unsupported(
            "the offer's video is recvonly or inactive; send the camera (sendonly)".into(),
        ));
    }
    if !video
        .iter()
        .any(|s| s.codec_ok && !s.direction_receives_only)
    {
        return Err(SdpError::Unsupported(
            "no supported video codec (VP8, VP9 or H.264)".into(),
        ));
    }
    Ok(normalize_bundle_only(offer))
}

/// `m=<kind> 0 ...` sections carrying `a=bundle-only` get port 9, which is how the WebRTC stack
/// reads a bundled section (RFC 8843 section 7.5.3: the port of a bundled section is ignored).
fn normalize_bundle_only(offer: &str) -> String {
    let lines: Vec<&str> = offer
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = String::with_capacity(offer.len() + 8);
    for (i, line) in lines.iter().enumerate() {
        let bundle_only_zero = line.strip_prefix("m=").is_some_and(|m| {
            m.split(' ').nth(1) == Some("0")
                && lines[i + 1..]
                    .iter()
                    .take_while(|l| !l.starts_with("m="))
                    .any(|l| *l == "a=bundle-only")
        });
        if bundle_only_zero {
            let mut parts: Vec<&str> = line.split(' ').collect();
            parts[1] = "9";
            out.push_str(&parts.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// Whether an offer sends audio: an `m=audio` section with a non-zero port that is not recvonly
/// or inactive. (str0m announces tracks only once media can flow, after the connection is up.)
pub fn offers_audio(offer: &str) -> bool {
    let mut in_audio = false;
    let mut found = false;
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                return true;
            }
            in_audio = m.starts_with("audio ") && !m.starts_with("audio 0 ");
            found |= in_audio;
        } else if in_audio && (line == "a=recvonly" || line == "a=inactive") {
            in_audio = false;
            found = false;
        }
    }
    found && in_audio
}

/// Session-level or first media-level ICE credentials of an SDP.
pub fn ice_credentials(sdp: &str) -> Option<IceCreds> {
    let mut ufrag = None;
    let mut pass = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag.get_or_insert(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            pass.get_or_insert(v.to_string());
        }
    }
    Some(IceCreds {
        ufrag: ufrag?,
        pass: pass?,
    })
}

/// The offer with every ICE credential replaced and old candidates removed (for an ICE restart).
pub(crate) fn with_ice_credentials(offer: &str, creds: &IceCreds) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let line = line.trim_end();
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(&creds.ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(&creds.pass);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// A parsed trickle-ICE fragment.
#[derive(Debug, Default)]
pub struct SdpFragment {
    pub credentials: Option<IceCreds>,
    pub candidates: Vec<Candidate>,
    pub end_of_candidates: bool,
}

pub fn parse_fragment(body: &str) -> Result<SdpFragment, SdpError> {
    let credentials = ice_credentials(body);
    if let Some(c) = &credentials {
        check_ice("ice-ufrag", &c.ufrag, UFRAG_LEN)?;
        check_ice("ice-pwd", &c.pass, PWD_LEN)?;
    }
    let mut frag = SdpFragment {
        credentials,
        ..SdpFragment::default()
    };
    for line in body.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                let cand = Candidate::from_sdp_string(c)
                    .map_err(|e| SdpError::Malformed(format!("bad candidate: {e}")))?;
                frag.candidates.push(cand);
            } else if c == "end-of-candidates" {
                frag.end_of_candidates = true;
            }
        } else if !line.is_empty() && !line.starts_with("m=") && !line.contains('=') {
            return Err(SdpError::Malformed(format!("not an SDP line: {line:.40}")));
        }
    }
    Ok(frag)
}

/// The sdpfrag a server returns after an ICE restart.
pub(crate) fn restart_fragment(creds: &IceCreds, candidate: &Candidate) -> String {
    format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na={}\r\na=end-of-candidates\r\n",
        creds.ufrag,
        creds.pass,
        candidate.to_sdp_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

    #[test]
    fn accepts_vp8_and_rejects_missing_video_codecs() {
        assert!(check_offer(OFFER).is_ok());
        let av1 = OFFER.replace("VP8/90000", "AV1/90000");
        assert!(matches!(check_offer(&av1), Err(SdpError::Unsupported(_))));
        let audio_only = OFFER.split("m=video").next().unwrap().to_string();
        assert!(matches!(
            check_offer(&audio_only),
            Err(SdpError::Unsupported(_))
        ));
        assert!(matches!(check_offer("hello"), Err(SdpError::Malformed(_))));
        let h264 = OFFER.replace("VP8/90000", "h264/90000");
        assert!(check_offer(&h264).is_ok());
    }

    #[test]
    fn detects_whether_the_offer_sends_audio() {
        assert!(offers_audio(OFFER));
        let video_only = format!(
            "v=0\r\n{}",
            OFFER
                .split("m=audio")
                .nth(1)
                .map(|r| format!("m=x{r}"))
                .unwrap()
        );
        assert!(!offers_audio(&video_only));
        let recvonly = OFFER.replace(
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:111 opus/48000/2\r\na=recvonly",
        );
        assert!(!offers_audio(&recvonly));
    }

    #[test]
    fn rewrites_credentials_for_restart() {
        let creds = IceCreds {
            ufrag: "new1".into(),
            pass: "newpassword0123456789012".into(),
        };
        let out = with_ice_credentials(OFFER, &creds);
        assert_eq!(ice_credentials(&out), Some(creds));
        assert!(!out.contains("a=candidate"));
    }

    #[test]
    fn parses_trickle_fragments() {
        let frag = parse_fragment(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(frag.credentials.unwrap().ufrag, "EsAw");
        assert_eq!(frag.candidates.len(), 1);
        assert!(frag.end_of_candidates);
        assert!(parse_fragment("a=candidate:garbage").is_err());
        assert!(parse_fragment("\u{1}\u{2}binary junk").is_err());
        // An ICE restart's credentials follow RFC 8839 like the offer's.
        assert!(parse_fragment("a=ice-ufrag:EsAw\r\na=ice-pwd:short\r\n").is_err());
        let long = format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
            "u".repeat(300)
        );
        assert!(parse_fragment(&long).is_err());
    }

    #[test]
    fn rejects_malformed_credentials_fingerprints_and_lines() {
        let malformed = |from: &str, to: &str| {
            let bad = OFFER.replace(from, to);
            assert_ne!(bad, OFFER, "{from}");
            assert!(
                matches!(check_offer(&bad), Err(SdpError::Malformed(_))),
                "{to:.60}: {:?}",
                check_offer(&bad)
            );
        };
        let sha = "a=fingerprint:sha-256 00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F";
        malformed(sha, "a=fingerprint:md5 AB:CD");
        malformed(sha, "a=fingerprint:sha-256 AB:CD");
        malformed(sha, "a=fingerprint:sha-256 zz:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F");
        malformed(&format!("{sha}\r\n"), "");
        malformed(
            "a=ice-ufrag:abcd",
            &format!("a=ice-ufrag:{}", "u".repeat(10_000)),
        );
        malformed("a=ice-ufrag:abcd", "a=ice-ufrag:abc");
        malformed("a=ice-ufrag:abcd", "a=ice-ufrag:ab;cd");
        malformed("a=ice-pwd:0123456789012345678901", "a=ice-pwd:x");
        malformed("a=rtpmap:96 VP8/90000", "a=rtp\0map:96 VP8/90000");
        malformed("m=video 9 ", "m=video -1 ");
        malformed("m=video 9 ", "m=video 70000 ");
        malformed("m=video 9 UDP/TLS/RTP/SAVPF 96 97", "m=video 9");
        malformed("s=-\r\n", "s=-\r\ngarbage\r\n");
    }

    #[test]
    fn video_must_be_sent_and_bundle_only_port_zero_counts() {
        let recvonly = OFFER.replace(
            "a=rtpmap:96 VP8/90000",
            "a=rtpmap:96 VP8/90000\r\na=recvonly",
        );
        assert!(matches!(
            check_offer(&recvonly),
            Err(SdpError::Unsupported(_))
        ));
        let inactive = OFFER.replace(
            "a=rtpmap:96 VP8/90000",
            "a=inactive\r\na=rtpmap:96 VP8/90000",
        );
        assert!(matches!(
            check_offer(&inactive),
            Err(SdpError::Unsupported(_))
        ));
        let disabled = OFFER.replace("m=video 9 ", "m=video 0 ");
        assert!(matches!(
            check_offer(&disabled),
            Err(SdpError::Unsupported(_))
        ));
        let bundle_only = OFFER.replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
            "m=video 0 UDP/TLS/RTP/SAVPF 96 97\r\na=bundle-only",
        );
        let normalized = check_offer(&bundle_only).unwrap();
        assert!(normalized.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=bundle-only"));
        assert!(normalized.contains("m=audio 9 "));
    }
}
