//! Evidence frames on disk: `<data_dir>/evidence/<session id>/<name>.jpg`, written by the call's
//! media thread (`session::EvidenceFolder`) (best frontal frame, one key frame per challenge) and deleted
//! by the retention policy.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::frame::{sample_rgb, I420};

pub fn session_dir(data_dir: &Path, session: &str) -> PathBuf {
    data_dir.join("evidence").join(session)
}

/// Writes `frame` as `<dir>/<name>.jpg` (quality 85); returns the file name.
pub fn write_jpeg(dir: &Path, name: &str, frame: &I420) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let mut rgb = Vec::with_capacity(frame.width * frame.height * 3);
    for y in 0..frame.height {
        for x in 0..frame.width {
            let p = sample_rgb(frame, x as f32 + 0.5, y as f32 + 0.5);
            rgb.extend(p.iter().map(|v| *v as u8));
        }
    }
    let file = format!("{name}.jpg");
    let out = std::fs::File::create(dir.join(&file))?;
    let mut encoder =
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(out), 85);
    encoder
        .encode(
            &rgb,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
    Ok(file)
}

/// Deletes every session's evidence folder last modified before `now - retention`; returns how
/// many folders were removed. Nothing else under `data_dir` is touched.
pub fn purge(data_dir: &Path, retention: Duration, now: SystemTime) -> std::io::Result<usize> {
    let root = data_dir.join("evidence");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(0);
    };
    let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let newest = newest_mtime(&path).unwrap_or(SystemTime::UNIX_EPOCH);
        if path.is_dir() && newest < cutoff {
            std::fs::remove_dir_all(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).ok()?.modified().ok()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, days: u64) {
        let t = SystemTime::now() - Duration::from_secs(days * 86_400);
        for e in std::fs::read_dir(path).unwrap().flatten() {
            std::fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn writes_a_jpeg_and_purges_only_expired_sessions() {
        let data = tempfile::tempdir().unwrap();
        let (w, h) = (64, 48);
        let (y, u, v) = (
            vec![120u8; w * h],
            vec![128u8; w * h / 4],
            vec![128u8; w * h / 4],
        );
        let frame = I420 {
            width: w,
            height: h,
            y: &y,
            u: &u,
            v: &v,
            y_stride: w,
            uv_stride: w / 2,
            full_range: false,
        };
        let old = session_dir(data.path(), "ses_old");
        let new = session_dir(data.path(), "ses_new");
        assert_eq!(write_jpeg(&old, "frontal", &frame).unwrap(), "frontal.jpg");
        write_jpeg(&new, "frontal", &frame).unwrap();
        let bytes = std::fs::read(new.join("frontal.jpg")).unwrap();
        assert_eq!(&bytes[..2], &[0xff, 0xd8], "a JPEG");
        std::fs::write(data.path().join("vericall.db"), b"db").unwrap();
        age(&old, 31);
        assert_eq!(
            purge(
                data.path(),
                Duration::from_secs(30 * 86_400),
                SystemTime::now()
            )
            .unwrap(),
            1
        );
        assert!(!old.exists());
        assert!(new.join("frontal.jpg").exists());
        assert!(
            data.path().join("vericall.db").exists(),
            "nothing else is touched"
        );
    }
}
