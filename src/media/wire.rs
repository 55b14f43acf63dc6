//! Classifying datagrams on the shared media port (RFC 7983) and reading the clear RTP header.
//!
//! SRTP encrypts only the payload, so the 12-byte RTP header (sequence number, timestamp,
//! SSRC) can be read before str0m decrypts the packet. The network monitor uses this to
//! see every original packet with its exact arrival time, without str0m's RTP mode.

/// What a datagram on the media port is, by its first byte (RFC 7983 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Unknown,
}

pub fn classify(datagram: &[u8]) -> DatagramKind {
    let Some(&first) = datagram.first() else {
        return DatagramKind::Unknown;
    };
    match first {
        0..=3 => DatagramKind::Stun,
        20..=63 => DatagramKind::Dtls,
        128..=191 => match datagram.get(1) {
            // Payload types 64..=95 with the marker bit folded in are RTCP packet types 192..=223.
            Some(b) if (64..=95).contains(&(b & 0x7f)) => DatagramKind::Rtcp,
            Some(_) => DatagramKind::Rtp,
            None => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

/// The fixed part of an RTP header (RFC 3550 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderView {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Length of the (encrypted) payload after header, CSRCs and extensions.
    pub payload_len: usize,
}

/// Parses the clear RTP header of an RTP/SRTP datagram; `None` when it is not a plausible RTP packet.
pub fn parse_rtp_header(d: &[u8]) -> Option<RtpHeaderView> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let csrc_count = (d[0] & 0x0f) as usize;
    let mut header_len = 12 + 4 * csrc_count;
    if d[0] & 0x10 != 0 {
        // Header extension: 16-bit profile, 16-bit length in 32-bit words.
        let ext = d.get(header_len..header_len + 4)?;
        header_len += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    if d.len() < header_len {
        return None;
    }
    Some(RtpHeaderView {
        payload_type: d[1] & 0x7f,
        marker: d[1] & 0x80 != 0,
        sequence: u16::from_be_bytes([d[2], d[3]]),
        timestamp: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload_len: d.len() - header_len,
    })
}

/// The local ICE username fragment of a STUN binding request (`USERNAME = local:remote`).
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let msg = str0m::ice::StunMessage::parse(datagram).ok()?;
    if !msg.is_binding_request() {
        return None;
    }
    let username = msg.username()?;
    username.split(':').next().filter(|u| !u.is_empty())
}

/// STUN header: type, length, magic cookie, transaction id (RFC 5389 section 6).
const STUN_HEADER: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const MESSAGE_INTEGRITY_LEN: usize = 20;

/// The 96-bit transaction id of a STUN message.
pub fn stun_transaction_id(datagram: &[u8]) -> Option<[u8; 12]> {
    if datagram.len() < STUN_HEADER || datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    datagram[8..20].try_into().ok()
}

/// Whether a STUN message carries a MESSAGE-INTEGRITY that verifies with `password` (short-term
/// credentials, RFC 5389 section 15.4: HMAC-SHA1 keyed with the password over the message up to
/// the attribute, with the header length counting up to the end of the attribute). A message
/// without the attribute, truncated or malformed, does not verify.
pub fn stun_integrity_ok(datagram: &[u8], password: &str) -> bool {
    if datagram.len() < STUN_HEADER || datagram[4..8] != STUN_MAGIC_COOKIE {
        return false;
    }
    let declared = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let Some(body) = datagram.get(STUN_HEADER..STUN_HEADER + declared) else {
        return false;
    };
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value_at = at + 4;
        let Some(value) = body.get(value_at..value_at + len) else {
            return false;
        };
        if kind == ATTR_MESSAGE_INTEGRITY {
            if len != MESSAGE_INTEGRITY_LEN {
                return false;
            }
            let covered = STUN_HEADER + at;
            let mut header = [0u8; STUN_HEADER];
            header.copy_from_slice(&datagram[..STUN_HEADER]);
            let length = (at + 4 + MESSAGE_INTEGRITY_LEN) as u16;
            header[2..4].copy_from_slice(&length.to_be_bytes());
            let key = ring::hmac::Key::new(
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                password.as_bytes(),
            );
            let mut ctx = ring::hmac::Context::with_key(&key);
            ctx.update(&header);
            ctx.update(&datagram[STUN_HEADER..covered]);
            let tag = ctx.sign();
            // Compared without an early exit: the tag is derived from a secret.
            let diff = tag
                .as_ref()
                .iter()
                .zip(value)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            return diff == 0;
        }
        // Attributes are padded to 4 bytes.
        at = value_at + len.div_ceil(4) * 4;
    }
    false
}

/// A STUN binding request signed with `password` (for tests of the integrity check).
pub fn signed_binding_request(username: &str, password: &str, transaction: [u8; 12]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    // PRIORITY (RFC 8445 section 7.1.1): every ICE check carries one.
    attrs.extend_from_slice(&0x0024u16.to_be_bytes());
    attrs.extend_from_slice(&4u16.to_be_bytes());
    attrs.extend_from_slice(&2_130_706_431u32.to_be_bytes());
    let mut msg = Vec::with_capacity(STUN_HEADER + attrs.len() + 24);
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&((attrs.len() + 24) as u16).to_be_bytes());
    msg.extend_from_slice(&STUN_MAGIC_COOKIE);
    msg.extend_from_slice(&transaction);
    msg.extend_from_slice(&attrs);
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        password.as_bytes(),
    );
    let tag = ring::hmac::sign(&key, &msg);
    msg.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
    msg.extend_from_slice(&(MESSAGE_INTEGRITY_LEN as u16).to_be_bytes());
    msg.extend_from_slice(tag.as_ref());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, ext_words: u16) -> Vec<u8> {
        let mut d = vec![0x80 | if ext_words > 0 { 0x10 } else { 0 }, pt];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&ts.to_be_bytes());
        d.extend_from_slice(&ssrc.to_be_bytes());
        if ext_words > 0 {
            d.extend_from_slice(&[0xbe, 0xde]);
            d.extend_from_slice(&ext_words.to_be_bytes());
            d.extend(std::iter::repeat_n(0, 4 * ext_words as usize));
        }
        d.extend_from_slice(&[1, 2, 3, 4, 5]);
        d
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[0, 1]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254]), DatagramKind::Dtls);
        assert_eq!(classify(&rtp(96, 1, 2, 3, 0)), DatagramKind::Rtp);
        assert_eq!(classify(&[0x80, 200]), DatagramKind::Rtcp);
        assert_eq!(classify(&[0x80, 201 | 0x80]), DatagramKind::Rtcp);
        assert_eq!(classify(&[255]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
    }

    #[test]
    fn parses_header_with_extension() {
        let h = parse_rtp_header(&rtp(0x80 | 111, 65535, 48000, 0xdead_beef, 2)).unwrap();
        assert_eq!(h.payload_type, 111);
        assert!(h.marker);
        assert_eq!(h.sequence, 65535);
        assert_eq!(h.timestamp, 48000);
        assert_eq!(h.ssrc, 0xdead_beef);
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn rejects_truncated_headers() {
        let mut d = rtp(96, 1, 2, 3, 4);
        d.truncate(20);
        assert_eq!(parse_rtp_header(&d), None);
        assert_eq!(parse_rtp_header(&[0x80, 96, 0]), None);
        assert_eq!(parse_rtp_header(&[0x40; 20]), None);
    }
    #[test]
    fn stun_integrity_verifies_with_the_right_password_only() {
        let msg = signed_binding_request("abcd:efgh", "0123456789012345678901", [7; 12]);
        assert_eq!(stun_local_ufrag(&msg), Some("abcd"), "str0m parses it");
        assert!(stun_integrity_ok(&msg, "0123456789012345678901"));
        assert!(!stun_integrity_ok(&msg, "0123456789012345678902"));
        assert_eq!(stun_transaction_id(&msg), Some([7; 12]));
        let mut tampered = msg.clone();
        tampered[STUN_HEADER + 5] ^= 1;
        assert!(!stun_integrity_ok(&tampered, "0123456789012345678901"));
        // Without MESSAGE-INTEGRITY, truncated, or garbage: never verified.
        let unsigned_len = msg.len() - 24;
        let mut unsigned = msg[..unsigned_len].to_vec();
        unsigned[2..4].copy_from_slice(&((unsigned_len - STUN_HEADER) as u16).to_be_bytes());
        assert!(!stun_integrity_ok(&unsigned, "0123456789012345678901"));
        assert!(!stun_integrity_ok(
            &msg[..msg.len() - 3],
            "0123456789012345678901"
        ));
        assert!(!stun_integrity_ok(&[0, 1, 0, 0], "x"));
    }
}
