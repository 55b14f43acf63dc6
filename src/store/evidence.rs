//! Evidence frames (the best frontal frame, one key frame per challenge, the ID card) as JPEGs
//! in an object store, keyed `<session id>/<name>.jpg`: by default the local folder
//! `<data_dir>/evidence`; on a cluster, S3-compatible storage every node reads
//! (`evidence_url = "s3://bucket/prefix"`, credentials, region and endpoint from the standard
//! `AWS_*` environment). Written by the call's media thread (`session::EvidenceFolder`), shown by
//! the review console from any node, and deleted with the subject and by the retention policy.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::frame::{to_rgb8, I420};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("evidence_url must be s3://<bucket>[/<prefix>], not {0}")]
    Url(String),
    #[error("cannot create the evidence folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
}

/// How long a deletion waits for a session's uploads still in flight.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where evidence frames are kept (cheap to clone: one shared client).
#[derive(Debug, Clone)]
pub struct EvidenceStore {
    objects: Arc<dyn ObjectStore>,
    /// Uploads in flight per session, so that a deletion never races a late upload.
    pending: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Keys live under this prefix (S3: the path of `evidence_url`; local: none).
    prefix: String,
    /// `s3://bucket/prefix` or the local folder, for logs.
    location: String,
}

impl EvidenceStore {
    /// S3-compatible storage at `url`, else the folder `<data_dir>/evidence`.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<EvidenceStore, EvidenceError> {
        match url {
            Some(url) => {
                let rest = url
                    .strip_prefix("s3://")
                    .ok_or_else(|| EvidenceError::Url(url.to_string()))?;
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(EvidenceError::Url(url.to_string()));
                }
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                Ok(EvidenceStore {
                    objects: Arc::new(s3),
                    pending: Arc::default(),
                    prefix: prefix.trim_matches('/').to_string(),
                    location: url.to_string(),
                })
            }
            None => {
                let root = data_dir.join("evidence");
                std::fs::create_dir_all(&root).map_err(|source| EvidenceError::Folder {
                    path: root.display().to_string(),
                    source,
                })?;
                // Empty session folders go with their last file.
                let local = object_store::local::LocalFileSystem::new_with_prefix(&root)?
                    .with_automatic_cleanup(true);
                Ok(EvidenceStore {
                    objects: Arc::new(local),
                    pending: Arc::default(),
                    prefix: String::new(),
                    location: root.display().to_string(),
                })
            }
        }
    }

    /// Where the frames go, for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn session_prefix(&self, session: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(session)
        } else {
            ObjectPath::from(format!("{}/{session}", self.prefix))
        }
    }

    fn key(&self, session: &str, file: &str) -> ObjectPath {
        self.session_prefix(session).child(file)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `jpeg` as `file` of `session` in the background (the media thread calls this): the
    /// upload is counted as in flight from now until it is done, which deletions wait for.
    pub(crate) fn put_in_background(
        &self,
        runtime: &tokio::runtime::Handle,
        session: &str,
        file: String,
        jpeg: Vec<u8>,
    ) {
        *self.pending().entry(session.to_string()).or_default() += 1;
        let (store, session) = (self.clone(), session.to_string());
        runtime.spawn(async move {
            if let Err(e) = store.put(&session, &file, jpeg).await {
                tracing::warn!(session = %session, error = %e, "cannot keep an evidence frame");
            }
            let mut pending = store.pending();
            if let Some(n) = pending.get_mut(&session) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&session);
                }
            }
        });
    }

    /// Keeps `jpeg` as `file` of `session`.
    pub async fn put(&self, session: &str, file: &str, jpeg: Vec<u8>) -> Result<(), EvidenceError> {
        self.objects
            .put(&self.key(session, file), jpeg.into())
            .await?;
        Ok(())
    }

    /// Waits (up to [`SETTLE_TIMEOUT`]) until no upload of `session` is in flight on this node.
    pub(crate) async fn settle(&self, session: &str) {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while self.pending().contains_key(session) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `file` of `session`, if it is kept.
    pub async fn get(&self, session: &str, file: &str) -> Result<Option<Vec<u8>>, EvidenceError> {
        match self.objects.get(&self.key(session, file)).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every frame of `session` (after its uploads in flight on this node); returns how
    /// many there were.
    pub(crate) async fn delete_session(&self, session: &str) -> Result<usize, EvidenceError> {
        self.settle(session).await;
        let keys: Vec<ObjectPath> = self
            .objects
            .list(Some(&self.session_prefix(session)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for key in &keys {
            match self.objects.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(keys.len())
    }

    /// Deletes the frames of every session whose newest frame is older than `now - retention`;
    /// returns how many sessions were removed.
    pub async fn purge(
        &self,
        retention: Duration,
        now: SystemTime,
    ) -> Result<usize, EvidenceError> {
        let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let root = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let depth = root.as_ref().map_or(0, |r| r.parts().count());
        let objects: Vec<object_store::ObjectMeta> =
            self.objects.list(root.as_ref()).try_collect().await?;
        // The session of each key is the part right under the prefix.
        let mut newest: HashMap<String, SystemTime> = HashMap::new();
        for meta in &objects {
            // Only what this module writes, `<session id>/<name>.jpg`: a bucket shared with
            // anything else keeps the rest.
            let parts: Vec<_> = meta.location.parts().skip(depth).collect();
            let [session, file] = parts.as_slice() else {
                continue;
            };
            if !session.as_ref().starts_with("ses_") || !file.as_ref().ends_with(".jpg") {
                continue;
            }
            let modified = SystemTime::from(meta.last_modified);
            let entry = newest
                .entry(session.as_ref().to_string())
                .or_insert(modified);
            *entry = (*entry).max(modified);
        }
        let mut removed = 0;
        for (session, at) in newest {
            if at < cutoff {
                self.delete_session(&session).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `frame` as a JPEG (quality 85).
pub fn encode_jpeg(frame: &I420) -> std::io::Result<Vec<u8>> {
    let mut rgb = Vec::new();
    to_rgb8(frame, &mut rgb);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(
            &rgb,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_jpegs_decode_to_the_frame_they_were_made_from() {
        // A grey frame with a bright square: studio-range luma 16..235.
        let (w, h) = (64usize, 48usize);
        let mut picture = crate::frame::Frame::new(w, h);
        picture.y.fill(100);
        for row in 16..32 {
            picture.y[row * w + 16..row * w + 32].fill(200);
        }
        picture.u.fill(128);
        picture.v.fill(128);
        let frame = picture.view();
        let jpeg = encode_jpeg(&frame).unwrap();
        let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded.dimensions(), (w as u32, h as u32));
        let mut want = Vec::new();
        crate::frame::to_rgb8(&frame, &mut want);
        for (at, (got, want)) in decoded.as_raw().iter().zip(&want).enumerate() {
            assert!(
                (*got as i32 - *want as i32).abs() <= 12,
                "pixel {} channel {}: {got} vs {want}",
                at / 3,
                at % 3
            );
        }
    }

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
    }

    #[tokio::test]
    async fn keeps_reads_and_purges_only_expired_sessions() {
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
        let jpeg = encode_jpeg(&frame).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");
        let store = EvidenceStore::open(None, data.path()).unwrap();
        store
            .put("ses_old", "frontal.jpg", jpeg.clone())
            .await
            .unwrap();
        store
            .put("ses_new", "frontal.jpg", jpeg.clone())
            .await
            .unwrap();
        store
            .put("ses_new", "challenge-1.jpg", jpeg.clone())
            .await
            .unwrap();
        assert_eq!(
            store.get("ses_new", "frontal.jpg").await.unwrap(),
            Some(jpeg.clone())
        );
        assert_eq!(store.get("ses_new", "nope.jpg").await.unwrap(), None);
        std::fs::write(data.path().join("vericall.db"), b"db").unwrap();
        std::fs::create_dir_all(data.path().join("evidence/other")).unwrap();
        std::fs::write(data.path().join("evidence/other/notes.txt"), b"x").unwrap();
        age(&data.path().join("evidence/other"), 31);
        let old = data.path().join("evidence/ses_old");
        assert!(old.join("frontal.jpg").exists(), "a plain file per frame");
        age(&old, 31);
        let removed = store
            .purge(Duration::from_secs(30 * 86_400), SystemTime::now())
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert!(!old.exists(), "the session's folder goes with its frames");
        assert!(data.path().join("evidence/ses_new/frontal.jpg").exists());
        assert!(
            data.path().join("vericall.db").exists(),
            "nothing else is touched"
        );
        assert!(
            data.path().join("evidence/other/notes.txt").exists(),
            "nor what another program keeps next to the frames"
        );
        assert_eq!(store.delete_session("ses_new").await.unwrap(), 2);
        assert_eq!(store.get("ses_new", "frontal.jpg").await.unwrap(), None);
        assert_eq!(store.delete_session("ses_new").await.unwrap(), 0);
    }

    #[test]
    fn only_s3_urls_name_shared_storage() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["http://bucket", "s3://", "gs://bucket/x"] {
            assert!(
                matches!(
                    EvidenceStore::open(Some(bad), dir.path()),
                    Err(EvidenceError::Url(_))
                ),
                "{bad}"
            );
        }
    }
}
