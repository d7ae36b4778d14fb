//! The human-readable reasons of a decision: one short detail per signal of the chosen candidate
//! ("same thread", "2 min after the author's last message", the role explanations).

use super::features::{Prepared, Signal, F};
use super::state::{ChannelState, StoredMessage};
use super::Role;

/// A short human-readable reason for one signal of the chosen candidate (`cand`: None = new).
pub(crate) fn describe(
    sig: Signal,
    x: &[f32],
    cand: Option<&StoredMessage>,
    prep: &Prepared<'_>,
    state: &ChannelState,
) -> String {
    let on = |f: F| x[f as usize] != 0.0;
    let mins = |secs: f64| (secs / 60.0).round() as i64;
    match (sig, cand) {
        (Signal::Time, Some(c)) => {
            let opened = state
                .conversations
                .get(&c.conversation)
                .and_then(|k| k.roles.start_ts)
                .filter(|_| on(F::CONV_LOG_AGE));
            match opened {
                Some(t) => format!(
                    "{} min after the candidate, ticket open for {}",
                    mins(prep.ts - c.ts),
                    idle(prep.ts - t)
                ),
                None => format!("{} min after the candidate", mins(prep.ts - c.ts)),
            }
        }
        (Signal::Time, None) => match state.newest_ts() {
            Some(t) => format!("{} min since the channel's previous message", mins(prep.ts - t)),
            None => "first message in the channel".into(),
        },
        (Signal::Position, Some(c)) if on(F::OPEN_TICKET) => format!(
            "open conversation outside the recent window, idle {}",
            idle(
                prep.ts
                    - state
                        .conversations
                        .get(&c.conversation)
                        .map_or(c.ts, |k| k.last_ts)
            )
        ),
        (Signal::Position, Some(c)) => format!("{} messages back", state.next_seq - c.seq),
        (Signal::Position, None) => format!(
            "{} candidates in the window",
            x[F::NEW_LOG_CANDS as usize].exp() - 1.0
        ),
        (Signal::Author, Some(c)) if on(F::SAME_AUTHOR) => format!("same author {}", c.user),
        (Signal::Author, Some(c)) => format!("candidate by {}", c.user),
        (Signal::Author, None) if on(F::NEW_AUTHOR_FIRST) => format!("{} not seen recently", prep.user),
        (Signal::Author, None) => format!("{} spoke before", prep.user),
        (Signal::Mention, Some(c)) if on(F::ADDR_CAND) => format!("addresses {}", c.user),
        (Signal::Mention, Some(c)) if on(F::MENTION_CAND) => format!("mentions {}", c.user),
        (Signal::Mention, Some(c)) if on(F::CAND_ADDR_ME) || on(F::CAND_MENTION_ME) => {
            format!("{} addressed {}", c.user, prep.user)
        }
        (Signal::Mention, Some(_)) if on(F::ADDR_OTHER) => "addresses someone else".into(),
        (Signal::Mention, Some(c)) => format!("{} and {} addressed each other recently", c.user, prep.user),
        (Signal::Mention, None) if on(F::NEW_ADDR_ABSENT) => "addresses a user not in the window".into(),
        (Signal::Mention, None) => "addresses or mentions a known user".into(),
        (Signal::Conversation, Some(c)) => {
            let conv = state.conversations.get(&c.conversation);
            let size = conv.map_or(0, |k| k.size);
            let mine = if on(F::CONV_AUTHOR_LAST) {
                ", the author's last conversation"
            } else {
                ""
            };
            let thread = if conv.is_some_and(|k| k.thread.is_some()) {
                " in a thread"
            } else {
                ""
            };
            format!("conversation of {size} messages{thread}{mine}")
        }
        (Signal::Text, Some(_)) if on(F::CAND_QUESTION_ANSWER) => "answers a question".into(),
        (Signal::Text, Some(_)) if on(F::CONV_WORD_LOG_COMMON) => format!(
            "{:.0}% of its words are the ticket's (word overlap {:.2})",
            100.0 * x[F::CONV_WORD_SHARE as usize],
            x[F::JACCARD as usize]
        ),
        (Signal::Text, Some(_)) => format!("word overlap {:.2}", x[F::JACCARD as usize]),
        (Signal::Text, None) if on(F::NEW_GREETING) => "opens like a new request".into(),
        (Signal::Text, None) if x[F::NEW_START_CUE as usize] > 0.0 => format!(
            "words that usually start a conversation (learned cue {:.2})",
            x[F::NEW_START_CUE as usize]
        ),
        (Signal::Text, None) => format!("best word overlap {:.2}", x[F::NEW_MAX_JACCARD as usize]),
        (Signal::Similarity, Some(_)) => format!(
            "cosine {:.2} (conversation {:.2})",
            x[F::COS as usize],
            x[F::CONV_COS_MAX as usize]
        ),
        (Signal::Similarity, None) if x[F::NEW_EMB_START_CUE as usize] != 0.0 => format!(
            "best cosine {:.2}; put like {} (embedding start cue {:.2})",
            x[F::NEW_MAX_COS as usize],
            if x[F::NEW_EMB_START_CUE as usize] > 0.0 {
                "a new request"
            } else {
                "a reply"
            },
            x[F::NEW_EMB_START_CUE as usize]
        ),
        (Signal::Similarity, None) => format!("best cosine {:.2}", x[F::NEW_MAX_COS as usize]),
        (Signal::Role, Some(c)) => describe_role(x, c, prep, state),
        (Signal::Role, None) => match prep.role {
            Some(Role::Agent) if x[F::NEW_TEAM_WAITING as usize] > 0.0 => format!(
                "a team member starting a conversation while {} wait for the team (rare)",
                plural(
                    (x[F::NEW_TEAM_WAITING as usize].exp() - 1.0).round() as i64,
                    "conversation"
                )
            ),
            Some(Role::Agent) => "a team member starting a conversation (announcement or outreach)".into(),
            Some(Role::Customer) if on(F::NEW_CUSTOMER_OPEN) => {
                "customer starting a new request beside their open conversation".into()
            }
            _ => "customer starting a new request".into(),
        },
        (Signal::System, _) => "system message (join/quit)".into(),
        (Signal::New, _) => "prior for starting a conversation".into(),
        (Signal::Conversation, None) => String::new(),
    }
}

fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "45 min", "3 h", "2 days".
fn idle(secs: f64) -> String {
    let mins = (secs / 60.0).round() as i64;
    match mins {
        m if m < 120 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

/// The role evidence for joining candidate `c`'s conversation, most specific first.
fn describe_role(x: &[f32], c: &StoredMessage, prep: &Prepared<'_>, state: &ChannelState) -> String {
    let on = |f: F| x[f as usize] != 0.0;
    let waited = state
        .conversations
        .get(&c.conversation)
        .and_then(|k| k.roles.last_customer_ts)
        .map(|t| idle(prep.ts - t));
    if on(F::TEAM_TO_WAITING) {
        let first = if on(F::TEAM_FIRST_REPLY) { "first " } else { "" };
        return match waited {
            Some(w) => format!("{first}team reply to a conversation waiting for the team ({w})"),
            None => format!("{first}team reply to a conversation waiting for the team"),
        };
    }
    if on(F::TEAM_ALREADY_IN) {
        let since = state
            .conversations
            .get(&c.conversation)
            .and_then(|k| k.roles.last_team_ts)
            .map(|t| idle(prep.ts - t));
        return match since {
            Some(s) => format!("team member continuing a conversation the team is in (team spoke {s} ago)"),
            None => "team member continuing a conversation the team is in".into(),
        };
    }
    if on(F::CUSTOMER_OWN) && on(F::CUSTOMER_AFTER_TEAM) {
        return "customer answering the team in their own conversation".into();
    }
    if on(F::CUSTOMER_OWN) {
        return "customer follow-up in their own open conversation".into();
    }
    if on(F::CUSTOMER_OTHERS) {
        return "customer joining another customer's conversation".into();
    }
    match prep.role {
        Some(Role::Customer) => format!("customer message after {}", c.user),
        _ => format!("team message after {}", c.user),
    }
}
