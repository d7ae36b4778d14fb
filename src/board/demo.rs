//! `triage serve --demo`: a fresh database seeded through the real pipeline (the real models
//! group and classify every message) from the hand-written workspace in
//! `examples/demo/workspace.json`, compiled into the binary, so a first look at the board shows
//! grouped, classified conversations.

use crate::domain::{ConversationPatch, LinkedIssue, Role, Status};
use crate::http::AppState;
use crate::pipeline::IncomingMessage;
use crate::store::{AccountInput, Actor, TeamMember};
use anyhow::Context;
use chrono::{Duration, Utc};
use serde::Deserialize;
use std::collections::HashMap;

pub const WORKSPACE: &str = include_str!("../../examples/demo/workspace.json");

#[derive(Debug, Deserialize)]
pub struct Workspace {
    pub team: Vec<Member>,
    pub accounts: Vec<AccountInput>,
    pub messages: Vec<DemoMessage>,
    #[serde(default)]
    pub issues: Vec<DemoIssue>,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct DemoMessage {
    /// A name other messages use to reply in this one's thread or to link an issue.
    #[serde(default)]
    pub key: Option<String>,
    pub channel: String,
    /// How long before start-up it was sent: `3d4h20m`.
    pub ago: String,
    /// The key of the thread's root, for a reply in a thread.
    #[serde(default)]
    pub thread: Option<String>,
    pub user: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct DemoIssue {
    /// The key of a message whose conversation waits on this issue (put On Hold).
    pub message: String,
    pub url: String,
    pub by: String,
}

pub fn workspace() -> anyhow::Result<Workspace> {
    serde_json::from_str(WORKSPACE).context("examples/demo/workspace.json")
}

/// `3d4h20m` -> that duration.
pub fn parse_ago(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::zero();
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let n: i64 = digits.parse().with_context(|| format!("bad duration `{text}`"))?;
        digits.clear();
        total += match ch {
            'd' => Duration::days(n),
            'h' => Duration::hours(n),
            'm' => Duration::minutes(n),
            _ => anyhow::bail!("bad unit `{ch}` in `{text}` (d, h, m)"),
        };
    }
    anyhow::ensure!(
        digits.is_empty(),
        "bad duration `{text}`: a number without a unit"
    );
    Ok(total)
}

/// The team's Slack ids (their messages are team replies).
pub fn team_ids(w: &Workspace) -> Vec<String> {
    w.team.iter().map(|m| m.id.clone()).collect()
}

/// Seeds `state`'s (empty) database: team, accounts, every message through
/// [`Pipeline::ingest`](crate::pipeline::Pipeline::ingest) in time order, then the linked issues.
/// Waits for the models first. Returns how many messages went in.
pub async fn seed(state: &AppState, w: &Workspace) -> anyhow::Result<usize> {
    while !state.models.are_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for m in &w.team {
        state
            .store
            .put_team_member(TeamMember {
                slack_user_id: m.id.clone(),
                name: m.name.clone(),
                triage_channel: None,
            })
            .await?;
    }
    for a in &w.accounts {
        state.store.create_account(a.clone()).await?;
    }
    let team: Vec<String> = team_ids(w);
    let now = Utc::now();
    let mut dated = w
        .messages
        .iter()
        .map(|m| Ok((now - parse_ago(&m.ago)?, m)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    dated.sort_by_key(|(at, _)| *at);
    let mut ts_of: HashMap<&str, String> = HashMap::new();
    let mut conversation_of: HashMap<&str, String> = HashMap::new();
    for (at, m) in &dated {
        let ts = format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros());
        let thread_ts = match &m.thread {
            Some(key) => Some(
                ts_of
                    .get(key.as_str())
                    .cloned()
                    .with_context(|| format!("unknown thread `{key}`"))?,
            ),
            None => None,
        };
        let role = if team.contains(&m.user) {
            Role::Agent
        } else {
            Role::Customer
        };
        let outcome = state
            .pipeline
            .ingest(IncomingMessage {
                channel: m.channel.clone(),
                ts: ts.clone(),
                thread_ts,
                user: m.user.clone(),
                role,
                text: m.text.clone(),
                embedding: None,
                files: Vec::new(),
            })
            .await?;
        if let Some(key) = &m.key {
            ts_of.insert(key, ts);
            conversation_of.insert(key, outcome.conversation.id);
        }
    }
    for issue in &w.issues {
        let conv = conversation_of
            .get(issue.message.as_str())
            .with_context(|| format!("unknown message `{}`", issue.message))?;
        let patch = ConversationPatch {
            status: Some(Status::OnHold),
            linked_issue: Some(Some(LinkedIssue {
                url: issue.url.clone(),
                provider: None,
                key: None,
                state: LinkedIssue::open(),
            })),
            ..Default::default()
        };
        state
            .pipeline
            .update_conversation(conv, patch, Actor::Human(issue.by.clone()))
            .await?;
    }
    Ok(dated.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_workspace_is_consistent() {
        let w = workspace().unwrap();
        assert!((2..=3).contains(&w.accounts.len()));
        let mut keys = std::collections::HashSet::new();
        for m in &w.messages {
            parse_ago(&m.ago).unwrap();
            if let Some(k) = &m.key {
                assert!(keys.insert(k.clone()), "duplicate key {k}");
            }
            if let Some(t) = &m.thread {
                assert!(keys.contains(t), "thread {t} before its root");
            }
        }
        assert!(w.issues.iter().all(|i| keys.contains(&i.message)));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_ago("3d4h20m").unwrap(),
            Duration::minutes(3 * 1440 + 4 * 60 + 20)
        );
        assert_eq!(parse_ago("50m").unwrap(), Duration::minutes(50));
        assert!(parse_ago("5").is_err() && parse_ago("5x").is_err());
    }
}
