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
}
