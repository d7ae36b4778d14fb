//! Training a scorer on the annotated corpus.
//!
//! Each channel is streamed exactly as the grouper does at run time (same state, same features).
//! At an annotated message the loss is the negative log of the softmax probability of its gold
//! parents among the candidate rows (several parents: their probabilities are summed); Adam
//! updates every `batch` messages. The state is then updated with either the gold link (teacher
//! forcing) or the model's own decision, so conversation features can be learnt on the noisy state
//! they will see at run time. Unannotated context lines always take the model's decision.
//! Single-threaded with a seeded RNG: the same inputs and seed give the same weights.

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::cues::{self, StartCues};
use super::data::{Corpus, Embeddings, Record};
use super::features::{self, CandidateSet, Prepared, FEATURE_NAMES, FEATURE_SIGNALS, NUM_FEATURES};
use super::grouper::{self, choose, score_rows, softmax, Grouper};
use super::metrics::Scores;
use super::model::{GroupConfig, GroupModel, Scorer, MODEL_FORMAT};
use super::state::{ChannelState, Commit, ConvRef};
use super::text::{analyse, nick_key};
use super::{data, decision, GroupError, Role};

/// Which decision updates the state after an annotated message during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Teacher {
    Gold,
    Predicted,
}

/// Which rows count as correct for an annotated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Its gold parents (or "new" when it starts a conversation).
    Parents,
    /// Any candidate of its gold conversation (annotated candidates, plus the parents).
    Conversation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub epochs: usize,
    /// 0 = logistic regression.
    pub hidden: usize,
    pub lr: f32,
    pub weight_decay: f32,
    /// Messages per Adam step.
    pub batch: usize,
    pub use_embeddings: bool,
    /// Feature or signal names left out (ablations).
    pub disabled: Vec<String>,
    pub teacher: Teacher,
    pub target: Target,
    /// Learn only from messages with exactly one gold parent.
    pub single_parent_only: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 13,
            epochs: 6,
            hidden: 0,
            lr: 0.01,
            weight_decay: 1e-5,
            batch: 32,
            use_embeddings: false,
            disabled: Vec::new(),
            teacher: Teacher::Predicted,
            target: Target::Parents,
            single_parent_only: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub train_examples: usize,
    pub dev: Option<Scores>,
}

/// Gradient / Adam moment buffers shaped like a scorer's parameters.
#[derive(Clone)]
struct Params {
    linear: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
}

impl Params {
    fn zeros(s: &Scorer) -> Params {
        Params {
            linear: vec![0.0; s.linear.len()],
            w1: vec![0.0; s.w1.len()],
            b1: vec![0.0; s.b1.len()],
            w2: vec![0.0; s.w2.len()],
        }
    }

    fn clear(&mut self) {
        for v in [&mut self.linear, &mut self.w1, &mut self.b1, &mut self.w2] {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
    }
}

struct Adam {
    m: Params,
    v: Params,
    t: i32,
}

impl Adam {
    /// One step of Adam with decoupled weight decay (not on the bias).
    fn step(&mut self, s: &mut Scorer, g: &Params, lr: f32, wd: f32, n: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        let groups: [(&mut Vec<f32>, &Vec<f32>, &mut Vec<f32>, &mut Vec<f32>, f32); 4] = [
            (
                &mut s.linear,
                &g.linear,
                &mut self.m.linear,
                &mut self.v.linear,
                wd,
            ),
            (&mut s.w1, &g.w1, &mut self.m.w1, &mut self.v.w1, wd),
            (&mut s.b1, &g.b1, &mut self.m.b1, &mut self.v.b1, 0.0),
            (&mut s.w2, &g.w2, &mut self.m.w2, &mut self.v.w2, wd),
        ];
        for (w, g, m, v, decay) in groups {
            for i in 0..w.len() {
                let gi = g[i] / n;
                m[i] = B1 * m[i] + (1.0 - B1) * gi;
                v[i] = B2 * v[i] + (1.0 - B2) * gi * gi;
                w[i] -= lr * ((m[i] / c1) / ((v[i] / c2).sqrt() + 1e-8) + decay * w[i]);
            }
        }
    }
}

/// Adds d(loss)/d(params) for one row with d(loss)/d(score) = `g`.
fn backprop(s: &Scorer, x: &[f32], g: f32, h: &mut [f32], grad: &mut Params) {
    s.score(x, h);
    let hd = s.hidden;
    for k in 0..hd {
        if h[k] > 0.0 {
            grad.w2[k] += g * h[k];
            grad.b1[k] += g * s.w2[k];
        }
    }
    for (j, &v) in x.iter().enumerate() {
        if v == 0.0 {
            continue;
        }
        let xs = v * s.scale[j];
        grad.linear[j] += g * xs;
        for k in 0..hd {
            if h[k] > 0.0 {
                grad.w1[j * hd + k] += g * s.w2[k] * xs;
            }
        }
    }
}

fn disabled(name: &str, opts: &TrainOptions) -> bool {
    let j = FEATURE_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("known feature");
    let signal = FEATURE_SIGNALS[j];
    let is_embedding = signal == features::Signal::Similarity;
    (is_embedding && !opts.use_embeddings) || opts.disabled.iter().any(|d| d == name || d == signal.as_str())
}

/// Streams one channel: features for every line, a loss and gradient at annotated lines, state
/// updates as configured. Without a learner it only collects feature ranges (`max_abs`).
struct Pass<'a> {
    corpus: &'a Corpus,
    emb: Option<&'a Embeddings>,
    config: &'a GroupConfig,
    opts: &'a TrainOptions,
    /// One learner per role (customer, agent) instead of one for every message.
    roles: bool,
    /// Start cues by cross-fitting fold ([`cues::fold`] of the channel): `folds[f]` was learned
    /// from the channels of the other fold, so no message's cue comes from its own text.
    folds: Option<&'a [StartCues; 2]>,
}

/// The scorer being trained and its optimiser; steps every `batch` examples.
struct Learner {
    scorer: Scorer,
    /// Running mean of the weights after each step, once averaging has started: the online
    /// clustering is chaotic, and single SGD iterates gave dev scores varying by a point of VI.
    average: Option<(Scorer, f32)>,
    adam: Adam,
    grad: Params,
    pending: usize,
    batch: usize,
    lr: f32,
    weight_decay: f32,
    loss: f64,
    examples: usize,
}

impl Learner {
    /// The weights to use: the average once averaging started.
    fn current(&self) -> &Scorer {
        self.average.as_ref().map_or(&self.scorer, |(a, _)| a)
    }

    fn example_done(&mut self) {
        self.examples += 1;
        self.pending += 1;
        if self.pending == self.batch {
            self.adam.step(
                &mut self.scorer,
                &self.grad,
                self.lr,
                self.weight_decay,
                self.batch as f32,
            );
            self.grad.clear();
            self.pending = 0;
            if let Some((avg, n)) = &mut self.average {
                *n += 1.0;
                let w = &self.scorer;
                for (a, x) in [
                    (&mut avg.linear, &w.linear),
                    (&mut avg.w1, &w.w1),
                    (&mut avg.b1, &w.b1),
                    (&mut avg.w2, &w.w2),
                ] {
                    a.iter_mut().zip(x.iter()).for_each(|(a, x)| *a += (x - *a) / *n);
                }
            }
        }
    }
}

impl Pass<'_> {
    fn channel(&self, lines: &[usize], mut learners: Option<&mut [Learner]>, max_abs: &mut [f32]) {
        let mut state = ChannelState::default();
        let mut set = CandidateSet::default();
        let (mut scores, mut hidden) = (Vec::new(), Vec::new());
        let bounds = self.config.bounds;
        let recs: Vec<&Record> = lines.iter().map(|&i| &self.corpus.records[i]).collect();
        let cues = match (self.folds, recs.first()) {
            (Some(f), Some(r)) => Some(&f[cues::fold(&r.channel)]),
            _ => None,
        };
        for (pos, &line) in lines.iter().enumerate() {
            let r = recs[pos];
            let ts: f64 = r.key.parse().unwrap_or(0.0);
            let embedding = if self.opts.use_embeddings {
                self.emb.map(|e| e.row(line))
            } else {
                None
            };
            let text = analyse(&r.text);
            let start_cue = match (cues, r.role) {
                (Some(c), Some(role)) => c.score(role, &text.words),
                _ => 0.0,
            };
            let emb_start_cue = match (cues, r.role, embedding) {
                (Some(c), Some(role), Some(e)) => c.embedding_score(role, e),
                _ => 0.0,
            };
            let prep = Prepared {
                key: &r.key,
                ts,
                user: &r.user,
                user_key: nick_key(&r.user),
                start_cue,
                emb_start_cue,
                text,
                system: r.system,
                action: r.action,
                role: r.role,
                embedding,
                reply_to: r.thread_ts.as_deref().filter(|t| *t != r.key),
            };
            let (conversation, parent_seq) = if let Some(root) = prep.reply_to {
                let (_, c, p) = grouper::thread_decision(&state, &r.channel, root);
                (c, p)
            } else {
                features::extract(&state, &prep, self.config.window(), &mut set);
                for row in 0..set.rows() {
                    for (m, &v) in max_abs.iter_mut().zip(set.row(row)) {
                        *m = m.max(v.abs());
                    }
                }
                let gold_rows = if r.eval {
                    self.positives(&state, &set, &recs, pos)
                } else {
                    Vec::new()
                };
                let slot = usize::from(self.roles && r.role == Some(Role::Agent));
                let learns = !self.roles || r.role.is_some();
                let row = match learners.as_deref_mut() {
                    Some(ls) => {
                        let l = &mut ls[slot];
                        score_rows(&l.scorer, &set, &mut scores, &mut hidden);
                        let probs = softmax(&scores);
                        let single = r.parents.len() == 1 || !self.opts.single_parent_only;
                        if !gold_rows.is_empty() && single && learns {
                            let p_gold: f32 = gold_rows.iter().map(|&g| probs[g]).sum();
                            l.loss -= (p_gold.max(1e-30) as f64).ln();
                            for (row, &p) in probs.iter().enumerate() {
                                let q = if gold_rows.contains(&row) {
                                    p / p_gold.max(1e-30)
                                } else {
                                    0.0
                                };
                                let g = p - q;
                                if g.abs() > 1e-7 {
                                    backprop(&l.scorer, set.row(row), g, &mut hidden, &mut l.grad);
                                }
                            }
                            l.example_done();
                        }
                        let teacher = r.eval && self.opts.teacher == Teacher::Gold;
                        match gold_rows.iter().max_by(|&&a, &&b| probs[a].total_cmp(&probs[b])) {
                            Some(&g) if teacher => g,
                            _ if teacher => 0,
                            _ => choose(&state, &set, &probs, self.config.rule).0,
                        }
                    }
                    // Collecting feature ranges: gold links where known, else new conversations.
                    None => gold_rows.first().copied().unwrap_or(0),
                };
                match row {
                    0 => (ConvRef::New(decision::conversation_id(&r.channel, &r.key)), None),
                    _ => {
                        let m = state.msg(set.index[row]);
                        (ConvRef::Known(m.conversation), Some(m.seq))
                    }
                }
            };
            state.commit(
                Commit {
                    channel: &r.channel,
                    key: &r.key,
                    ts,
                    user: &r.user,
                    user_key: prep.user_key,
                    text: prep.text,
                    system: r.system,
                    action: r.action,
                    role: r.role,
                    embedding,
                    conversation,
                    parent_seq,
                    thread: prep.reply_to,
                },
                &bounds,
            );
        }
    }

    /// Rows that are correct for annotated line `pos` (seq in the channel == position == idx).
    fn positives(
        &self,
        state: &ChannelState,
        set: &CandidateSet,
        recs: &[&Record],
        pos: usize,
    ) -> Vec<usize> {
        let r = recs[pos];
        if r.parents.iter().all(|&p| p == r.idx) {
            return vec![0];
        }
        (1..set.rows())
            .filter(|&row| {
                let seq = state.msg(set.index[row]).seq as usize;
                let c = recs[seq];
                r.parents.contains(&c.idx)
                    || (self.opts.target == Target::Conversation
                        && c.eval
                        && c.gold.is_some()
                        && c.gold == r.gold)
            })
            .collect()
    }
}

fn progress_bar(len: usize, label: String) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(label);
    pb
}

/// Checks that channel positions equal `idx` (gold parents are `idx` values).
fn check_corpus(c: &Corpus) -> Result<(), GroupError> {
    for lines in &c.channels {
        for (pos, &l) in lines.iter().enumerate() {
            if c.records[l].idx != pos {
                return Err(GroupError::Invalid(format!(
                    "channel {}: idx must be 0,1,2,... in file order",
                    c.records[l].channel
                )));
            }
        }
    }
    Ok(())
}

/// Wraps a scorer into a model for evaluation.
pub fn model_with(config: GroupConfig, scorer: &Scorer) -> GroupModel {
    let uses = scorer.uses_embeddings();
    let text = if uses {
        without_embeddings(scorer)
    } else {
        scorer.clone()
    };
    GroupModel {
        format: MODEL_FORMAT,
        config,
        text,
        embedding: uses.then(|| scorer.clone()),
        roles: None,
    }
}

/// A scorer's copy with the embedding features switched off (for the unused `text` slot).
fn without_embeddings(s: &Scorer) -> Scorer {
    let mut t = s.clone();
    for j in 0..NUM_FEATURES {
        if FEATURE_SIGNALS[j] == features::Signal::Similarity {
            t.scale[j] = 0.0;
        }
    }
    t
}

/// Evaluates a model on a corpus: predictions, scores and decisions per second.
pub fn evaluate(
    model: &GroupModel,
    corpus: &Corpus,
    emb: Option<&Embeddings>,
) -> Result<(Vec<data::Prediction>, Scores, f64), GroupError> {
    let mut g = Grouper::new(model.clone());
    let (pred, took) = data::run(&mut g, corpus, emb)?;
    let scores = corpus.score(&pred);
    Ok((
        pred,
        scores,
        corpus.records.len() as f64 / took.as_secs_f64().max(1e-9),
    ))
}

/// What a training run fits: the scorer for every message, or (on role-labelled data, on top of
/// a base model whose role-less scorers are kept) one scorer per role.
#[derive(Clone, Copy)]
pub enum Fit<'a> {
    All,
    Roles(&'a GroupModel),
}

/// The start cues of every channel of a role-labelled corpus (what a trained model carries).
fn learn_cues(corpus: &Corpus, emb: Option<&Embeddings>) -> StartCues {
    StartCues::learn(corpus, &(0..corpus.channels.len()).collect::<Vec<_>>(), emb)
}

/// The base model with role scorers (`[customer, agent]`) in its text or embedding slot.
pub fn model_with_roles(base: &GroupModel, scorers: &[Scorer], embedding: bool) -> GroupModel {
    let mut m = base.clone();
    let pair = |s: &Scorer| super::model::ScorerPair {
        text: if embedding {
            without_embeddings(s)
        } else {
            s.clone()
        },
        embedding: None,
    };
    let roles = m.roles.get_or_insert_with(|| super::model::RoleScorers {
        customer: pair(&scorers[0]),
        agent: pair(&scorers[1]),
        cues: None,
    });
    for (p, s) in [
        (&mut roles.customer, &scorers[0]),
        (&mut roles.agent, &scorers[1]),
    ] {
        if embedding {
            p.embedding = Some(s.clone());
        } else {
            p.text = s.clone();
        }
    }
    m
}

/// Trains one scorer (or one per role); evaluates on `dev` after each epoch when given. With
/// [`Fit::Roles`] also returns the start cues learned on the whole corpus (with `emb`'s embedding
/// cues when given), the ones the trained model carries.
pub fn train(
    corpus: &Corpus,
    emb: Option<&Embeddings>,
    dev: Option<(&Corpus, Option<&Embeddings>)>,
    config: &GroupConfig,
    opts: &TrainOptions,
    fit: Fit<'_>,
) -> Result<(Vec<Scorer>, Vec<EpochReport>, Option<StartCues>), GroupError> {
    check_corpus(corpus)?;
    if opts.use_embeddings && emb.is_none() {
        return Err(GroupError::Invalid(
            "training with embeddings needs an embeddings file".into(),
        ));
    }
    let roles = matches!(fit, Fit::Roles(_));
    if roles && !corpus.records.iter().any(|r| r.role.is_some()) {
        return Err(GroupError::Invalid(
            "training role scorers needs messages with a role".into(),
        ));
    }
    let folds = roles.then(|| {
        let of = |f: usize| -> Vec<usize> {
            (0..corpus.channels.len())
                .filter(|&c| {
                    let first = corpus.channels[c]
                        .first()
                        .map(|&l| corpus.records[l].channel.as_str());
                    first.is_some_and(|name| cues::fold(name) != f)
                })
                .collect()
        };
        [
            StartCues::learn(corpus, &of(0), emb),
            StartCues::learn(corpus, &of(1), emb),
        ]
    });
    let full_cues = roles.then(|| learn_cues(corpus, emb));
    let pass = Pass {
        corpus,
        emb,
        config,
        opts,
        roles,
        folds: folds.as_ref(),
    };
    // Max-abs scaling from one pass with gold links.
    let mut max_abs = vec![0f32; NUM_FEATURES];
    for lines in &corpus.channels {
        pass.channel(lines, None, &mut max_abs);
    }
    let scale: Vec<f32> = (0..NUM_FEATURES)
        .map(|j| {
            if disabled(FEATURE_NAMES[j], opts) || max_abs[j] == 0.0 {
                0.0
            } else {
                1.0 / max_abs[j]
            }
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut learners: Vec<Learner> = (0..if roles { 2 } else { 1 })
        .map(|_| {
            let scorer = Scorer::new(scale.clone(), opts.hidden, &mut rng);
            Learner {
                adam: Adam {
                    m: Params::zeros(&scorer),
                    v: Params::zeros(&scorer),
                    t: 0,
                },
                grad: Params::zeros(&scorer),
                scorer,
                average: None,
                pending: 0,
                batch: opts.batch.max(1),
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                loss: 0.0,
                examples: 0,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..corpus.channels.len()).collect();
    let mut reports = Vec::new();
    for epoch in 0..opts.epochs {
        order.shuffle(&mut rng);
        for l in &mut learners {
            // Average the weights over the second half of the epochs.
            if l.average.is_none() && epoch >= opts.epochs / 2 {
                l.average = Some((l.scorer.clone(), 1.0));
            }
            // Linear decay to a tenth of the rate over the epochs.
            l.lr = opts.lr * (1.0 - 0.9 * epoch as f32 / opts.epochs.max(1) as f32);
            (l.loss, l.examples) = (0.0, 0);
        }
        let pb = progress_bar(order.len(), format!("epoch {}/{}", epoch + 1, opts.epochs));
        for &c in &order {
            pass.channel(&corpus.channels[c], Some(&mut learners), &mut []);
            pb.inc(1);
        }
        pb.finish_and_clear();
        let current: Vec<Scorer> = learners.iter().map(|l| l.current().clone()).collect();
        let dev_scores = match dev {
            Some((d, e)) => {
                let model = match fit {
                    Fit::All => model_with(*config, &current[0]),
                    Fit::Roles(base) => {
                        let mut m = model_with_roles(base, &current, opts.use_embeddings);
                        if let Some(r) = &mut m.roles {
                            r.cues = full_cues.clone();
                        }
                        m
                    }
                };
                Some(evaluate(&model, d, if opts.use_embeddings { e } else { None })?.1)
            }
            None => None,
        };
        let examples: usize = learners.iter().map(|l| l.examples).sum();
        let loss: f64 = learners.iter().map(|l| l.loss).sum();
        let report = EpochReport {
            epoch: epoch + 1,
            loss: loss / examples.max(1) as f64,
            train_examples: examples,
            dev: dev_scores,
        };
        eprintln!("{}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    Ok((
        learners.iter().map(|l| l.current().clone()).collect(),
        reports,
        full_cues,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two channels of questions, each answered by messages addressing the asker.
    fn synthetic_corpus() -> Corpus {
        let dir = std::env::temp_dir().join(format!("group-train-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("synthetic.jsonl");
        let mut lines = Vec::new();
        let mut id = 0;
        for ch in ["c/a", "c/b"] {
            let mut question = (0usize, String::new());
            for i in 0..120usize {
                let (user, text, parent) = if i % 4 == 0 {
                    let user = format!("user{}", (i / 4) % 7);
                    question = (i, user.clone());
                    (user, format!("how do I fix widget{i}?"), i)
                } else {
                    (
                        format!("helper{}", i % 3),
                        format!("{}: try widget{} again", question.1, question.0),
                        question.0,
                    )
                };
                lines.push(
                    serde_json::json!({
                        "id": id, "channel": ch, "idx": i, "ts": 1000.0 + 30.0 * i as f64, "user": user,
                        "text": text, "kind": "msg", "system": false, "eval": i >= 20,
                        "gold": format!("{ch}:{}", parent), "parents": [parent],
                    })
                    .to_string(),
                );
                id += 1;
            }
        }
        std::fs::write(&path, lines.join("\n")).unwrap();
        Corpus::load(&path).unwrap()
    }

    #[test]
    fn training_is_deterministic_and_learns_addressing() {
        let corpus = synthetic_corpus();
        let config = GroupConfig::default();
        let opts = TrainOptions {
            epochs: 3,
            ..TrainOptions::default()
        };
        let (a, reports, _) = train(&corpus, None, Some((&corpus, None)), &config, &opts, Fit::All).unwrap();
        let (b, _, _) = train(&corpus, None, None, &config, &opts, Fit::All).unwrap();
        assert_eq!(
            a[0].linear, b[0].linear,
            "same data and seed give the same weights"
        );
        let dev = reports.last().unwrap().dev.unwrap();
        assert!(dev.one_to_one > 90.0, "{dev:?}");
        assert!(reports[0].loss > reports.last().unwrap().loss);
    }

    #[test]
    fn empty_stream_scores_without_panicking() {
        let dir = std::env::temp_dir().join(format!("group-empty-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.jsonl");
        std::fs::write(&path, "").unwrap();
        let corpus = Corpus::load(&path).unwrap();
        let model = model_with(
            GroupConfig::default(),
            &Scorer::new(vec![1.0; NUM_FEATURES], 0, &mut StdRng::seed_from_u64(0)),
        );
        let (pred, scores, _) = evaluate(&model, &corpus, None).unwrap();
        assert!(pred.is_empty());
        assert_eq!(scores.messages, 0);
        assert_eq!(scores.vi, 100.0);
    }
}
