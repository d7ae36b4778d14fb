//! Reply status: does a team reply leave the conversation `in_progress` or make it `closed`?
//!
//! Two kinds of model ([`Scorer`]). The committed one is the lexical head of [`ngrams`]: TF-IDF
//! over hashed word and character n-grams read by a logistic regression; it reads only the text.
//! The other kind is a small head (logistic regression or a one-hidden-layer MLP) over a sentence
//! embedding and lexical cues: the shared embedding of [`crate::embed`] or, for a model trained with
//! `--finetune-layers`, the one through its own fine-tuned top encoder layers ([`finetune`]),
//! which the embedder runs as a [`crate::embed::Tail`] branching from the shared forward. Both
//! carry a temperature so their scores are probabilities. This is ML core: no HTTP, no SQL.
//! Callers embed the text when [`StatusModel::needs_embeddings`] says so (the server through its
//! queue, the CLI directly; [`StatusModel::needs_tail`] says which embedding) and hand texts and
//! vectors to [`StatusModel::predict`].
//!
//! On disk (`models/status/`): `model.safetensors` (the head's tensors, or the n-gram buckets and
//! weights, and the temperature), `encoder.safetensors` (the tuned layers, when fine-tuned),
//! `metadata.json` ([`Metadata`]: label set, embedder, data, seed, hyper-parameters, dev metrics,
//! what was tried), and the training report (`report.md`, `confusion.png`, `pr_curve.png`).

pub mod cues;
pub mod cv;
pub mod data;
pub mod finetune;
pub mod fit;
pub mod head;
pub mod keywords;
pub mod metrics;
pub mod ngrams;
pub mod report;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

pub use head::Head;
pub use metrics::Metrics;

/// The model's name in `"model": "status@<version>"`.
pub const MODEL_NAME: &str = "status";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METADATA_FILE: &str = "metadata.json";
/// The fine-tuned top encoder layers, when the model has them.
pub const ENCODER_FILE: &str = "encoder.safetensors";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    InProgress,
    Closed,
}

impl Label {
    /// In output-index order: the head's logit `i` belongs to `ALL[i]`.
    pub const ALL: [Label; 2] = [Label::InProgress, Label::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::InProgress => "in_progress",
            Label::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One classified reply: the label and a probability per label (summing to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: Label,
    pub scores: [f32; 2],
}

impl Prediction {
    pub fn score(&self, l: Label) -> f32 {
        self.scores[l.index()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("status model {dir} was trained on embedder weights {trained} but the embedder in use is {current}; retrain it (see README, \"Retraining the status model\")")]
    EmbedderMismatch {
        dir: PathBuf,
        trained: String,
        current: String,
    },
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

/// `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    /// First 12 hex digits of the weights file's sha256.
    pub version: String,
    pub labels: Vec<Label>,
    pub weights_sha256: String,
    pub embedder: EmbedderInfo,
    pub head: String,
    pub temperature: f32,
    pub seed: u64,
    pub hyper_parameters: serde_json::Value,
    pub data: DataInfo,
    pub dev_metrics: Metrics,
    pub dev_closed_average_precision: f64,
    pub keyword_baseline_dev_metrics: Metrics,
    /// Every variant trained, with its dev scores; the one kept is `chosen`.
    pub variants: Vec<VariantResult>,
    pub chosen: String,
    pub trained_at: String,
    pub command: String,
    pub notes: Vec<String>,
    /// Further labelled files scored with the final model (`triage train status --eval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations: Vec<Evaluation>,
    /// Present when the top encoder layers were fine-tuned with the classifier: the head then reads
    /// the embedding through those layers ([`crate::embed::Tail`]), not the shared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<FineTuneInfo>,
}

/// The final model's scores on one further labelled file (`metadata.json` `evaluations`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub file: DataFile,
    pub metrics: Metrics,
    pub closed_average_precision: f64,
    pub keyword_baseline_macro_f1: f64,
    /// Errors per reply kind (rows without a kind: `"(none)"`).
    pub by_kind: std::collections::BTreeMap<String, metrics::GroupStats>,
}

/// How the encoder's top layers were fine-tuned (`metadata.json` `finetuned`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FineTuneInfo {
    /// The first tuned layer; layers below it are the embedder's own.
    pub from_layer: usize,
    /// sha256 of `encoder.safetensors`.
    pub encoder_sha256: String,
    pub config: finetune::FineTuneConfig,
    pub best_epoch: usize,
    /// Dev macro-F1 of the jointly trained linear head after each epoch.
    pub dev_macro_f1_per_epoch: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedderInfo {
    pub name: String,
    pub revision: String,
    pub weights_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataFile {
    pub path: String,
    pub sha256: String,
    pub rows: usize,
    /// Rows used (a mixed-in file may be subsampled).
    pub used: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataInfo {
    pub train: Vec<DataFile>,
    /// Extra files mixed into training (empty when mixing did not help on dev).
    pub mixed_in: Vec<DataFile>,
    /// Extra files tried and left out.
    pub tried_not_used: Vec<DataFile>,
    pub dev: DataFile,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    pub name: String,
    pub head: String,
    pub mixed_in: Vec<String>,
    pub best_epoch: usize,
    pub dev_loss: f64,
    pub dev_macro_f1: f64,
    pub dev_accuracy: f64,
    pub dev_closed_precision: f64,
    pub dev_closed_recall: f64,
}

/// What scores a reply: a head over the sentence embedding, or the lexical n-gram head, which
/// reads only the text (`metadata.json` `head` is `ngrams`).
#[derive(Debug)]
pub enum Scorer {
    Head(Head),
    Ngrams(ngrams::NgramModel),
}

impl Scorer {
    /// The head over the embedding, if this is one.
    pub fn as_head(&self) -> Option<&Head> {
        match self {
            Scorer::Head(h) => Some(h),
            Scorer::Ngrams(_) => None,
        }
    }
}

/// A trained head ready to classify embeddings.
#[derive(Debug)]
pub struct StatusModel {
    pub head: Scorer,
    pub temperature: f32,
    pub metadata: Metadata,
    /// The fine-tuned layers' tensors (Hugging Face names) until [`StatusModel::install_tail`]
    /// hands them to the embedder; `None` for a head over the shared embedding.
    pub encoder: Option<std::collections::HashMap<String, candle_core::Tensor>>,
}

impl StatusModel {
    /// `"status@<version>"`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.metadata.name, self.metadata.version)
    }

    /// Whether the head reads the fine-tuned embedding ([`crate::embed::Embedder::set_tail`],
    /// [`crate::queue::EmbedHandle::embed_with_tail`]) rather than the shared one.
    pub fn needs_tail(&self) -> bool {
        self.metadata.finetuned.is_some()
    }

    /// Gives a fine-tuned model's layers to the embedder that will run it (once per embedder);
    /// nothing to do for a head over the shared embedding.
    pub fn install_tail(&mut self, embedder: &crate::embed::Embedder) -> Result<(), StatusError> {
        let Some(info) = &self.metadata.finetuned else {
            return Ok(());
        };
        let tensors = self
            .encoder
            .take()
            .ok_or_else(|| StatusError::Other("the fine-tuned layers were already installed".into()))?;
        embedder.set_tail(embedder.model().tail_from_tensors(&tensors, info.from_layer)?)?;
        Ok(())
    }

    /// The embeddings this model's head reads, for texts embedded in process (CLI, training):
    /// through the installed tail when the model is fine-tuned.
    pub fn embed(
        &self,
        embedder: &crate::embed::Embedder,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, StatusError> {
        if !self.needs_tail() {
            return Ok(embedder.embed(texts)?);
        }
        let tail = embedder
            .tail()
            .ok_or_else(|| StatusError::Other("the fine-tuned layers are not installed".into()))?;
        Ok(embedder.embed_tuned(texts, tail)?)
    }

    /// Whether [`StatusModel::predict`] reads the sentence embeddings (the n-gram head reads only
    /// the text and ignores them, so callers may pass an empty slice).
    pub fn needs_embeddings(&self) -> bool {
        matches!(self.head, Scorer::Head(_))
    }

    /// Classifies replies given their texts and sentence embeddings (same order).
    pub fn predict(&self, texts: &[&str], embeddings: &[Vec<f32>]) -> Result<Vec<Prediction>, StatusError> {
        match &self.head {
            Scorer::Head(h) => Ok(h.predict(texts, embeddings, self.temperature)?),
            Scorer::Ngrams(m) => Ok(m.predict(texts)),
        }
    }

    /// Loads `dir/model.safetensors` and `dir/metadata.json`, checking that the weights are the ones
    /// the metadata describes and that they were trained on the embedder in use.
    pub fn load(dir: &Path) -> Result<StatusModel, StatusError> {
        let meta_path = dir.join(METADATA_FILE);
        let err = |path: &Path, message: String| StatusError::Load {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&meta_path).map_err(|e| err(&meta_path, e.to_string()))?;
        let metadata: Metadata = serde_json::from_str(&text).map_err(|e| err(&meta_path, e.to_string()))?;
        let weights = dir.join(WEIGHTS_FILE);
        let sha = crate::model_files::sha256_file(&weights).map_err(|e| err(&weights, e.to_string()))?;
        if sha != metadata.weights_sha256 {
            return Err(err(
                &weights,
                format!(
                    "sha256 is {sha}, metadata.json expects {} (weights and metadata are from different trainings)",
                    metadata.weights_sha256
                ),
            ));
        }
        let current = crate::model_files::Manifest::builtin()
            .weights_sha256()
            .to_string();
        if metadata.embedder.weights_sha256 != current {
            return Err(StatusError::EmbedderMismatch {
                dir: dir.to_path_buf(),
                trained: metadata.embedder.weights_sha256.clone(),
                current,
            });
        }
        if metadata.labels != Label::ALL {
            return Err(err(
                &meta_path,
                format!("unexpected label set {:?}", metadata.labels),
            ));
        }
        let (head, temperature) = if metadata.head == ngrams::HEAD_NAME {
            let m = ngrams::NgramModel::load(&weights).map_err(|e| err(&weights, e))?;
            let t = m.temperature;
            (Scorer::Ngrams(m), t)
        } else {
            let (h, t) = Head::load(&weights).map_err(|e| err(&weights, e.to_string()))?;
            (Scorer::Head(h), t)
        };
        let encoder = match &metadata.finetuned {
            None => None,
            Some(info) => {
                let path = dir.join(ENCODER_FILE);
                let sha = crate::model_files::sha256_file(&path).map_err(|e| err(&path, e.to_string()))?;
                if sha != info.encoder_sha256 {
                    return Err(err(
                        &path,
                        format!("sha256 is {sha}, metadata.json expects {}", info.encoder_sha256),
                    ));
                }
                Some(
                    candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
                        .map_err(|e| err(&path, e.to_string()))?,
                )
            }
        };
        Ok(StatusModel {
            head,
            temperature,
            metadata,
            encoder,
        })
    }

    /// Writes weights and metadata (filling in `weights_sha256` and `version`).
    pub fn save(&mut self, dir: &Path) -> Result<(), StatusError> {
        std::fs::create_dir_all(dir).map_err(|e| StatusError::Load {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let weights = dir.join(WEIGHTS_FILE);
        match &mut self.head {
            Scorer::Head(h) => h.save(&weights, self.temperature)?,
            Scorer::Ngrams(m) => {
                m.temperature = self.temperature;
                m.save(&weights)?
            }
        }
        let sha = crate::model_files::sha256_file(&weights).map_err(|e| StatusError::Load {
            path: weights.clone(),
            message: e.to_string(),
        })?;
        if let (Some(info), Some(tensors)) = (self.metadata.finetuned.as_mut(), self.encoder.as_ref()) {
            let path = dir.join(ENCODER_FILE);
            let err = |e: String| StatusError::Load {
                path: path.clone(),
                message: e,
            };
            candle_core::safetensors::save(tensors, &path).map_err(|e| err(e.to_string()))?;
            info.encoder_sha256 = crate::model_files::sha256_file(&path).map_err(|e| err(e.to_string()))?;
        }
        self.metadata.version = sha[..12].to_string();
        self.metadata.weights_sha256 = sha;
        let meta_path = dir.join(METADATA_FILE);
        let json = serde_json::to_string_pretty(&self.metadata).expect("metadata serialises");
        std::fs::write(&meta_path, json + "\n").map_err(|e| StatusError::Load {
            path: meta_path,
            message: e.to_string(),
        })
    }
}

/// Where the status model appears once loaded (until then `/v1/classify` answers 503).
#[derive(Clone, Default)]
pub struct StatusSlot(Arc<OnceLock<Arc<StatusModel>>>);

impl StatusSlot {
    pub fn get(&self) -> Option<&Arc<StatusModel>> {
        self.0.get()
    }
    pub fn fill(&self, model: StatusModel) {
        let _ = self.0.set(Arc::new(model));
    }
}
