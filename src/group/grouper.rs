//! The online grouper: one call per message, in time order per channel.

use super::decision::{conversation_id, Decision, Reason, ScoredCandidate};
use super::explain::describe;
use super::features::{self, CandidateSet, Prepared};
use super::model::{DecisionRule, GroupModel};
use super::state::{ChannelState, Commit, ConvRef, GroupStore, MemoryStore};
use super::text::{analyse, nick_key};
use super::{GroupError, Role};

/// One message to group.
#[derive(Debug, Clone, Copy)]
pub struct IncomingMessage<'a> {
    pub channel: &'a str,
    /// Slack ts string (`"1700000000.000100"`): the time in seconds and the idempotency key.
    pub ts: &'a str,
    pub user: &'a str,
    pub text: &'a str,
    /// Joins, quits and other non-conversation lines.
    pub system: bool,
    /// `/me` actions.
    pub action: bool,
    pub thread_ts: Option<&'a str>,
    pub role: Option<Role>,
    /// all-MiniLM-L6-v2 sentence embedding (384 floats, L2-normalised), if computed.
    pub embedding: Option<&'a [f32]>,
}

/// A message whose conversation is already settled (by an earlier decision or by a human), as a
/// store that keeps messages hands it back to [`Grouper::decide_with_history`].
#[derive(Debug, Clone, Copy)]
pub struct KnownMessage<'a> {
    pub msg: IncomingMessage<'a>,
    pub conversation_id: &'a str,
    /// Its conversation takes no new top-level messages.
    pub closed: bool,
}

/// Groups messages online. State lives in a [`GroupStore`], per channel.
pub struct Grouper<S: GroupStore = MemoryStore> {
    model: GroupModel,
    store: S,
    set: CandidateSet,
    scores: Vec<f32>,
    hidden: Vec<f32>,
}

impl Grouper<MemoryStore> {
    pub fn new(model: GroupModel) -> Self {
        Grouper::with_store(model, MemoryStore::default())
    }
}

impl<S: GroupStore> Grouper<S> {
    pub fn with_store(model: GroupModel, store: S) -> Self {
        let hidden = model.max_hidden();
        Grouper {
            model,
            store,
            set: CandidateSet::default(),
            scores: Vec::new(),
            hidden: vec![0.0; hidden],
        }
    }

    pub fn model(&self) -> &GroupModel {
        &self.model
    }

    /// Decides the conversation of `msg`. Idempotent on (channel, ts): a ts seen before returns
    /// the earlier decision. With `dry_run` nothing is recorded.
    pub fn process(&mut self, msg: &IncomingMessage<'_>, dry_run: bool) -> Result<Decision, GroupError> {
        let ts = parse_ts(msg.ts)?;
        if msg.embedding.is_some_and(|e| !features::valid_embedding(e)) {
            return Err(GroupError::Invalid(format!(
                "embedding must be {} finite floats",
                super::EMBEDDING_DIM
            )));
        }
        let mut state = self.store.take(msg.channel)?.unwrap_or_default();
        let result = self.decide_in(&mut state, msg, ts, dry_run);
        self.store.put(msg.channel, state)?;
        Ok(result)
    }

    /// Marks a conversation closed (or reopened). Closed conversations take no new top-level
    /// messages; replies in their Slack thread still join them. Returns whether it was known.
    pub fn set_closed(
        &mut self,
        channel: &str,
        conversation_id: &str,
        closed: bool,
    ) -> Result<bool, GroupError> {
        let Some(mut state) = self.store.take(channel)? else {
            return Ok(false);
        };
        let known = match state.conversations.values_mut().find(|c| c.id == conversation_id) {
            Some(c) => {
                c.closed = closed;
                true
            }
            None => false,
        };
        self.store.put(channel, state)?;
        Ok(known)
    }

    /// Decides `msg` against a channel history rebuilt from stored messages (oldest first, with
    /// their settled conversations) instead of this grouper's own memory, and records nothing.
    /// A store that lets humans merge, move and split messages uses this, so decisions follow the
    /// stored truth and every replica reading the same rows decides the same way. History entries
    /// with an unparsable ts are skipped.
    pub fn decide_with_history(
        &mut self,
        history: &[KnownMessage<'_>],
        msg: &IncomingMessage<'_>,
    ) -> Result<Decision, GroupError> {
        let ts = parse_ts(msg.ts)?;
        if msg.embedding.is_some_and(|e| !features::valid_embedding(e)) {
            return Err(GroupError::Invalid(format!(
                "embedding must be {} finite floats",
                super::EMBEDDING_DIM
            )));
        }
        let bounds = self.model.config.bounds;
        let mut state = ChannelState::default();
        for h in history {
            let Ok(hts) = parse_ts(h.msg.ts) else { continue };
            let known = state
                .conversations
                .iter()
                .find(|(_, c)| c.id == h.conversation_id)
                .map(|(&serial, c)| (serial, c.last_seq));
            let thread = h.msg.thread_ts.filter(|t| *t != h.msg.ts);
            // The link is not stored; the conversation's latest message stands in for it.
            let (conversation, parent_seq) = match known {
                Some((serial, last)) => (ConvRef::Known(serial), Some(last)),
                None => (ConvRef::New(h.conversation_id.to_string()), None),
            };
            state.commit(
                Commit {
                    channel: h.msg.channel,
                    key: h.msg.ts,
                    ts: hts,
                    user: h.msg.user,
                    user_key: nick_key(h.msg.user),
                    text: analyse(h.msg.text),
                    system: h.msg.system,
                    action: h.msg.action,
                    role: h.msg.role,
                    embedding: h.msg.embedding.filter(|e| features::valid_embedding(e)),
                    conversation,
                    parent_seq,
                    thread,
                },
                &bounds,
            );
            if let Some(c) = state
                .conversations
                .values_mut()
                .find(|c| c.id == h.conversation_id)
            {
                c.closed = h.closed;
            }
        }
        Ok(self.decide_in(&mut state, msg, ts, true))
    }

    fn decide_in(
        &mut self,
        state: &mut ChannelState,
        msg: &IncomingMessage<'_>,
        ts: f64,
        dry_run: bool,
    ) -> Decision {
        if let Some(d) = state.decided.get(msg.ts) {
            return d.clone();
        }
        let text = analyse(msg.text);
        let prep = Prepared {
            key: msg.ts,
            ts,
            user: msg.user,
            user_key: nick_key(msg.user),
            start_cue: self.model.start_cue(msg.role, &text.words),
            emb_start_cue: self.model.embedding_start_cue(msg.role, msg.embedding),
            text,
            system: msg.system,
            action: msg.action,
            role: msg.role,
            embedding: msg.embedding,
            reply_to: msg.thread_ts.filter(|t| *t != msg.ts),
        };
        let (decision, conversation, parent_seq) = match prep.reply_to {
            Some(root) => thread_decision(state, msg.channel, root),
            None => self.scored_decision(state, msg.channel, &prep),
        };
        if !dry_run {
            let bounds = self.model.config.bounds;
            state.commit(
                Commit {
                    channel: msg.channel,
                    key: prep.key,
                    ts,
                    user: prep.user,
                    user_key: prep.user_key,
                    text: prep.text,
                    system: prep.system,
                    action: prep.action,
                    role: prep.role,
                    embedding: prep.embedding,
                    conversation,
                    parent_seq,
                    thread: prep.reply_to,
                },
                &bounds,
            );
            state.remember(msg.ts, decision.clone(), &bounds);
        }
        decision
    }

    fn scored_decision(
        &mut self,
        state: &ChannelState,
        channel: &str,
        prep: &Prepared<'_>,
    ) -> (Decision, ConvRef, Option<u64>) {
        let scorer = self.model.scorer(prep.embedding.is_some(), prep.role);
        features::extract(state, prep, self.model.config.window(), &mut self.set);
        score_rows(scorer, &self.set, &mut self.scores, &mut self.hidden);
        let probs = softmax(&self.scores);
        let (row, confidence) = choose(state, &self.set, &probs, self.model.config.rule);
        let stored = |r: usize| (r > 0).then(|| state.msg(self.set.index[r]));
        let conv_of = |r: usize| match stored(r) {
            Some(m) => state.conversation_id(m.conversation).to_string(),
            None => conversation_id(channel, prep.key),
        };

        let mut order: Vec<usize> = (0..self.set.rows()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let candidates = order
            .iter()
            .take(self.model.config.top_k)
            .map(|&r| ScoredCandidate {
                ts: stored(r).map(|m| m.key.clone()),
                conversation_id: conv_of(r),
                score: self.scores[r],
                probability: probs[r],
            })
            .collect();

        let x = self.set.row(row);
        let mut contributions = scorer.contributions(x);
        contributions.retain(|(_, w)| w.abs() >= 0.05);
        contributions.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let reasons = contributions
            .into_iter()
            .map(|(sig, weight)| Reason {
                signal: sig.as_str().to_string(),
                detail: describe(sig, x, stored(row), prep, state),
                weight,
            })
            .collect();
        let linked = stored(row);
        let id = conv_of(row);
        let conversation = match linked {
            Some(m) => ConvRef::Known(m.conversation),
            None => ConvRef::New(id.clone()),
        };
        let decision = Decision {
            conversation_id: id,
            new: row == 0,
            confidence,
            linked_ts: linked.map(|m| m.key.clone()),
            reasons,
            candidates,
        };
        (decision, conversation, linked.map(|m| m.seq))
    }
}

fn parse_ts(ts: &str) -> Result<f64, GroupError> {
    ts.trim()
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| GroupError::Invalid(format!("ts {ts:?} is not a number")))
}

/// A reply in a Slack thread joins its root's conversation, whatever the scores say.
pub(crate) fn thread_decision(
    state: &ChannelState,
    channel: &str,
    root: &str,
) -> (Decision, ConvRef, Option<u64>) {
    let conversation = state
        .conversation_of_ts(root)
        .unwrap_or_else(|| ConvRef::New(conversation_id(channel, root)));
    let (id, new) = match &conversation {
        ConvRef::Known(serial) => (state.conversation_id(*serial).to_string(), false),
        ConvRef::New(id) => (id.clone(), !state.decided.contains_key(root)),
    };
    let root_msg = state.window.iter().rev().find(|m| m.key == root);
    let decision = Decision {
        conversation_id: id.clone(),
        new,
        confidence: 1.0,
        linked_ts: root_msg.map(|m| m.key.clone()),
        reasons: vec![Reason {
            signal: "thread".into(),
            detail: format!("reply in thread {root}"),
            weight: 1.0,
        }],
        candidates: vec![ScoredCandidate {
            ts: Some(root.to_string()),
            conversation_id: id,
            score: 0.0,
            probability: 1.0,
        }],
    };
    (decision, conversation, root_msg.map(|m| m.seq))
}

pub(crate) fn score_rows(
    scorer: &super::Scorer,
    set: &CandidateSet,
    out: &mut Vec<f32>,
    hidden: &mut Vec<f32>,
) {
    hidden.resize(scorer.hidden, 0.0);
    out.clear();
    out.extend((0..set.rows()).map(|r| scorer.score(set.row(r), &mut hidden[..scorer.hidden])));
}

pub(crate) fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let z: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= z);
    p
}

/// The chosen row and the probability of its conversation.
pub(crate) fn choose(
    state: &ChannelState,
    set: &CandidateSet,
    probs: &[f32],
    rule: DecisionRule,
) -> (usize, f32) {
    let conv = |r: usize| (r > 0).then(|| state.msg(set.index[r]).conversation);
    // Total probability per conversation (row 0, a new conversation, stands alone).
    let mut mass: Vec<(Option<u64>, f32, usize)> = Vec::new();
    for (r, &p) in probs.iter().enumerate() {
        let c = conv(r);
        match mass.iter_mut().find(|(k, _, _)| c.is_some() && *k == c) {
            Some(e) => {
                e.1 += p;
                if p > probs[e.2] {
                    e.2 = r;
                }
            }
            None => mass.push((c, p, r)),
        }
    }
    let best_link = (0..probs.len()).fold(0, |b, r| if probs[r] > probs[b] { r } else { b });
    let row = match rule {
        DecisionRule::Link => best_link,
        DecisionRule::Conversation => mass.iter().fold(&mass[0], |b, e| if e.1 > b.1 { e } else { b }).2,
    };
    let c = conv(row);
    let confidence = mass
        .iter()
        .find(|(k, _, r)| if c.is_some() { *k == c } else { *r == 0 })
        .map_or(0.0, |e| e.1);
    (row, confidence)
}

#[cfg(test)]
mod tests {
    use super::super::features::F;
    use super::*;
    use crate::group::features::NUM_FEATURES;
    use crate::group::model::{GroupConfig, Scorer, MODEL_FORMAT};
    use rand::SeedableRng;

    /// A hand-weighted linear model: following an address is strong evidence, and otherwise a
    /// message prefers to start a conversation.
    fn grouper() -> Grouper {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = Scorer::new(vec![1.0; NUM_FEATURES], 0, &mut rng);
        s.linear[F::ADDR_CAND_LATEST as usize] = 4.0;
        s.linear[F::NEW_BIAS as usize] = 1.0;
        s.linear[F::DIST_1 as usize] = 0.5;
        Grouper::new(GroupModel {
            format: MODEL_FORMAT,
            config: GroupConfig::default(),
            text: s,
            embedding: None,
            roles: None,
        })
    }

    fn msg<'a>(ts: &'a str, user: &'a str, text: &'a str) -> IncomingMessage<'a> {
        IncomingMessage {
            channel: "C1",
            ts,
            user,
            text,
            system: false,
            action: false,
            thread_ts: None,
            role: None,
            embedding: None,
        }
    }

    #[test]
    fn thread_replies_join_their_root() {
        let mut g = grouper();
        let root = g
            .process(&msg("100.000001", "alice", "my wifi is broken"), false)
            .unwrap();
        assert!(root.new);
        g.process(&msg("101.000001", "bob", "unrelated question"), false)
            .unwrap();
        let reply = IncomingMessage {
            thread_ts: Some("100.000001"),
            ..msg("102.000001", "carol", "no idea")
        };
        let d = g.process(&reply, false).unwrap();
        assert_eq!(d.conversation_id, root.conversation_id);
        assert!(!d.new);
        assert_eq!(d.reasons[0].signal, "thread");
        // A top-level message never joins a conversation that holds a thread, even when addressed.
        let d = g
            .process(&msg("103.000001", "dave", "carol: same here"), false)
            .unwrap();
        assert_ne!(d.conversation_id, root.conversation_id);
        // A reply whose root was never seen starts the root's conversation.
        let orphan = IncomingMessage {
            thread_ts: Some("50.000001"),
            ..msg("104.000001", "erin", "hi")
        };
        let d = g.process(&orphan, false).unwrap();
        assert_eq!(d.conversation_id, "C1:50.000001");
        assert!(d.new);
    }

    #[test]
    fn mention_links_to_the_authors_conversation() {
        let mut g = grouper();
        let a = g.process(&msg("0", "alice", "my wifi is broken"), false).unwrap();
        let b = g
            .process(&msg("10", "bob", "how do I install grub"), false)
            .unwrap();
        assert_ne!(a.conversation_id, b.conversation_id);
        let d = g
            .process(&msg("20", "carol", "alice: try reloading the driver"), false)
            .unwrap();
        assert_eq!(d.conversation_id, a.conversation_id);
        assert_eq!(d.linked_ts.as_deref(), Some("0"));
        assert_eq!(d.reasons[0].signal, "mention");
        assert!(d.reasons[0].detail.contains("alice"));
    }

    #[test]
    fn three_hours_later_is_a_new_conversation() {
        let mut g = grouper();
        let a = g.process(&msg("0", "alice", "my wifi is broken"), false).unwrap();
        let d = g
            .process(&msg("10800", "bob", "alice: did you fix it?"), false)
            .unwrap();
        assert!(d.new);
        assert_ne!(d.conversation_id, a.conversation_id);
    }

    #[test]
    fn idempotent_dry_run_and_closed() {
        let mut g = grouper();
        let a = g.process(&msg("0", "alice", "my wifi is broken"), false).unwrap();
        assert_eq!(
            g.process(&msg("0", "alice", "my wifi is broken"), false).unwrap(),
            a
        );
        // A dry run decides without recording.
        let probe = g.process(&msg("5", "bob", "alice: reboot"), true).unwrap();
        assert_eq!(probe.conversation_id, a.conversation_id);
        assert!(g.set_closed("C1", &a.conversation_id, true).unwrap());
        let d = g.process(&msg("5", "bob", "alice: reboot"), false).unwrap();
        assert!(d.new, "closed conversations take no new top-level messages");
        assert!(!g.set_closed("C9", "nope", true).unwrap());
    }

    #[test]
    fn history_decides_like_the_online_state_and_follows_human_moves() {
        let stream = [
            msg("0", "alice", "my wifi is broken"),
            msg("10", "bob", "how do I install grub"),
            msg("15", "dave", "bob: which distro?"),
        ];
        let probe = msg("20", "carol", "alice: try reloading the driver");
        let mut online = grouper();
        let ids: Vec<String> = stream
            .iter()
            .map(|m| online.process(m, false).unwrap().conversation_id)
            .collect();
        let expected = online.process(&probe, true).unwrap();
        // The same messages with stored conversation ids (as a database would name them).
        let stored: Vec<String> = ids.iter().map(|id| format!("db-{id}")).collect();
        let history: Vec<KnownMessage> = stream
            .iter()
            .zip(&stored)
            .map(|(m, id)| KnownMessage {
                msg: *m,
                conversation_id: id,
                closed: false,
            })
            .collect();
        let mut fresh = grouper();
        let d = fresh.decide_with_history(&history, &probe).unwrap();
        assert_eq!(d.conversation_id, format!("db-{}", expected.conversation_id));
        assert_eq!((d.new, d.linked_ts.as_deref()), (false, Some("0")));
        // Nothing was recorded: the same call gives the same answer.
        assert_eq!(fresh.decide_with_history(&history, &probe).unwrap(), d);

        // A human moved alice's message into bob's conversation: the mention now links there.
        let mut moved = history.clone();
        moved[0].conversation_id = &stored[1];
        let d = fresh.decide_with_history(&moved, &probe).unwrap();
        assert_eq!(d.conversation_id, stored[1]);

        // A closed conversation takes no new top-level message.
        let mut closed = history.clone();
        closed[0].closed = true;
        let d = fresh.decide_with_history(&closed, &probe).unwrap();
        assert_ne!(d.conversation_id, stored[0]);

        // A thread reply joins its root's stored conversation.
        let reply = IncomingMessage {
            thread_ts: Some("10"),
            ..msg("30", "erin", "same problem here")
        };
        let d = fresh.decide_with_history(&history, &reply).unwrap();
        assert_eq!((d.conversation_id.as_str(), d.new), (stored[1].as_str(), false));
        assert!(fresh
            .decide_with_history(&history, &msg("soon", "x", "hi"))
            .is_err());
    }

    /// A hand-weighted linear model whose role scorers (both roles) and role-less scorer share
    /// `weights`.
    fn role_model(weights: &[(F, f32)], config: GroupConfig) -> GroupModel {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut s = Scorer::new(vec![1.0; NUM_FEATURES], 0, &mut rng);
        for &(f, w) in weights {
            s.linear[f as usize] = w;
        }
        let pair = || crate::group::model::ScorerPair {
            text: s.clone(),
            embedding: None,
        };
        GroupModel {
            format: MODEL_FORMAT,
            config,
            text: s.clone(),
            embedding: None,
            roles: Some(crate::group::model::RoleScorers {
                customer: pair(),
                agent: pair(),
                cues: None,
            }),
        }
    }

    #[test]
    fn embedding_start_cue_decides_with_embeddings_and_explains() {
        use crate::group::cues::StartCues;
        use crate::group::EMBEDDING_DIM;
        // The scorer reads only the cosine to a candidate and the embedding start cue.
        let mut model = role_model(
            &[(F::COS, 1.0), (F::NEW_EMB_START_CUE, 1.0)],
            GroupConfig::default(),
        );
        // Dimension 0 of an embedding says "a new request".
        let mut start = vec![0f32; EMBEDDING_DIM + 1];
        start[0] = 10.0;
        model.roles.as_mut().unwrap().cues = Some(StartCues {
            customer_embedding: start,
            ..StartCues::default()
        });
        let unit = |x: f32, y: f32| -> &'static [f32] {
            let mut e = vec![0f32; EMBEDDING_DIM];
            (e[0], e[1]) = (x, y);
            e.leak()
        };
        let (a, b, c) = (unit(0.6, 0.8), unit(0.0, 1.0), unit(1.0, 0.0));
        let with = |ts, user, e: &'static [f32]| IncomingMessage {
            role: Some(Role::Customer),
            embedding: Some(e),
            ..msg(ts, user, "hello")
        };
        let mut g = Grouper::new(model.clone());
        let first = g.process(&with("0", "U1", a), false).unwrap();
        // Put like a reply (cue 0) and close to the first message (cosine 0.8): joins it.
        let d = g.process(&with("60", "U2", b), false).unwrap();
        assert_eq!(d.conversation_id, first.conversation_id, "{d:?}");
        // Put like a new request (cue 10, bounded to 8) beats a cosine of 0.6, and says why.
        let d = g.process(&with("120", "U3", c), false).unwrap();
        assert!(d.new, "{d:?}");
        assert!(
            d.reasons.iter().any(|r| r
                .detail
                .contains("put like a new request (embedding start cue 8.00)")),
            "{d:?}"
        );
        // Without an embedding neither feature exists: new and joining tie.
        let mut plain = Grouper::new(model);
        plain.process(&with("0", "U1", a), false).unwrap();
        let d = plain
            .process(
                &IncomingMessage {
                    role: Some(Role::Customer),
                    ..msg("60", "U2", "hello")
                },
                false,
            )
            .unwrap();
        assert_eq!(d.confidence, 0.5, "{d:?}");
    }

    #[test]
    fn open_support_conversations_stay_candidates_with_role_explanations() {
        // A scorer that only likes "team reply to a conversation waiting for the team".
        let model = role_model(
            &[
                (F::TEAM_TO_WAITING, 3.0),
                (F::CUSTOMER_OWN, 3.0),
                (F::NEW_BIAS, 1.0),
            ],
            GroupConfig::default(),
        );
        let role = |r: Role, m: IncomingMessage<'static>| IncomingMessage { role: Some(r), ..m };
        let mut g = Grouper::new(model.clone());
        let q = g
            .process(&role(Role::Customer, msg("0", "U1", "webhooks stopped")), false)
            .unwrap();
        // Two hours later (far outside the 15-minute window) the customer follows up...
        let d = g
            .process(&role(Role::Customer, msg("7200", "U1", "any update?")), false)
            .unwrap();
        assert_eq!(d.conversation_id, q.conversation_id, "{d:?}");
        let role_reason = d
            .reasons
            .iter()
            .find(|r| r.signal == "role")
            .expect("role reason");
        assert!(role_reason.detail.contains("own open conversation"), "{d:?}");
        // ...and the team's top-level answer joins the waiting conversation.
        let d = g
            .process(&role(Role::Agent, msg("9000", "U9", "fixed now")), false)
            .unwrap();
        assert_eq!(d.conversation_id, q.conversation_id, "{d:?}");
        let role_reason = d
            .reasons
            .iter()
            .find(|r| r.signal == "role")
            .expect("role reason");
        assert!(role_reason.detail.contains("waiting for the team"), "{d:?}");
        // Without roles the old conversation is out of reach (IRC behaviour is unchanged).
        let mut plain = Grouper::new(model);
        plain.process(&msg("0", "U1", "webhooks stopped"), false).unwrap();
        assert!(
            plain
                .process(&msg("7200", "U1", "any update?"), false)
                .unwrap()
                .new
        );
    }

    #[test]
    fn ticket_words_and_age_explain_and_threaded_tickets_join_only_when_allowed() {
        // A scorer that likes the ticket's words and a customer's own conversation.
        let model = |threads: bool| {
            let mut config = GroupConfig::default();
            config.bounds.open.threads = threads;
            role_model(
                &[
                    (F::CUSTOMER_OWN, 1.5),
                    (F::CONV_WORD_LOG_COMMON, 2.0),
                    (F::CONV_LOG_AGE, 0.1),
                    (F::NEW_BIAS, 2.0),
                ],
                config,
            )
        };
        let role = |r: Role, m: IncomingMessage<'static>| IncomingMessage { role: Some(r), ..m };
        for threads in [false, true] {
            let mut g = Grouper::new(model(threads));
            let q = g
                .process(
                    &role(Role::Customer, msg("0", "U1", "webhooks stopped delivering")),
                    false,
                )
                .unwrap();
            // The team answers in the question's thread.
            let a = IncomingMessage {
                thread_ts: Some("0"),
                ..role(Role::Agent, msg("60", "U9", "looking into it"))
            };
            assert_eq!(g.process(&a, false).unwrap().conversation_id, q.conversation_id);
            // Two hours later the customer asks again at the top level.
            let up = role(
                Role::Customer,
                msg("7200", "U1", "any update on the webhooks delivering?"),
            );
            let d = g.process(&up, false).unwrap();
            if !threads {
                assert!(d.new, "a threaded ticket is no candidate by default: {d:?}");
                continue;
            }
            assert_eq!(d.conversation_id, q.conversation_id, "{d:?}");
            let detail = |sig: &str| {
                d.reasons
                    .iter()
                    .find(|r| r.signal == sig)
                    .map(|r| r.detail.clone())
                    .unwrap_or_default()
            };
            assert!(detail("text").contains("of its words are the ticket's"), "{d:?}");
            assert!(detail("time").contains("ticket open for 2 h"), "{d:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut g = grouper();
        assert!(g.process(&msg("yesterday", "alice", "hi"), false).is_err());
        let short = [0.1f32; 3];
        assert!(g
            .process(
                &IncomingMessage {
                    embedding: Some(&short),
                    ..msg("1", "a", "hi")
                },
                false
            )
            .is_err());
    }
}
