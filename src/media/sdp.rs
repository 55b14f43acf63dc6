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

/// Checks that an offer looks like SDP and offers at least one video codec we decode.
pub fn check_offer(offer: &str) -> Result<(), SdpError> {
    if !offer.trim_start().starts_with("v=0") {
        return Err(SdpError::Malformed("an SDP offer starts with v=0".into()));
    }
    let mut in_video = false;
    let mut saw_video = false;
    let mut video_codec_ok = false;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            saw_video |= in_video && !m.starts_with("video 0 ");
        } else if in_video {
            if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
                let encoding = rtpmap
                    .split_whitespace()
                    .nth(1)
                    .and_then(|e| e.split('/').next())
                    .unwrap_or("");
                video_codec_ok |= VIDEO_CODECS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(encoding));
            }
        }
    }
    if !saw_video {
        return Err(SdpError::Unsupported("the offer has no video".into()));
    }
    if !video_codec_ok {
        return Err(SdpError::Unsupported(
            "no supported video codec (VP8, VP9 or H.264)".into(),
        ));
    }
    Ok(())
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
pub fn with_ice_credentials(offer: &str, creds: &IceCreds) -> String {
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
    let mut frag = SdpFragment {
        credentials: ice_credentials(body),
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
pub fn restart_fragment(creds: &IceCreds, candidate: &Candidate) -> String {
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

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

    #[test]
    fn accepts_vp8_and_rejects_missing_video_codecs() {
        assert_eq!(check_offer(OFFER), Ok(()));
        let av1 = OFFER.replace("VP8/90000", "AV1/90000");
        assert!(matches!(check_offer(&av1), Err(SdpError::Unsupported(_))));
        let audio_only = OFFER.split("m=video").next().unwrap().to_string();
        assert!(matches!(
            check_offer(&audio_only),
            Err(SdpError::Unsupported(_))
        ));
        assert!(matches!(check_offer("hello"), Err(SdpError::Malformed(_))));
        let h264 = OFFER.replace("VP8/90000", "h264/90000");
        assert_eq!(check_offer(&h264), Ok(()));
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
    }
}
