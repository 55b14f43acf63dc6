//! ONNX Runtime and the face models: loaded once at start-up, shared by every call.
//!
//! ONNX Runtime is loaded dynamically (`ort` with `load-dynamic`) from the library that
//! `scripts/setup` extracts from the pinned `onnxruntime` wheel. Each model is held as a small pool
//! of sessions (one per core), each running with one intra-op thread, so concurrent calls share
//! the CPU fairly instead of fighting over one session's thread pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ort::session::Session;

/// Default location of the ONNX Runtime library fetched by `scripts/setup`.
pub const DEFAULT_ORT_LIBRARY: &str = ".deps/onnxruntime/libonnxruntime.so.1.32.0";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found at {0}: run `scripts/setup` (or `make setup`), or set ORT_DYLIB_PATH")]
    RuntimeMissing(String),
    #[error("cannot load ONNX Runtime from {path}: {reason}; run `scripts/setup` to fetch the pinned version")]
    Runtime { path: String, reason: String },
    #[error("model file {0} is missing: run `scripts/setup` to fetch and convert the face models")]
    Missing(String),
    #[error(
        "model {path} is corrupt or incompatible ({reason}): run `scripts/setup` to fetch it again"
    )]
    Corrupt { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process.
pub(crate) fn environment(
    library: &Path,
) -> Result<&'static ort::environment::Environment, ModelError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder
            .with_name("vericall")
            .build()
            .map_err(|e| e.to_string())
    });
    result.as_ref().map_err(|reason| ModelError::Runtime {
        path: library.display().to_string(),
        reason: reason.clone(),
    })
}

/// The library path: `ORT_DYLIB_PATH`, else the setup script's location.
pub(crate) fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ORT_LIBRARY))
}

/// Several sessions of one model; a run takes whichever is free.
pub struct ModelPool {
    name: String,
    sessions: Vec<Mutex<Session>>,
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModelPool({}, {} sessions)",
            self.name,
            self.sessions.len()
        )
    }
}

impl ModelPool {
    pub fn load(
        env: &ort::environment::Environment,
        path: &Path,
        instances: usize,
    ) -> Result<ModelPool, ModelError> {
        if !path.exists() {
            return Err(ModelError::Missing(path.display().to_string()));
        }
        let corrupt = |e: ort::Error| ModelError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut sessions = Vec::with_capacity(instances);
        for _ in 0..instances.max(1) {
            let session = Session::builder(env)
                .map_err(corrupt)?
                .with_intra_threads(1)
                .map_err(|e| corrupt(e.into()))?
                .with_inter_threads(1)
                .map_err(|e| corrupt(e.into()))?
                .commit_from_file(path)
                .map_err(corrupt)?;
            sessions.push(Mutex::new(session));
        }
        Ok(ModelPool {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sessions,
        })
    }

    /// A free session, or (all busy) the one picked by `hint` once it frees up.
    pub fn acquire(&self, hint: usize) -> MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        let i = hint % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every model the face analysis uses.
#[derive(Debug)]
pub struct FaceModels {
    pub detector: ModelPool,
    pub mesh: ModelPool,
    /// Eye contour model for blinks (optional: the mesh's own eye points are the fallback).
    pub iris: Option<ModelPool>,
    /// Face embedding model for matching against a reference photo (optional: without it,
    /// `embed::embed_face` reports the model missing).
    pub embedder: Option<ModelPool>,
}

impl FaceModels {
    /// Loads the models from `dir` (as written by `scripts/setup`), one session per core.
    pub fn load(dir: &Path) -> Result<Arc<FaceModels>, ModelError> {
        let env = runtime()?;
        let instances = pool_size();
        let iris_path = dir.join("iris_landmark.onnx");
        let embedder_path = dir.join("mobilefacenet.onnx");
        Ok(Arc::new(FaceModels {
            detector: ModelPool::load(env, &dir.join("blazeface_128.onnx"), instances)?,
            mesh: ModelPool::load(env, &dir.join("face_landmark.onnx"), instances)?,
            iris: if iris_path.exists() {
                Some(ModelPool::load(env, &iris_path, instances)?)
            } else {
                None
            },
            embedder: if embedder_path.exists() {
                Some(ModelPool::load(env, &embedder_path, instances)?)
            } else {
                None
            },
        }))
    }
}

/// ONNX Runtime from [`ort_library`], loaded once; a clear error when setup has not fetched it.
pub fn runtime() -> Result<&'static ort::environment::Environment, ModelError> {
    let library = ort_library();
    if !library.exists() {
        return Err(ModelError::RuntimeMissing(library.display().to_string()));
    }
    environment(&library)
}

/// Sessions per model pool: one per core.
pub(crate) fn pool_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Runs `session` on one f32 input and copies the named outputs out.
pub fn run(
    session: &mut Session,
    input: &str,
    shape: [i64; 4],
    data: &[f32],
    outputs: &[&str],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let tensor = ort::value::TensorRef::from_array_view((shape, data))
        .map_err(|e| ModelError::Run(e.to_string()))?;
    let result = session
        .run(ort::inputs![input => tensor])
        .map_err(|e| ModelError::Run(e.to_string()))?;
    outputs
        .iter()
        .map(|name| {
            let value = result
                .get(*name)
                .ok_or_else(|| ModelError::Run(format!("model has no output {name}")))?;
            let (_, values) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| ModelError::Run(e.to_string()))?;
            Ok(values.to_vec())
        })
        .collect()
}
