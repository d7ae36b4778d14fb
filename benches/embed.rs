//! Criterion micro-benchmarks of the embedder's forward pass in f32 and int8: one short message,
//! and one length-sorted batch of 32 messages from the fixed benchmark set.
//! `cargo bench --bench embed` (needs the model: `bash scripts/fetch-model.sh`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use triage::embed::{BatchLimits, Embedder, Precision};

fn model(precision: Precision) -> Embedder {
    let dir = std::env::var("TRIAGE_MODEL_DIR").unwrap_or_else(|_| "models/all-MiniLM-L6-v2".into());
    let files =
        triage::model_files::resolve(Some(dir.as_ref())).expect("model files (run scripts/fetch-model.sh)");
    let limits = BatchLimits {
        precision,
        ..BatchLimits::default()
    };
    Embedder::load(&files, limits).expect("load model")
}

fn messages() -> Vec<String> {
    let path = std::env::var("MESSAGES").unwrap_or_else(|_| "../shared/data/bench/messages-2000.txt".into());
    std::fs::read_to_string(&path)
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_else(|_| {
            vec!["Hi, our export job failed again last night, can you take a look?".into(); 64]
        })
}

fn bench(c: &mut Criterion) {
    let threads = triage::config::init_compute_threads(0);
    let msgs = messages();
    for precision in [Precision::F32, Precision::Int8] {
        let e = model(precision);
        let one = e
            .tokenize("Taking a look, can you send the logs from this morning?")
            .unwrap();
        let mut g = c.benchmark_group(format!("embed_{precision}_{threads}threads"));
        g.sample_size(30);
        g.bench_function("single_message", |b| {
            b.iter(|| e.embed_tokens(&[one.as_slice()]).unwrap())
        });

        let mut ids: Vec<Vec<u32>> = msgs.iter().take(512).map(|m| e.tokenize(m).unwrap()).collect();
        ids.sort_by_key(Vec::len);
        let batch: Vec<&[u32]> = ids[200..232].iter().map(Vec::as_slice).collect();
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_function("sorted_batch_32", |b| b.iter(|| e.embed_tokens(&batch).unwrap()));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
