//! Synthetic media for test peers and the load generator: moving I420 frames encoded with libvpx
//! (through `vpx-encode`) and a sine tone encoded with Opus. Encoding happens once; peers replay
//! the encoded frames, so a load test measures the server rather than the encoder.

use std::sync::Arc;

use super::TestkitError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
}

/// One encoded video frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Arc<[u8]>,
    pub keyframe: bool,
}

/// Pre-encoded video, replayed in a loop by the peers.
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: Vec<EncodedFrame>,
}

/// A test pattern: a luma gradient with a bright bar that moves every frame, so consecutive
/// frames differ (no accidental "frozen camera").
pub fn pattern_frame(width: usize, height: usize, index: usize) -> Vec<u8> {
    let mut img = vec![128u8; width * height * 3 / 2];
    let bar = (index * 8) % width;
    for y in 0..height {
        for x in 0..width {
            let mut v = ((x + y + index) % 200) as u8 + 28;
            if x >= bar && x < bar + 24 {
                v = 235;
            }
            img[y * width + x] = v;
        }
    }
    // Chroma: slowly varying tint.
    let chroma = width * height;
    for (i, c) in img[chroma..].iter_mut().enumerate() {
        *c = 100 + ((i / 64 + index) % 56) as u8;
    }
    img
}

/// Encodes `seconds` of the moving pattern. The first frame is a keyframe.
pub fn encode_pattern(
    codec: VideoCodec,
    width: u32,
    height: u32,
    fps: u32,
    bitrate_kbps: u32,
    frame_count: usize,
) -> Result<EncodedVideo, TestkitError> {
    encode_clip(
        codec,
        (width, height),
        fps,
        bitrate_kbps,
        frame_count,
        |i, img| *img = pattern_frame(width as usize, height as usize, i),
    )
}

/// Encodes decoded frames (tightly packed I420, all of one size) as one clip whose first frame
/// is a keyframe, so a peer may switch to it between any two frames.
pub fn encode_frames(
    codec: VideoCodec,
    fps: u32,
    bitrate_kbps: u32,
    frames: &[crate::media::decode::DecodedFrame],
) -> Result<EncodedVideo, TestkitError> {
    let size = frames
        .first()
        .map_or((0, 0), |f| (f.width as u32, f.height as u32));
    encode_clip(codec, size, fps, bitrate_kbps, frames.len(), |i, img| {
        let f = &frames[i];
        img.clear();
        img.extend_from_slice(&f.y);
        img.extend_from_slice(&f.u);
        img.extend_from_slice(&f.v);
    })
}

/// Encodes `count` pictures of `size` as one clip (the first a keyframe): `picture(i, img)`
/// writes picture `i` into `img` as tightly packed I420.
fn encode_clip(
    codec: VideoCodec,
    (width, height): (u32, u32),
    fps: u32,
    bitrate_kbps: u32,
    count: usize,
    mut picture: impl FnMut(usize, &mut Vec<u8>),
) -> Result<EncodedVideo, TestkitError> {
    let encode_error = |e| TestkitError::Encode(format!("{e:?}"));
    let mut enc = vpx_encode::Encoder::new(vpx_encode::Config {
        width,
        height,
        timebase: [1, fps as i32],
        bitrate: bitrate_kbps,
        codec: match codec {
            VideoCodec::Vp8 => vpx_encode::VideoCodecId::VP8,
            VideoCodec::Vp9 => vpx_encode::VideoCodecId::VP9,
        },
    })
    .map_err(encode_error)?;
    let mut frames = Vec::with_capacity(count);
    let mut img = Vec::new();
    for i in 0..count {
        picture(i, &mut img);
        for p in enc.encode(i as i64, &img).map_err(encode_error)? {
            frames.push(EncodedFrame {
                data: p.data.into(),
                keyframe: p.key,
            });
        }
    }
    let mut finish = enc.finish().map_err(encode_error)?;
    while let Some(p) = finish.next().map_err(encode_error)? {
        frames.push(EncodedFrame {
            data: p.data.into(),
            keyframe: p.key,
        });
    }
    Ok(EncodedVideo {
        codec,
        width,
        height,
        fps,
        frames,
    })
}

/// Opus packets of a 440 Hz tone, 20 ms each, 48 kHz mono.
pub fn encode_tone(packets: usize, amplitude: f32) -> Result<Vec<Arc<[u8]>>, TestkitError> {
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
        .map_err(|e| TestkitError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(packets);
    let mut pcm = [0f32; 960];
    let mut buf = [0u8; 1500];
    for p in 0..packets {
        for (i, s) in pcm.iter_mut().enumerate() {
            let t = (p * 960 + i) as f32 / 48_000.0;
            *s = amplitude * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
        }
        let n = enc
            .encode_float(&pcm, &mut buf)
            .map_err(|e| TestkitError::Encode(e.to_string()))?;
        out.push(Arc::from(&buf[..n]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_playable_vp8_clip_and_tone() {
        let clip = encode_pattern(VideoCodec::Vp8, 320, 240, 15, 300, 10).unwrap();
        assert_eq!(clip.frames.len(), 10);
        assert!(clip.frames[0].keyframe);
        assert!(clip.frames[1..].iter().all(|f| !f.keyframe));
        let tone = encode_tone(5, 0.3).unwrap();
        assert_eq!(tone.len(), 5);
        assert!(tone.iter().all(|p| p.len() > 3));
    }
}
