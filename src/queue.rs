//! The embedding runtime, shaped like text-embeddings-inference's: the model lives on its own OS
//! thread, fed by a channel; callers tokenize on the blocking pool, take permits from a bounded
//! budget (no permit: [`QueueError::Overloaded`], which the API answers with 429), and wait for
//! their vectors. The model thread drains everything queued, drops work whose caller left, sorts
//! the rest by length and runs it in token-budgeted batches (dynamic batching).
//!
//! No HTTP here: the API and the CLI both use [`EmbedHandle`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::embed::{plan_batches, EmbedError, Embedded, Embedder, Want};
use crate::telemetry::EmbedMetrics;

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Inputs (texts) that may wait or run at once; beyond that callers are refused.
    pub max_queued_inputs: usize,
    /// Inputs accepted in one call.
    pub max_client_batch: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queued_inputs: 2048,
            max_client_batch: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the embedding queue is full ({0} inputs waiting); retry shortly")]
    Overloaded(usize),
    #[error("{0} inputs in one request; at most {1} are accepted")]
    TooManyInputs(usize, usize),
    #[error("the embedding model is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// Time spent in each phase of one call (also sent as response headers by the API).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub tokenization: Duration,
    pub queue: Duration,
    pub inference: Duration,
}

/// A job's vectors, with the time it waited and the time its batches took.
type JobResult = Result<(Vec<Embedded>, Duration, Duration), EmbedError>;

struct Job {
    ids: Vec<Vec<u32>>,
    /// Which embeddings every input of the job needs.
    want: Want,
    enqueued: Instant,
    reply: oneshot::Sender<JobResult>,
    _permit: OwnedSemaphorePermit,
}

/// Where a handle appears once the model has loaded (the server answers before that, with 503).
#[derive(Clone, Default)]
pub struct EmbedSlot(Arc<std::sync::OnceLock<EmbedHandle>>);

impl EmbedSlot {
    pub fn get(&self) -> Option<&EmbedHandle> {
        self.0.get()
    }
    /// Fills the slot; a second fill is ignored (the first model stays).
    pub fn fill(&self, handle: EmbedHandle) {
        let _ = self.0.set(handle);
    }
}

/// Cheap to clone; the model thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct EmbedHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    embedder: Arc<Embedder>,
    permits: Arc<Semaphore>,
    config: QueueConfig,
    ready: AtomicBool,
    depth: Arc<AtomicI64>,
    metrics: EmbedMetrics,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl EmbedHandle {
    /// Starts the model thread. It embeds a warm-up text first; [`EmbedHandle::is_ready`] turns
    /// true only after that real inference succeeded.
    pub fn start(embedder: Embedder, config: QueueConfig, metrics: EmbedMetrics) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let embedder = Arc::new(embedder);
        let inner = Arc::new(Inner {
            tx: std::sync::Mutex::new(Some(tx)),
            embedder: embedder.clone(),
            permits: Arc::new(Semaphore::new(config.max_queued_inputs)),
            config,
            ready: AtomicBool::new(false),
            depth: Arc::new(AtomicI64::new(0)),
            metrics: metrics.clone(),
            thread: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("triage-model".into())
            .spawn(move || model_loop(embedder, rx, metrics, weak))
            .expect("spawning the model thread");
        *inner.thread.lock().expect("fresh mutex") = Some(thread);
        Self { inner }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.inner.embedder
    }

    pub fn config(&self) -> QueueConfig {
        self.inner.config
    }

    /// Embeds `texts` (input order kept). Refuses at once when the queue is full.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, Timings), QueueError> {
        let (out, timings) = self.submit(texts, Want::Shared).await?;
        Ok((take(out, |e| e.shared)?, timings))
    }

    /// Embeds `texts` through the installed fine-tuned tail ([`Embedder::set_tail`]) only: the
    /// embedding a fine-tuned status model reads, at the cost of one forward pass.
    pub async fn embed_tuned(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, Timings), QueueError> {
        let (out, timings) = self.submit(texts, Want::Tuned).await?;
        Ok((take(out, |e| e.tuned)?, timings))
    }

    /// Both the shared embedding and the one through the installed tail, from one forward pass
    /// (the tail branches off the shared layers): `(shared, tuned)` per text.
    pub async fn embed_with_tail(
        &self,
        texts: Vec<String>,
    ) -> Result<(Vec<(Vec<f32>, Vec<f32>)>, Timings), QueueError> {
        let (out, timings) = self.submit(texts, Want::Both).await?;
        let pairs = out
            .into_iter()
            .map(|e| match (e.shared, e.tuned) {
                (Some(shared), Some(tuned)) => Ok((shared, tuned)),
                _ => Err(EmbedError::Invalid("an asked-for embedding is missing".into())),
            })
            .collect::<Result<_, _>>()?;
        Ok((pairs, timings))
    }

    async fn submit(&self, texts: Vec<String>, want: Want) -> Result<(Vec<Embedded>, Timings), QueueError> {
        if want != Want::Shared && self.inner.embedder.tail().is_none() {
            return Err(EmbedError::Invalid("no fine-tuned tail is installed".into()).into());
        }
        let n = texts.len();
        // More than the queue could ever hold is the request's fault (422), not overload (429).
        let cap = self
            .inner
            .config
            .max_client_batch
            .min(self.inner.config.max_queued_inputs);
        if n > cap {
            return Err(QueueError::TooManyInputs(n, cap));
        }
        if n == 0 {
            return Ok((Vec::new(), Timings::default()));
        }
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_many_owned(n as u32)
            .map_err(|_| QueueError::Overloaded(self.inner.depth.load(Ordering::Relaxed).max(0) as usize))?;

        let t0 = Instant::now();
        let embedder = self.inner.embedder.clone();
        let ids = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|t| embedder.tokenize(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| QueueError::ShuttingDown)??;
        let tokenization = t0.elapsed();
        self.inner
            .metrics
            .tokenization
            .observe(tokenization.as_secs_f64());

        let (reply, rx) = oneshot::channel();
        let job = Job {
            ids,
            want,
            enqueued: Instant::now(),
            reply,
            _permit: permit,
        };
        {
            let tx = self.inner.tx.lock().expect("queue sender lock");
            let tx = tx.as_ref().ok_or(QueueError::ShuttingDown)?;
            self.inner.depth.fetch_add(n as i64, Ordering::Relaxed);
            self.inner
                .metrics
                .queue_depth
                .set(self.inner.depth.load(Ordering::Relaxed));
            tx.send(job).map_err(|_| QueueError::ShuttingDown)?;
        }
        let (vectors, queue, inference) = rx.await.map_err(|_| QueueError::ShuttingDown)??;
        Ok((
            vectors,
            Timings {
                tokenization,
                queue,
                inference,
            },
        ))
    }

    /// Stops accepting work, lets the model thread finish what is queued, and joins it.
    pub fn shutdown(&self) {
        self.inner.tx.lock().expect("queue sender lock").take();
        if let Some(t) = self.inner.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }
}

/// One embedding per input, as `pick` takes it from each result (present when asked for).
fn take(
    out: Vec<Embedded>,
    pick: impl Fn(Embedded) -> Option<Vec<f32>>,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    out.into_iter()
        .map(|e| pick(e).ok_or_else(|| EmbedError::Invalid("an asked-for embedding is missing".into())))
        .collect()
}

fn model_loop(
    embedder: Arc<Embedder>,
    rx: mpsc::Receiver<Job>,
    metrics: EmbedMetrics,
    inner: std::sync::Weak<Inner>,
) {
    match embedder.embed(&["warm-up: the model answers before the service says it is ready"]) {
        Ok(_) => {
            if let Some(inner) = inner.upgrade() {
                inner.ready.store(true, Ordering::Release);
            }
            tracing::info!("embedding model warm");
        }
        Err(e) => {
            tracing::error!(error = %e, "embedding warm-up failed; the service stays unready");
            return;
        }
    }
    let depth = inner.upgrade().map(|i| i.depth.clone());
    // Blocks for the first job, then takes everything else already waiting.
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let waiting: usize = jobs.iter().map(|j| j.ids.len()).sum();
        if let Some(d) = &depth {
            d.fetch_sub(waiting as i64, Ordering::Relaxed);
            metrics.queue_depth.set(d.load(Ordering::Relaxed));
        }
        // Callers that went away (timeout, closed connection) cost nothing more.
        jobs.retain(|j| !j.reply.is_closed());
        run_jobs(&embedder, jobs, &metrics);
    }
}

/// Pools every input of every job, plans length-sorted batches over the pool, runs them, and
/// answers each job.
fn run_jobs(embedder: &Embedder, jobs: Vec<Job>, metrics: &EmbedMetrics) {
    let started = Instant::now();
    let mut owner = Vec::new(); // (job, position in job) per pooled input
    let mut seqs: Vec<&[u32]> = Vec::new();
    let mut wants = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        metrics
            .queue
            .observe(started.duration_since(job.enqueued).as_secs_f64());
        for (k, ids) in job.ids.iter().enumerate() {
            owner.push((j, k));
            seqs.push(ids);
            wants.push(job.want);
        }
    }
    let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    let plan = plan_batches(&lengths, embedder.limits());
    let result = embedder.run_plan_with_tail(&seqs, embedder.tail(), &wants, &plan, |b| {
        metrics.inference.observe(b.elapsed.as_secs_f64());
        metrics.batch_size.observe(b.sequences as f64);
        metrics.batch_tokens.observe(b.padded_tokens as f64);
    });
    let inference = started.elapsed();
    match result {
        Ok(vectors) => {
            let mut per_job: Vec<Vec<Embedded>> =
                jobs.iter().map(|j| Vec::with_capacity(j.ids.len())).collect();
            // `owner` lists inputs job by job, in order, so pushing keeps each job's order.
            for ((j, _), v) in owner.iter().zip(vectors) {
                per_job[*j].push(v);
            }
            for (job, vecs) in jobs.into_iter().zip(per_job) {
                let queue = started.duration_since(job.enqueued);
                let _ = job.reply.send(Ok((vecs, queue, inference)));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "inference failed");
            for job in jobs {
                let _ = job
                    .reply
                    .send(Err(EmbedError::Invalid(format!("batch failed: {e}"))));
            }
        }
    }
}
