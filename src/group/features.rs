//! Candidate features. For a new message the candidates are row 0, "start a new conversation",
//! then the previous messages of the channel's window, newest first. Pair features (rows 1..)
//! describe (message, candidate); the `new_*` features (row 0 only) describe the message alone, so
//! under a softmax over the rows they decide how likely a new conversation is.

use super::state::{ChannelState, Conversation, OpenBounds, StoredMessage};
use super::text::{self, TextInfo};
use super::{Role, EMBEDDING_DIM};

/// Which kind of evidence a feature is; a decision's reasons are summed per signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Time,
    Position,
    Author,
    Mention,
    Conversation,
    Text,
    Similarity,
    Role,
    System,
    New,
}

impl Signal {
    pub const ALL: [Signal; 10] = [
        Signal::Time,
        Signal::Position,
        Signal::Author,
        Signal::Mention,
        Signal::Conversation,
        Signal::Text,
        Signal::Similarity,
        Signal::Role,
        Signal::System,
        Signal::New,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Time => "time",
            Signal::Position => "position",
            Signal::Author => "author",
            Signal::Mention => "mention",
            Signal::Conversation => "conversation",
            Signal::Text => "text",
            Signal::Similarity => "similarity",
            Signal::Role => "role",
            Signal::System => "system",
            Signal::New => "new",
        }
    }
}

macro_rules! features {
    ($($id:ident = $name:literal : $sig:ident),* $(,)?) => {
        /// Feature indices (columns of a candidate row).
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy)]
        pub enum F { $($id),* }
        pub const FEATURE_NAMES: &[&str] = &[$($name),*];
        pub const FEATURE_SIGNALS: &[Signal] = &[$(Signal::$sig),*];
    };
}

features! {
    // Time gap between candidate and message (Ubuntu timestamps have minute resolution).
    GAP_0 = "gap_lt_30s": Time,
    GAP_1 = "gap_lt_90s": Time,
    GAP_2 = "gap_lt_150s": Time,
    GAP_5 = "gap_lt_330s": Time,
    GAP_10 = "gap_lt_630s": Time,
    GAP_20 = "gap_lt_1230s": Time,
    GAP_60 = "gap_lt_3630s": Time,
    GAP_MORE = "gap_ge_3630s": Time,
    LOG_GAP = "log_gap_min": Time,
    // How many messages back the candidate is.
    DIST_1 = "dist_1": Position,
    DIST_2 = "dist_2": Position,
    DIST_3 = "dist_3": Position,
    DIST_5 = "dist_4_5": Position,
    DIST_10 = "dist_6_10": Position,
    DIST_20 = "dist_11_20": Position,
    DIST_50 = "dist_21_50": Position,
    DIST_MORE = "dist_gt_50": Position,
    LOG_DIST = "log_dist": Position,
    // Authors.
    SAME_AUTHOR = "same_author": Author,
    OWN_LAST = "own_last_message": Author,
    CAND_AUTHOR_LATEST = "candidate_is_authors_latest": Author,
    I_SPOKE_SINCE = "i_spoke_since_candidate": Author,
    CAND_SYSTEM = "candidate_system": System,
    CAND_ACTION = "candidate_action": System,
    // Addressing and mentions.
    ADDR_CAND = "addresses_candidate_author": Mention,
    ADDR_CAND_LATEST = "addresses_candidate_author_latest": Mention,
    MENTION_CAND = "mentions_candidate_author": Mention,
    CAND_ADDR_ME = "candidate_addresses_me": Mention,
    CAND_MENTION_ME = "candidate_mentions_me": Mention,
    ADDR_OTHER = "addresses_someone_else": Mention,
    CAND_ADDR_OTHER = "candidate_addresses_someone_else": Mention,
    CAND_AUTHOR_ADDRESSED_ME = "candidate_author_recently_addressed_me": Mention,
    I_ADDRESSED_CAND_AUTHOR = "i_recently_addressed_candidate_author": Mention,
    // The candidate's (predicted) conversation.
    CONV_START = "candidate_starts_conversation": Conversation,
    CONV_LATEST = "candidate_is_conversation_latest": Conversation,
    CONV_LOG_SIZE = "conversation_log_size": Conversation,
    CONV_LOG_IDLE = "conversation_log_idle_min": Conversation,
    CONV_AUTHOR_LAST = "conversation_is_my_last": Conversation,
    CONV_HAS_AUTHOR = "conversation_has_me": Conversation,
    CONV_HAS_ADDRESSEE = "conversation_has_my_addressee": Conversation,
    CONV_ADDRESSEE_LAST = "conversation_is_my_addressees_last": Conversation,
    AUTHOR_PREV_PARENT = "candidate_is_my_last_parent": Conversation,
    CONV_LOG_AUTHORS = "conversation_log_authors": Conversation,
    // Words.
    JACCARD = "word_jaccard": Text,
    OVERLAP = "word_overlap": Text,
    CAND_QUESTION = "candidate_question": Text,
    CAND_QUESTION_ANSWER = "candidate_question_i_answer": Text,
    CAND_GREETING = "candidate_greeting": Text,
    // Sentence embeddings (zero when absent).
    COS = "cosine": Similarity,
    COS_BEST = "cosine_best_candidate": Similarity,
    COS_GAP = "cosine_minus_best": Similarity,
    CONV_COS_CENTROID = "conversation_cosine_centroid": Similarity,
    CONV_COS_MAX = "conversation_cosine_max": Similarity,
    // Slack roles (absent in the IRC corpus).
    SAME_ROLE = "same_role": Role,
    CUSTOMER_TO_AGENT = "customer_replies_agent": Role,
    AGENT_TO_CUSTOMER = "agent_replies_customer": Role,
    // Row 0: the message starts a new conversation.
    NEW_BIAS = "new_bias": New,
    NEW_SYSTEM = "new_system": System,
    NEW_ACTION = "new_action": System,
    NEW_ADDR_KNOWN = "new_addresses_known_user": Mention,
    NEW_ADDR_ABSENT = "new_addressee_not_in_window": Mention,
    NEW_MENTIONS_KNOWN = "new_mentions_known_user": Mention,
    NEW_QUESTION = "new_question": Text,
    NEW_GREETING = "new_greeting": Text,
    NEW_ANSWER = "new_answer_cue": Text,
    NEW_LOG_LEN = "new_log_tokens": Text,
    NEW_LOG_GAP_PREV = "new_log_gap_prev_min": Time,
    NEW_LOG_GAP_AUTHOR = "new_log_gap_own_prev_min": Time,
    NEW_AUTHOR_FIRST = "new_author_unseen": Author,
    NEW_LOG_CANDS = "new_log_candidates": Position,
    NEW_MAX_COS = "new_max_cosine": Similarity,
    NEW_MAX_JACCARD = "new_max_jaccard": Text,
    NEW_CUSTOMER = "new_customer": Role,
    NEW_AGENT = "new_agent": Role,
    // Support roles (zero for messages without a role): open tickets outside the window, whose
    // turn it is, who started the conversation, whether the team is already in it.
    OPEN_TICKET = "candidate_open_ticket_outside_window": Position,
    CONV_WAITS_TEAM = "conversation_waits_for_team": Role,
    TEAM_TO_WAITING = "team_message_to_conversation_waiting_for_team": Role,
    TEAM_TO_LATEST_WAITING = "team_message_to_latest_waiting_conversation": Role,
    TEAM_FIRST_REPLY = "team_first_reply_in_conversation": Role,
    TEAM_ALREADY_IN = "team_already_in_conversation": Role,
    TEAM_STARTED = "conversation_started_by_team": Role,
    CUSTOMER_OWN = "customer_in_own_conversation": Role,
    CUSTOMER_OWN_LATEST = "customer_in_own_latest_open_conversation": Role,
    CUSTOMER_OTHERS = "customer_in_another_customers_conversation": Role,
    CUSTOMER_AFTER_TEAM = "customer_after_team_reply": Role,
    MENTIONS_STARTER = "mentions_conversation_starter": Mention,
    LOG_SINCE_CUSTOMER = "log_min_since_customer_spoke": Time,
    NEW_TEAM_WAITING = "new_team_log_conversations_waiting": Role,
    NEW_CUSTOMER_OPEN = "new_customer_has_open_conversation": Role,
    // A team member's top-level message (announcements need strong evidence): how long since the
    // team last spoke in the candidate, whether the team spoke last there (it is not waiting),
    // whether anything waits for the team at all, and the learned start cue of the words.
    LOG_SINCE_TEAM = "log_min_since_team_spoke": Time,
    TEAM_TO_ANSWERED = "team_message_to_conversation_the_team_answered_last": Role,
    NEW_TEAM_NONE_WAITING = "new_team_no_conversation_waiting": Role,
    NEW_START_CUE = "new_learned_start_cue": Text,
    // Long support threads (issue 14, third round): what the candidate ticket is about and how
    // long it has been open, so a message that comes back to it hours or days later is judged by
    // its topic rather than by an IRC-sized silence.
    CONV_WORD_SHARE = "conversation_word_share": Text,
    CONV_WORD_LOG_COMMON = "conversation_log_common_words": Text,
    CONV_LOG_AGE = "conversation_log_age_min": Time,
    NEW_LOG_GAP_AUTHOR_FULL = "new_log_gap_own_prev_min_uncapped": Time,
    // How the message is put, read from its sentence embedding by the role's learned start cue
    // (issue 14, fifth round): a new question against a reply in a thread.
    NEW_EMB_START_CUE = "new_embedding_start_cue": Similarity,
}

pub const NUM_FEATURES: usize = FEATURE_NAMES.len();

/// An incoming message, analysed once.
#[derive(Debug, Clone)]
pub struct Prepared<'a> {
    pub key: &'a str,
    pub ts: f64,
    pub user: &'a str,
    pub user_key: u64,
    pub text: TextInfo,
    pub system: bool,
    pub action: bool,
    pub role: Option<Role>,
    pub embedding: Option<&'a [f32]>,
    /// Slack thread root ts when the message is a reply in a thread.
    pub reply_to: Option<&'a str>,
    /// The model's learned start cue for the words (0 without a role or cues).
    pub start_cue: f32,
    /// The learned start cue of the sentence embedding (0 without a role, cues or embedding).
    pub emb_start_cue: f32,
}

/// Candidate rows for one message: row 0 = new conversation, row r >= 1 = `state.msg(index[r])`.
#[derive(Debug, Default, Clone)]
pub struct CandidateSet {
    pub x: Vec<f32>,
    pub index: Vec<usize>,
}

impl CandidateSet {
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.x[r * NUM_FEATURES..(r + 1) * NUM_FEATURES]
    }

    fn push_row(&mut self, index: usize) -> usize {
        self.index.push(index);
        self.x.resize(self.x.len() + NUM_FEATURES, 0.0);
        self.index.len() - 1
    }
}

/// Candidate window limits.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub messages: usize,
    pub seconds: f64,
    /// Open support conversations beyond the window (messages with a role only).
    pub open: OpenBounds,
}

fn minutes_log(seconds: f64) -> f32 {
    // f32 ln: the f64 one showed up in profiles (several per candidate).
    (1.0 + seconds.max(0.0) as f32 / 60.0).ln()
}

fn gap_bucket(gap: f64) -> F {
    match gap {
        g if g < 30.0 => F::GAP_0,
        g if g < 90.0 => F::GAP_1,
        g if g < 150.0 => F::GAP_2,
        g if g < 330.0 => F::GAP_5,
        g if g < 630.0 => F::GAP_10,
        g if g < 1230.0 => F::GAP_20,
        g if g < 3630.0 => F::GAP_60,
        _ => F::GAP_MORE,
    }
}

fn dist_bucket(d: usize) -> F {
    match d {
        1 => F::DIST_1,
        2 => F::DIST_2,
        3 => F::DIST_3,
        4..=5 => F::DIST_5,
        6..=10 => F::DIST_10,
        11..=20 => F::DIST_20,
        21..=50 => F::DIST_50,
        _ => F::DIST_MORE,
    }
}

/// A top-level message may not join a conversation that holds a Slack thread (a thread never
/// mixes with another) unless `threads` (a message with a role, when the model's
/// [`OpenBounds::threads`] is on), nor a closed one.
pub fn eligible(conv: Option<&Conversation>, threads: bool) -> bool {
    conv.is_none_or(|c| !c.closed && (threads || c.thread.is_none()))
}

/// Fills `out` with the candidate rows for `msg` (a top-level message; thread replies are decided
/// by rule before this).
pub fn extract(state: &ChannelState, msg: &Prepared<'_>, window: Window, out: &mut CandidateSet) {
    out.x.clear();
    out.index.clear();
    out.push_row(usize::MAX);

    let me = state.authors.get(&msg.user_key);
    // The first word addresses someone only if it names a known author (not "hi," or "ok:").
    let addressee = msg
        .text
        .addressee
        .filter(|a| *a != msg.user_key && state.authors.contains_key(a));
    let addressee_conv = addressee
        .and_then(|a| state.authors.get(&a))
        .map(|a| a.last_conversation);

    // Candidates, newest first, within both window limits. A message with a role (a support
    // channel) also sees the first and latest messages of the channel's open support
    // conversations, however long ago (bounded by `window.open`).
    let mut cands: Vec<usize> = Vec::with_capacity(window.messages);
    let mut recent = 0;
    // Positions in `cands` of the open-ticket candidates from outside the window.
    let mut outside: Vec<usize> = Vec::new();
    let mut open_convs: Vec<u64> = Vec::new();
    let roles = msg.role.is_some();
    let threads_ok = roles && window.open.threads;
    let open_ok = |m: &StoredMessage, open_convs: &mut Vec<u64>| {
        if !state.parked_live(m, msg.ts, &window.open) {
            return false;
        }
        if open_convs.contains(&m.conversation) {
            return true;
        }
        if open_convs.len() >= window.open.conversations {
            return false;
        }
        open_convs.push(m.conversation);
        true
    };
    for (i, m) in state.window.iter().enumerate().rev() {
        let in_window = recent < window.messages && msg.ts - m.ts <= window.seconds;
        if !in_window && !roles {
            break;
        }
        if !eligible(state.conversations.get(&m.conversation), threads_ok) {
            continue;
        }
        if in_window {
            recent += 1;
            cands.push(i);
        } else if open_ok(m, &mut open_convs) {
            cands.push(i);
            outside.push(cands.len() - 1);
        }
    }
    if roles {
        let base = state.window.len();
        for (k, m) in state.parked.iter().enumerate().rev() {
            if open_ok(m, &mut open_convs) {
                cands.push(base + k);
                outside.push(cands.len() - 1);
            }
        }
    }
    // Conversations waiting for the team, and the most recently active of them.
    let mut waiting: Vec<u64> = Vec::new();
    let mut latest_waiting: Option<(u64, f64)> = None;
    let mut my_latest_open: Option<(u64, f64)> = None;
    if roles {
        for &i in &cands {
            let m = state.msg(i);
            let Some(c) = state.conversations.get(&m.conversation) else {
                continue;
            };
            if !c.roles.known || waiting.contains(&m.conversation) {
                continue;
            }
            if c.roles.waits_for_team() {
                waiting.push(m.conversation);
                if latest_waiting.is_none_or(|(_, t)| c.last_ts > t) {
                    latest_waiting = Some((m.conversation, c.last_ts));
                }
            }
        }
        for &i in &cands {
            let m = state.msg(i);
            if let Some(c) = state.conversations.get(&m.conversation) {
                if c.roles.starter == Some(msg.user_key) && my_latest_open.is_none_or(|(_, t)| c.last_ts > t)
                {
                    my_latest_open = Some((m.conversation, c.last_ts));
                }
            }
        }
    }

    // Who addressed whom recently, and the best cosine / overlap among the candidates.
    let mut addressed_me: Vec<u64> = Vec::new();
    let mut i_addressed: Vec<u64> = Vec::new();
    let mut cos = Vec::with_capacity(cands.len());
    let mut jac = Vec::with_capacity(cands.len());
    let (mut best_cos, mut best_jac) = (f32::NEG_INFINITY, 0f32);
    for &i in &cands {
        let m = state.msg(i);
        if m.text.addressee == Some(msg.user_key) {
            addressed_me.push(m.user_key);
        }
        if m.user_key == msg.user_key {
            if let Some(a) = m.text.addressee {
                i_addressed.push(a);
            }
        }
        let c = match (msg.embedding, &m.embedding) {
            (Some(a), Some(b)) => text::dot(a, b),
            _ => f32::NAN,
        };
        if c > best_cos {
            best_cos = c;
        }
        cos.push(c);
        let j = text::jaccard(&msg.text.words, &m.text.words);
        best_jac = best_jac.max(j);
        jac.push(j);
    }
    let have_cos = best_cos.is_finite();

    // Per-conversation cosine (max over its candidates; centroid), computed once per conversation.
    let mut conv_cos: Vec<(u64, f32, f32)> = Vec::new();
    if let (true, Some(e)) = (have_cos, msg.embedding) {
        for (k, &i) in cands.iter().enumerate() {
            let id = state.msg(i).conversation;
            match conv_cos.iter_mut().find(|(c, _, _)| *c == id) {
                Some(entry) => entry.1 = entry.1.max(cos[k]),
                None => {
                    let centroid = match state.conversations.get(&id) {
                        Some(c) if c.embedding_norm > 0.0 => c
                            .embedding_sum
                            .as_deref()
                            .map_or(0.0, |s| text::dot(e, s) / c.embedding_norm),
                        _ => 0.0,
                    };
                    conv_cos.push((id, cos[k], centroid));
                }
            }
        }
    }

    // Per support conversation: content words of the message found in the ticket's words.
    let mut conv_words: Vec<(u64, usize)> = Vec::new();
    if roles && !msg.text.words.is_empty() {
        for &i in &cands {
            let id = state.msg(i).conversation;
            if conv_words.iter().any(|(c, _)| *c == id) {
                continue;
            }
            if let Some(c) = state.conversations.get(&id).filter(|c| c.roles.known) {
                let common = msg
                    .text
                    .words
                    .iter()
                    .filter(|w| text::contains(&c.roles.words, **w))
                    .count();
                conv_words.push((id, common));
            }
        }
    }

    let mut seen_authors: Vec<u64> = Vec::new();
    for (k, &i) in cands.iter().enumerate() {
        let m: &StoredMessage = state.msg(i);
        let r = out.push_row(i);
        let row = &mut out.x[r * NUM_FEATURES..(r + 1) * NUM_FEATURES];
        let mut set = |f: F, v: f32| row[f as usize] = v;
        let gap = msg.ts - m.ts;
        let dist = (state.next_seq - m.seq) as usize;
        set(gap_bucket(gap), 1.0);
        set(F::LOG_GAP, minutes_log(gap));
        set(dist_bucket(dist), 1.0);
        set(F::LOG_DIST, (dist as f32).ln());

        let latest_by_author = !seen_authors.contains(&m.user_key);
        if latest_by_author {
            seen_authors.push(m.user_key);
        }
        let same = m.user_key == msg.user_key;
        // Authors seen so far are those of newer candidates.
        set(
            F::I_SPOKE_SINCE,
            (!same && seen_authors.contains(&msg.user_key)) as u8 as f32,
        );
        set(F::SAME_AUTHOR, same as u8 as f32);
        set(F::OWN_LAST, (same && latest_by_author) as u8 as f32);
        set(F::CAND_AUTHOR_LATEST, latest_by_author as u8 as f32);
        set(F::CAND_SYSTEM, m.system as u8 as f32);
        set(F::CAND_ACTION, m.action as u8 as f32);

        let addr_cand = addressee == Some(m.user_key);
        set(F::ADDR_CAND, addr_cand as u8 as f32);
        set(F::ADDR_CAND_LATEST, (addr_cand && latest_by_author) as u8 as f32);
        set(
            F::MENTION_CAND,
            (!addr_cand && !same && text::contains(&msg.text.tokens, m.user_key)) as u8 as f32,
        );
        let cand_addr_me = m.text.addressee == Some(msg.user_key);
        set(F::CAND_ADDR_ME, cand_addr_me as u8 as f32);
        set(
            F::CAND_MENTION_ME,
            (!cand_addr_me && !same && text::contains(&m.text.tokens, msg.user_key)) as u8 as f32,
        );
        set(F::ADDR_OTHER, (addressee.is_some() && !addr_cand) as u8 as f32);
        set(
            F::CAND_ADDR_OTHER,
            (m.text.addressee.is_some() && !cand_addr_me) as u8 as f32,
        );
        set(
            F::CAND_AUTHOR_ADDRESSED_ME,
            addressed_me.contains(&m.user_key) as u8 as f32,
        );
        set(
            F::I_ADDRESSED_CAND_AUTHOR,
            i_addressed.contains(&m.user_key) as u8 as f32,
        );

        if let Some(c) = state.conversations.get(&m.conversation) {
            set(F::CONV_START, (c.start_seq == m.seq) as u8 as f32);
            set(F::CONV_LATEST, (c.last_seq == m.seq) as u8 as f32);
            set(F::CONV_LOG_SIZE, (c.size as f32).ln());
            set(F::CONV_LOG_IDLE, minutes_log(msg.ts - c.last_ts));
            set(F::CONV_HAS_AUTHOR, c.authors.contains(&msg.user_key) as u8 as f32);
            set(
                F::CONV_HAS_ADDRESSEE,
                addressee.is_some_and(|a| c.authors.contains(&a)) as u8 as f32,
            );
            set(
                F::CONV_ADDRESSEE_LAST,
                (addressee_conv == Some(m.conversation)) as u8 as f32,
            );
            set(F::CONV_LOG_AUTHORS, (c.authors.len().max(1) as f32).ln());
        }
        if let Some(a) = me {
            set(
                F::CONV_AUTHOR_LAST,
                (a.last_conversation == m.conversation) as u8 as f32,
            );
            set(
                F::AUTHOR_PREV_PARENT,
                (a.last_parent_seq == Some(m.seq)) as u8 as f32,
            );
        }

        set(F::JACCARD, jac[k]);
        set(F::OVERLAP, (jac[k] > 0.0) as u8 as f32);
        set(F::CAND_QUESTION, m.text.question as u8 as f32);
        set(
            F::CAND_QUESTION_ANSWER,
            (m.text.question && msg.text.answer_cue) as u8 as f32,
        );
        set(F::CAND_GREETING, m.text.greeting as u8 as f32);

        if have_cos && cos[k].is_finite() {
            set(F::COS, cos[k]);
            set(F::COS_BEST, (cos[k] >= best_cos) as u8 as f32);
            set(F::COS_GAP, cos[k] - best_cos);
            if let Some((_, max, centroid)) = conv_cos.iter().find(|(c, _, _)| *c == m.conversation) {
                set(F::CONV_COS_MAX, *max);
                set(F::CONV_COS_CENTROID, *centroid);
            }
        }

        if outside.contains(&k) {
            set(F::OPEN_TICKET, 1.0);
        }
        if let (Some(role), Some(c)) = (msg.role, state.conversations.get(&m.conversation)) {
            let r = &c.roles;
            if r.known {
                let waits = r.waits_for_team();
                let team = role == Role::Agent;
                let mine = r.starter == Some(msg.user_key);
                set(F::CONV_WAITS_TEAM, waits as u8 as f32);
                set(F::TEAM_TO_WAITING, (team && waits) as u8 as f32);
                set(
                    F::TEAM_TO_LATEST_WAITING,
                    (team && latest_waiting.is_some_and(|(w, _)| w == m.conversation)) as u8 as f32,
                );
                set(F::TEAM_FIRST_REPLY, (team && !r.team_replied) as u8 as f32);
                set(F::TEAM_ALREADY_IN, (team && r.team_replied) as u8 as f32);
                set(
                    F::TEAM_STARTED,
                    (r.starter_role == Some(Role::Agent)) as u8 as f32,
                );
                set(F::CUSTOMER_OWN, (!team && mine) as u8 as f32);
                set(
                    F::CUSTOMER_OWN_LATEST,
                    (!team && my_latest_open.is_some_and(|(o, _)| o == m.conversation)) as u8 as f32,
                );
                set(
                    F::CUSTOMER_OTHERS,
                    (!team && !mine && r.starter_role == Some(Role::Customer)) as u8 as f32,
                );
                set(
                    F::CUSTOMER_AFTER_TEAM,
                    (!team && r.last_role == Some(Role::Agent)) as u8 as f32,
                );
                let starter_named = r.starter.is_some_and(|u| {
                    u != msg.user_key
                        && (msg.text.addressee == Some(u) || text::contains(&msg.text.tokens, u))
                });
                set(F::MENTIONS_STARTER, starter_named as u8 as f32);
                if let Some(t) = r.last_customer_ts {
                    set(F::LOG_SINCE_CUSTOMER, minutes_log(msg.ts - t));
                }
                if let (true, Some(t)) = (team, r.last_team_ts) {
                    set(F::LOG_SINCE_TEAM, minutes_log(msg.ts - t));
                }
                set(
                    F::TEAM_TO_ANSWERED,
                    (team && r.last_role == Some(Role::Agent)) as u8 as f32,
                );
                if let Some(t) = r.start_ts {
                    set(F::CONV_LOG_AGE, minutes_log(msg.ts - t));
                }
                if let Some((_, common)) = conv_words.iter().find(|(c, _)| *c == m.conversation) {
                    set(F::CONV_WORD_SHARE, *common as f32 / msg.text.words.len() as f32);
                    set(F::CONV_WORD_LOG_COMMON, (1.0 + *common as f32).ln());
                }
            }
        }
        if let (Some(a), Some(b)) = (msg.role, m.role) {
            set(F::SAME_ROLE, (a == b) as u8 as f32);
            set(
                F::CUSTOMER_TO_AGENT,
                (a == Role::Customer && b == Role::Agent) as u8 as f32,
            );
            set(
                F::AGENT_TO_CUSTOMER,
                (a == Role::Agent && b == Role::Customer) as u8 as f32,
            );
        }
    }

    // Row 0: starting a new conversation.
    let row = &mut out.x[..NUM_FEATURES];
    let mut set = |f: F, v: f32| row[f as usize] = v;
    set(F::NEW_BIAS, 1.0);
    set(F::NEW_SYSTEM, msg.system as u8 as f32);
    set(F::NEW_ACTION, msg.action as u8 as f32);
    set(F::NEW_ADDR_KNOWN, addressee.is_some() as u8 as f32);
    let addressee_here = addressee.is_some_and(|a| cands.iter().any(|&i| state.msg(i).user_key == a));
    set(
        F::NEW_ADDR_ABSENT,
        (addressee.is_some() && !addressee_here) as u8 as f32,
    );
    let mentions_known = msg
        .text
        .tokens
        .iter()
        .any(|t| *t != msg.user_key && state.authors.contains_key(t));
    set(F::NEW_MENTIONS_KNOWN, mentions_known as u8 as f32);
    set(F::NEW_QUESTION, msg.text.question as u8 as f32);
    set(F::NEW_GREETING, msg.text.greeting as u8 as f32);
    set(F::NEW_ANSWER, msg.text.answer_cue as u8 as f32);
    set(F::NEW_LOG_LEN, (1.0 + msg.text.n_tokens as f32).ln());
    // Gaps are capped at a day so one long silence does not dominate.
    const DAY: f64 = 86_400.0;
    let prev_gap = state.newest_ts().map_or(DAY, |t| (msg.ts - t).min(DAY));
    set(F::NEW_LOG_GAP_PREV, minutes_log(prev_gap));
    set(
        F::NEW_LOG_GAP_AUTHOR,
        minutes_log(me.map_or(DAY, |a| (msg.ts - a.last_ts).min(DAY))),
    );
    set(F::NEW_AUTHOR_FIRST, me.is_none() as u8 as f32);
    set(F::NEW_LOG_CANDS, (1.0 + cands.len() as f32).ln());
    if have_cos {
        set(F::NEW_MAX_COS, best_cos);
    }
    set(F::NEW_MAX_JACCARD, best_jac);
    if let Some(role) = msg.role {
        set(
            if role == Role::Customer {
                F::NEW_CUSTOMER
            } else {
                F::NEW_AGENT
            },
            1.0,
        );
        match role {
            Role::Agent => {
                set(F::NEW_TEAM_WAITING, (1.0 + waiting.len() as f32).ln());
                set(F::NEW_TEAM_NONE_WAITING, waiting.is_empty() as u8 as f32);
            }
            Role::Customer => set(F::NEW_CUSTOMER_OPEN, my_latest_open.is_some() as u8 as f32),
        }
        set(F::NEW_START_CUE, msg.start_cue);
        if msg.embedding.is_some() {
            set(F::NEW_EMB_START_CUE, msg.emb_start_cue);
        }
        // The capped gap above hides a customer coming back after days.
        if let Some(a) = me {
            set(F::NEW_LOG_GAP_AUTHOR_FULL, minutes_log(msg.ts - a.last_ts));
        }
    }
}

/// Checks an embedding's shape (the model's features assume unit-length 384-dim vectors).
pub fn valid_embedding(e: &[f32]) -> bool {
    e.len() == EMBEDDING_DIM && e.iter().all(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_signals_align() {
        assert_eq!(FEATURE_NAMES.len(), FEATURE_SIGNALS.len());
        assert_eq!(F::NEW_EMB_START_CUE as usize, NUM_FEATURES - 1);
        let mut names = FEATURE_NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_FEATURES);
    }
}
