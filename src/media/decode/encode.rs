//! Encoders for test streams, fixtures and the load generator: libvpx (VP8/VP9) and OpenH264.
//! Compiled only with the `testkit` feature (and in unit tests): the server never encodes.

use std::os::raw::{c_int, c_long, c_ulong};
use std::ptr;

use openh264::formats::YUVSource;
use vpx_sys as vpx;

use super::*;

/// Encoders take only frames whose planes match their size.
impl DecodedFrame {
    /// Checks that the plane lengths match the dimensions.
    fn check_layout(&self) -> Result<(), DecodeError> {
        let (cw, ch) = self.chroma_dims();
        if self.width == 0
            || self.height == 0
            || self.y.len() != self.width * self.height
            || self.u.len() != cw * ch
            || self.v.len() != cw * ch
        {
            return Err(DecodeError::InvalidInput(format!(
                "frame {}x{} has planes of {}/{}/{} bytes",
                self.width,
                self.height,
                self.y.len(),
                self.u.len(),
                self.v.len()
            )));
        }
        Ok(())
    }
}

/// VP8/VP9 encoder for test streams and fixtures (libvpx, realtime CBR, one thread, keyframes
/// only at the start or when forced).
pub struct VpxEncoder {
    ctx: VpxCtx,
    /// libvpx keeps a pointer to the configuration; boxed so it outlives and never moves.
    _cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    codec: VideoCodec,
    width: u32,
    height: u32,
}

// SAFETY: the encoder context and its configuration are owned heap state; libvpx permits moving
// them between threads as long as calls are not concurrent, which `&mut self` ensures.
unsafe impl Send for VpxEncoder {}

impl VpxEncoder {
    pub fn new(
        codec: VideoCodec,
        width: u32,
        height: u32,
        fps: u32,
        bitrate_kbps: u32,
    ) -> Result<Self, DecodeError> {
        if width == 0 || height == 0 || fps == 0 || bitrate_kbps == 0 {
            return Err(DecodeError::InvalidInput(format!(
                "encoder {width}x{height} @ {fps} fps, {bitrate_kbps} kbps"
            )));
        }
        // SAFETY: the iface getters return static tables.
        let iface = unsafe {
            match codec {
                VideoCodec::Vp8 => vpx::vpx_codec_vp8_cx(),
                VideoCodec::Vp9 => vpx::vpx_codec_vp9_cx(),
                VideoCodec::H264 => {
                    return Err(DecodeError::InvalidInput("use H264Encoder for h264".into()))
                }
            }
        };
        // Not zeroed(): the struct holds enums without a zero variant (vpx_bit_depth).
        let mut cfg = Box::<vpx::vpx_codec_enc_cfg_t>::new_uninit();
        // SAFETY: cfg points to writable memory of the right type; on success libvpx has
        // assigned the whole struct (`*cfg = <codec default cfg>`).
        let res = unsafe {
            ptr::write_bytes(cfg.as_mut_ptr(), 0, 1);
            vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0)
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(DecodeError::Init(format!(
                "vpx_codec_enc_config_default: {res:?}"
            )));
        }
        // SAFETY: initialized by vpx_codec_enc_config_default above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: fps as c_int,
        };
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = 1;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = bitrate_kbps;
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = 300;

        let mut ctx = zeroed_ctx();
        // SAFETY: ctx is zeroed and boxed, cfg is boxed and kept alive in Self.
        let res = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &*cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(DecodeError::Init(vpx_err(
                &mut ctx,
                "vpx_codec_enc_init_ver",
                res,
            )));
        }
        let mut ctx = VpxCtx { ctx };
        // SAFETY: initialized encoder; VP8E_SET_CPUUSED takes an int (variadic, promoted).
        let res = unsafe {
            vpx::vpx_codec_control_(
                &mut *ctx.ctx,
                vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                8 as c_int,
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(DecodeError::Init(vpx_err(
                &mut ctx.ctx,
                "VP8E_SET_CPUUSED",
                res,
            )));
        }
        Ok(Self {
            ctx,
            _cfg: cfg,
            codec,
            width,
            height,
        })
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Encodes one packed I420 frame of the encoder's size. Returns the frames libvpx produced
    /// (normally exactly one) as `(bytes, is_key)`.
    pub fn encode(
        &mut self,
        frame: &DecodedFrame,
        pts: i64,
        force_keyframe: bool,
    ) -> Result<Vec<(Vec<u8>, bool)>, DecodeError> {
        frame.check_layout()?;
        if (frame.width, frame.height) != (self.width as usize, self.height as usize) {
            return Err(DecodeError::InvalidInput(format!(
                "frame {}x{} for a {}x{} encoder",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let (cw, _) = frame.chroma_dims();
        // SAFETY: zeroed vpx_image_t is valid; we fill what vpx_img_wrap would for I420.
        let mut img: vpx::vpx_image_t = unsafe { std::mem::zeroed() };
        img.fmt = vpx::vpx_img_fmt::VPX_IMG_FMT_I420;
        img.w = self.width;
        img.h = self.height;
        img.d_w = self.width;
        img.d_h = self.height;
        img.bit_depth = 8;
        img.x_chroma_shift = 1;
        img.y_chroma_shift = 1;
        img.bps = 12;
        // The encoder only reads the planes (vpx_codec_encode takes a const image).
        img.planes[0] = frame.y.as_ptr().cast_mut();
        img.planes[1] = frame.u.as_ptr().cast_mut();
        img.planes[2] = frame.v.as_ptr().cast_mut();
        img.stride[0] = self.width as c_int;
        img.stride[1] = cw as c_int;
        img.stride[2] = cw as c_int;
        let flags: c_long = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: initialized encoder; img and its planes live through the call.
        let res = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx.ctx,
                &img,
                pts,
                1,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(DecodeError::Encode(vpx_err(
                &mut self.ctx.ctx,
                "vpx_codec_encode",
                res,
            )));
        }
        let mut out = Vec::with_capacity(1);
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: initialized encoder; packets are valid until the next encode call.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: pkt is non-null; `frame` is the active union member for FRAME_PKT.
            unsafe {
                if (*pkt).kind == vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let f = (*pkt).data.frame;
                    let bytes = if f.buf.is_null() || f.sz == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize).to_vec()
                    };
                    out.push((bytes, f.flags & vpx::VPX_FRAME_IS_KEY != 0));
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// H.264 encoder

/// H.264 (constrained baseline) encoder for test streams, via OpenH264.
pub struct H264Encoder {
    enc: openh264::encoder::Encoder,
    width: usize,
    height: usize,
}

/// Adapter so OpenH264 reads a `DecodedFrame` without the asserts of `YUVSlices`.
struct FrameSource<'a>(&'a DecodedFrame);

impl YUVSource for FrameSource<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width, self.0.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let (cw, _) = self.0.chroma_dims();
        (self.0.width, cw, cw)
    }
    fn y(&self) -> &[u8] {
        &self.0.y
    }
    fn u(&self) -> &[u8] {
        &self.0.u
    }
    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

impl H264Encoder {
    /// Width and height must be even (4:2:0 H.264).
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> Result<Self, DecodeError> {
        use openh264::encoder::{BitRate, EncoderConfig, FrameRate, RateControlMode, UsageType};
        if width == 0 || height == 0 || (width | height) & 1 != 0 || fps == 0 {
            return Err(DecodeError::InvalidInput(format!(
                "h264 encoder {width}x{height} @ {fps} fps (sizes must be even)"
            )));
        }
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .skip_frames(false)
            .num_threads(1);
        let enc = openh264::encoder::Encoder::with_api_config(
            openh264::OpenH264API::from_source(),
            config,
        )
        .map_err(|e| DecodeError::Init(format!("openh264 encoder: {e}")))?;
        Ok(Self {
            enc,
            width: width as usize,
            height: height as usize,
        })
    }

    /// Encodes one frame; returns the Annex-B access unit and whether it is an IDR.
    pub fn encode(
        &mut self,
        frame: &DecodedFrame,
        force_keyframe: bool,
    ) -> Result<(Vec<u8>, bool), DecodeError> {
        frame.check_layout()?;
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(DecodeError::InvalidInput(format!(
                "frame {}x{} for a {}x{} encoder",
                frame.width, frame.height, self.width, self.height
            )));
        }
        if force_keyframe {
            self.enc.force_intra_frame();
        }
        let bs = self
            .enc
            .encode(&FrameSource(frame))
            .map_err(|e| DecodeError::Encode(format!("openh264: {e}")))?;
        let key = bs.frame_type() == openh264::encoder::FrameType::IDR;
        Ok((bs.to_vec(), key))
    }
}
