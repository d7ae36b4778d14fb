//! The embedding runtime, shaped like text-embeddings-inference's: the model lives on its own OS
//! thread, fed by a channel; callers tokenize on the blocking pool, take permits from a bounded
//! budget (no permit: [`QueueError::Overloaded`], which the API answers with 429), and wait for
//! their vectors. The model thread drains everything queued, drops work whose caller left, sorts
//! the rest by length and runs it in token-budgeted batches (dynamic batching).
//!
//! Two lanes ([`Lane`]), each with its own budget: **ingest** (messages being stored or grouped,
//! Slack events, single-text classification) and **bulk** (`/v1/embed`, batch `/v1/classify`).
//! Ingest work always runs first: bulk work runs one small batch at a time (all compute threads on
//! it), and the model thread looks for ingest work between batches, so a message waits for at most
//! one bulk batch however much bulk work is queued; a full bulk budget answers 429 to bulk callers
//! only.
//!
//! No HTTP here: the API and the CLI both use [`EmbedHandle`].

use std::collections::VecDeque;
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
    /// Ingest-lane inputs (texts) that may wait or run at once; beyond that callers are refused.
    pub max_queued_inputs: usize,
    /// The same for the bulk lane (its own budget: bulk work never uses up ingestion's).
    pub max_queued_bulk_inputs: usize,
    /// Inputs accepted in one call.
    pub max_client_batch: usize,
    /// Token budget of one bulk batch: bulk work runs one such batch between looks for ingest
    /// work, so this bounds how long a message can wait behind bulk work.
    pub bulk_batch_tokens: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queued_inputs: 2048,
            max_queued_bulk_inputs: 2048,
            max_client_batch: 256,
            bulk_batch_tokens: 2048,
        }
    }
}

/// Which work a call is: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// Messages being ingested or grouped, Slack events: runs first.
    #[default]
    Ingest,
    /// Bulk embedding and classification: runs when no ingest work waits.
    Bulk,
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
    lane: Lane,
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

/// Cheap to clone; the model thread stops when the last handle is dropped. Calls go in the
/// ingest lane unless made through [`EmbedHandle::bulk`].
#[derive(Clone)]
pub struct EmbedHandle {
    inner: Arc<Inner>,
    lane: Lane,
}

struct Inner {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    embedder: Arc<Embedder>,
    permits: Arc<Semaphore>,
    bulk_permits: Arc<Semaphore>,
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
            bulk_permits: Arc::new(Semaphore::new(config.max_queued_bulk_inputs)),
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
        Self {
            inner,
            lane: Lane::Ingest,
        }
    }

    /// This handle for bulk work (the bulk lane and its budget).
    pub fn bulk(&self) -> EmbedHandle {
        self.in_lane(Lane::Bulk)
    }

    pub fn in_lane(&self, lane: Lane) -> EmbedHandle {
        EmbedHandle {
            inner: self.inner.clone(),
            lane,
        }
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
        let config = &self.inner.config;
        let (budget, permits) = match self.lane {
            Lane::Ingest => (config.max_queued_inputs, &self.inner.permits),
            Lane::Bulk => (config.max_queued_bulk_inputs, &self.inner.bulk_permits),
        };
        // More than the queue could ever hold is the request's fault (422), not overload (429).
        let cap = config.max_client_batch.min(budget);
        if n > cap {
            return Err(QueueError::TooManyInputs(n, cap));
        }
        if n == 0 {
            return Ok((Vec::new(), Timings::default()));
        }
        let permit = permits
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
            lane: self.lane,
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
    let Some(bulk_batch_tokens) = inner.upgrade().map(|i| i.config.bulk_batch_tokens) else {
        return;
    };
    let mut bulk: VecDeque<Job> = VecDeque::new();
    let mut round: Option<BulkRound> = None;
    loop {
        // Block only when no bulk work is left; otherwise just take what has arrived.
        let mut arrived = Vec::new();
        if bulk.is_empty() && round.is_none() {
            match rx.recv() {
                Ok(job) => arrived.push(job),
                Err(_) => break,
            }
        }
        while let Ok(j) = rx.try_recv() {
            arrived.push(j);
        }
        let waiting: usize = arrived.iter().map(|j| j.ids.len()).sum();
        if let Some(d) = &depth {
            d.fetch_sub(waiting as i64, Ordering::Relaxed);
            metrics.queue_depth.set(d.load(Ordering::Relaxed));
        }
        let (ingest, more_bulk): (Vec<Job>, Vec<Job>) =
            arrived.into_iter().partition(|j| j.lane == Lane::Ingest);
        bulk.extend(more_bulk);
        // Callers that went away (timeout, closed connection) cost nothing more.
        let ingest: Vec<Job> = ingest.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if !ingest.is_empty() {
            run_jobs(&embedder, ingest, &metrics);
            continue;
        }
        if round.as_ref().is_some_and(BulkRound::abandoned) {
            round = None;
        }
        if round.is_none() {
            let jobs: Vec<Job> = bulk.drain(..).filter(|j| !j.reply.is_closed()).collect();
            if jobs.is_empty() {
                continue;
            }
            round = Some(BulkRound::new(&embedder, jobs, bulk_batch_tokens, &metrics));
        }
        if let Some(r) = round.as_mut() {
            if r.step(&embedder, &metrics) {
                if let Some(done) = round.take() {
                    done.answer();
                }
            }
        }
    }
}

/// Bulk jobs being embedded one batch at a time, so ingest work can run in between.
struct BulkRound {
    jobs: Vec<Job>,
    /// (job, position in job) per pooled input.
    owner: Vec<(usize, usize)>,
    plan: Vec<Vec<usize>>,
    next: usize,
    out: Vec<Embedded>,
    started: Instant,
    inference: Duration,
    failed: Option<EmbedError>,
}

impl BulkRound {
    fn new(embedder: &Embedder, jobs: Vec<Job>, batch_tokens: usize, metrics: &EmbedMetrics) -> Self {
        let started = Instant::now();
        let mut owner = Vec::new();
        let mut lengths = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            metrics
                .queue
                .observe(started.duration_since(job.enqueued).as_secs_f64());
            for (k, ids) in job.ids.iter().enumerate() {
                owner.push((j, k));
                lengths.push(ids.len());
            }
        }
        let mut limits = embedder.limits();
        limits.max_batch_tokens = limits.max_batch_tokens.min(batch_tokens.max(1));
        let plan = plan_batches(&lengths, limits);
        BulkRound {
            out: vec![Embedded::default(); owner.len()],
            jobs,
            owner,
            plan,
            next: 0,
            started,
            inference: Duration::ZERO,
            failed: None,
        }
    }

    /// Every caller of the round left.
    fn abandoned(&self) -> bool {
        self.jobs.iter().all(|j| j.reply.is_closed())
    }

    /// Runs the next batch (on every compute thread); true when the round is complete.
    fn step(&mut self, embedder: &Embedder, metrics: &EmbedMetrics) -> bool {
        let end = (self.next + 1).min(self.plan.len());
        let seqs: Vec<&[u32]> = self
            .owner
            .iter()
            .map(|&(j, k)| self.jobs[j].ids[k].as_slice())
            .collect();
        let wants: Vec<Want> = self.owner.iter().map(|&(j, _)| self.jobs[j].want).collect();
        let t = Instant::now();
        let result =
            embedder.run_plan_with_tail(&seqs, embedder.tail(), &wants, &self.plan[self.next..end], |b| {
                metrics.inference.observe(b.elapsed.as_secs_f64());
                metrics.batch_size.observe(b.sequences as f64);
                metrics.batch_tokens.observe(b.padded_tokens as f64);
            });
        self.inference += t.elapsed();
        match result {
            Ok(mut vectors) => {
                for &i in self.plan[self.next..end].iter().flatten() {
                    self.out[i] = std::mem::take(&mut vectors[i]);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "inference failed");
                self.failed = Some(e);
                return true;
            }
        }
        self.next = end;
        self.next >= self.plan.len()
    }

    fn answer(self) {
        let mut per_job: Vec<Vec<Embedded>> = self
            .jobs
            .iter()
            .map(|j| Vec::with_capacity(j.ids.len()))
            .collect();
        if self.failed.is_none() {
            // `owner` lists inputs job by job, in order, so pushing keeps each job's order.
            for ((j, _), v) in self.owner.iter().zip(self.out) {
                per_job[*j].push(v);
            }
        }
        for (job, vecs) in self.jobs.into_iter().zip(per_job) {
            let reply = match &self.failed {
                Some(e) => Err(EmbedError::Invalid(format!("batch failed: {e}"))),
                None => Ok((vecs, self.started.duration_since(job.enqueued), self.inference)),
            };
            let _ = job.reply.send(reply);
        }
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
    let plan = embedder.plan(&lengths);
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
