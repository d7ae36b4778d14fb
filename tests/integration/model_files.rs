//! The model files: checksum guard and parity with sentence-transformers.

use triage::embed::{cosine, BatchLimits, Embedder, Precision};
use triage::model_files::{self, ModelError};

use crate::helpers::model_dir;

#[derive(serde::Deserialize)]
struct Reference {
    token_counts: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn fixtures() -> (Vec<String>, Reference) {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let inputs: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(format!("{base}parity-inputs.json")).unwrap()).unwrap();
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(format!("{base}parity-reference.json")).unwrap())
            .unwrap();
    assert_eq!(inputs.len(), reference.embeddings.len());
    assert!(inputs.len() >= 40);
    (inputs, reference)
}

fn embedder() -> Embedder {
    let files = model_files::resolve(Some(&model_dir())).expect("verified model");
    Embedder::load(&files, BatchLimits::default()).expect("load")
}

#[test]
fn tokenizer_matches_sentence_transformers_including_truncation_at_256() {
    let (inputs, reference) = fixtures();
    let e = embedder();
    for (i, text) in inputs.iter().enumerate() {
        assert_eq!(
            e.tokenize(text).unwrap().len(),
            reference.token_counts[i],
            "input {i}: {text:?}"
        );
    }
    assert!(
        reference.token_counts.iter().any(|&n| n == 256),
        "fixture must exercise truncation"
    );
}

#[test]
fn embeddings_match_sentence_transformers_batched_and_single() {
    let (inputs, reference) = fixtures();
    let e = embedder();
    let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let batched = e.embed(&texts).unwrap();
    let mut worst = 1.0f32;
    for (i, (got, want)) in batched.iter().zip(&reference.embeddings).enumerate() {
        assert_eq!(got.len(), 384);
        let c = cosine(got, want);
        worst = worst.min(c);
        assert!(c >= 0.9999, "input {i} ({:?}): cosine {c}", inputs[i]);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "input {i}: norm {norm}");
    }
    // One at a time (no padding at all) gives the same answers.
    for (i, text) in inputs.iter().enumerate().step_by(5) {
        let single = e.embed(&[text.as_str()]).unwrap().remove(0);
        assert!(
            cosine(&single, &reference.embeddings[i]) >= 0.9999,
            "single input {i}"
        );
    }
    eprintln!("worst cosine vs sentence-transformers: {worst}");
}

/// int8 mode (per-channel SmoothQuant weights, per-token activations, the committed calibration
/// file) stays close to sentence-transformers on every input, batched and alone, and is not
/// simply the f32 model (its vectors differ).
#[test]
fn int8_embeddings_stay_within_cosine_0_99_of_sentence_transformers() {
    let (inputs, reference) = fixtures();
    let files = model_files::resolve(Some(&model_dir())).expect("verified model");
    let limits = BatchLimits {
        precision: Precision::Int8,
        ..BatchLimits::default()
    };
    let e = Embedder::load(&files, limits).expect("load int8 (models/int8-calibration.json)");
    assert!(
        e.model().layer_weight_bytes() * 3 < embedder().model().layer_weight_bytes(),
        "int8 layers are not smaller than f32"
    );
    let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let batched = e.embed(&texts).unwrap();
    let (mut worst, mut sum) = (1.0f32, 0.0f32);
    for (i, (got, want)) in batched.iter().zip(&reference.embeddings).enumerate() {
        let c = cosine(got, want);
        worst = worst.min(c);
        sum += c;
        assert!(c >= 0.99, "input {i} ({:?}): cosine {c}", inputs[i]);
        let single = e.embed(&[texts[i]]).unwrap().remove(0);
        assert!(cosine(&single, got) > 0.99999, "input {i}: alone vs batched");
    }
    let mean = sum / inputs.len() as f32;
    eprintln!("int8: worst cosine vs sentence-transformers {worst}, mean {mean}");
    assert!(
        worst < 0.999999,
        "int8 output is identical to f32: not quantized?"
    );
}

#[test]
fn corrupted_weights_are_rejected_with_a_clear_error() {
    let src = model_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut weights = std::fs::read(src.join("model.safetensors")).unwrap();
    let mid = weights.len() / 2;
    weights[mid] ^= 0x01; // one flipped bit, same size
    std::fs::write(dir.path().join("model.safetensors"), &weights).unwrap();

    let err = model_files::resolve(Some(dir.path())).unwrap_err();
    assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("checksum mismatch"),
        "{msg}"
    );
    assert!(
        msg.contains("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        "{msg}"
    );
}

#[test]
fn missing_model_error_names_the_three_ways() {
    // A working directory with no models/ and an empty hub cache.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["model", "verify"])
        .current_dir(empty.path())
        .env_remove("TRIAGE_MODEL_DIR")
        .env("HF_HOME", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for way in [
        "--model-dir",
        "TRIAGE_MODEL_DIR",
        "scripts/fetch-model.sh",
        "triage model pull",
    ] {
        assert!(err.contains(way), "error does not mention {way}: {err}");
    }
}
