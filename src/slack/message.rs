//! A Slack message object, as it appears both in Events API `message` events and in export files,
//! and the one function, [`interpret`], that decides what it means for triage: a new message, an
//! edit, a deletion, or nothing (with the reason, for counting).
//!
//! Subtypes: a plain message, `file_share` (an attachment-only message still counts: its file
//! names and permalinks are kept), `thread_broadcast` (a thread reply also shown in the channel:
//! one message, in its thread) and `me_message` are new messages. `message_changed` is an edit of
//! the inner `message` (or a deletion when it became a `tombstone`: a thread root deleted while it
//! has replies); `message_deleted` a deletion of `deleted_ts`. Bot messages (`bot_message`, any
//! message with a `bot_id`, our own bot's) and every housekeeping subtype (`channel_join`,
//! `channel_leave`, `channel_topic`, `channel_purpose`, `pinned_item`, ...) are ignored.
//!
//! Who is the team ([`Team`]): the configured `TRIAGE_TEAM_USERS` when set (customers who are
//! guests of the same workspace); otherwise, under Slack Connect, users of the installing
//! workspace: the message's `user_team` (or `team`) equal to the event's `team_id`.

use crate::domain::{normalize_ts, validate, FileRef, IncomingMessage, Role};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// A Slack message object. Unknown fields are ignored; absent or `null` ones take their default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct SlackMessage {
    /// `message` in events and exports.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub subtype: Option<String>,
    /// Present in events; an export's channel is its folder.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// A Slack ts (`"1700000000.000100"`; a number is accepted too).
    #[serde(default)]
    pub ts: Option<Value>,
    #[serde(default)]
    pub thread_ts: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub files: Vec<SlackFile>,
    #[serde(default)]
    pub edited: Option<Edited>,
    /// The workspace of the author (Slack Connect).
    #[serde(default)]
    pub user_team: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// `message_changed`: the message after the edit.
    #[serde(default)]
    pub message: Option<Box<SlackMessage>>,
    /// `message_changed` / `message_deleted`: the message before.
    #[serde(default)]
    pub previous_message: Option<Box<SlackMessage>>,
    /// `message_deleted`: the ts of the deleted message.
    #[serde(default)]
    pub deleted_ts: Option<Value>,
}

/// A file shared in a message.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct SlackFile {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub permalink: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Edited {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub ts: Option<Value>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl SlackFile {
    /// The file as triage keeps it: a name (the file name, else its title, else its id) and the
    /// permalink.
    pub fn to_ref(&self) -> FileRef {
        let name = [&self.name, &self.title, &self.id]
            .into_iter()
            .flatten()
            .find(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "file".to_owned());
        FileRef {
            name,
            permalink: self.permalink.clone().filter(|p| !p.is_empty()),
        }
    }
}

/// Who the support team is.
#[derive(Debug, Clone, Default)]
pub struct Team {
    /// `TRIAGE_TEAM_USERS`; when non-empty it alone decides.
    pub users: HashSet<String>,
    /// Our bot's user id and bot id: its own messages (the triage cards) are ignored.
    pub bot_user_id: Option<String>,
    pub bot_id: Option<String>,
}

impl Team {
    /// The role of `user`'s message in a workspace `team_id` (the event's).
    pub fn role(&self, user: &str, msg: &SlackMessage, team_id: Option<&str>) -> Role {
        if !self.users.is_empty() {
            return if self.users.contains(user) {
                Role::Agent
            } else {
                Role::Customer
            };
        }
        let author_team = msg.user_team.as_deref().or(msg.team.as_deref());
        match (author_team, team_id) {
            (Some(author), Some(ours)) if author == ours => Role::Agent,
            _ => Role::Customer,
        }
    }

    fn is_own_bot(&self, msg: &SlackMessage) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
        same(&msg.bot_id, &self.bot_id) || same(&msg.user, &self.bot_user_id)
    }
}

/// What a Slack message means for triage.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A message to ingest (a thread broadcast once, in its thread).
    New(IncomingMessage),
    /// The message (channel, ts) now reads `text`.
    Edit {
        channel: String,
        ts: String,
        text: String,
    },
    /// The message (channel, ts) was deleted: kept as a tombstone.
    Delete { channel: String, ts: String },
    /// Not a conversation message; `reason` is its subtype (`bot_message`, `channel_join`, ...)
    /// or one of `own_bot`, `no_user`, `empty`, `unchanged`, `malformed`.
    Ignored { reason: String },
}

impl Item {
    fn ignored(reason: impl Into<String>) -> Item {
        Item::Ignored {
            reason: reason.into(),
        }
    }
}

/// Subtypes that are a person's message in the conversation.
const MESSAGE_SUBTYPES: [&str; 4] = ["file_share", "thread_broadcast", "reply_broadcast", "me_message"];

/// Turns one message of `channel` (the event's `channel`, or an export's folder) in the workspace
/// `team_id` (the event's `team_id`, or the exporting workspace) into an [`Item`].
pub fn interpret(msg: &SlackMessage, channel: &str, team_id: Option<&str>, team: &Team) -> Item {
    checked(interpret_unchecked(msg, channel, team_id, team))
}

/// The item if it keeps the input rules every adapter applies ([`validate`]: no NUL, identifier and
/// text limits), so the live adapter and the import store exactly what the HTTP API would, on
/// both backends; otherwise ignored as `invalid:<field>` (counted, never retried).
fn checked(item: Item) -> Item {
    let rules = |item: &Item| -> Result<(), validate::Invalid> {
        match item {
            Item::New(m) => {
                validate::id("channel", &m.channel)?;
                validate::id("user", &m.user)?;
                validate::text("text", &m.text, validate::MAX_TEXT_CHARS, false)?;
                for (i, f) in m.files.iter().enumerate() {
                    validate::text(
                        &format!("files[{i}].name"),
                        &f.name,
                        validate::MAX_NAME_CHARS,
                        false,
                    )?;
                }
                Ok(())
            }
            Item::Edit { channel, text, .. } => {
                validate::id("channel", channel)?;
                validate::text("text", text, validate::MAX_TEXT_CHARS, false)
            }
            Item::Delete { channel, .. } => validate::id("channel", channel),
            Item::Ignored { .. } => Ok(()),
        }
    };
    match rules(&item) {
        Ok(()) => item,
        Err(e) => Item::ignored(format!("invalid:{}", e.field)),
    }
}

fn interpret_unchecked(msg: &SlackMessage, channel: &str, team_id: Option<&str>, team: &Team) -> Item {
    let channel = msg.channel.as_deref().unwrap_or(channel).to_owned();
    match msg.subtype.as_deref() {
        Some("message_changed") => {
            let Some(after) = msg.message.as_deref() else {
                return Item::ignored("malformed");
            };
            if after.bot_id.is_some() || team.is_own_bot(after) {
                return Item::ignored("bot_message");
            }
            let Some(ts) = ts_of(&after.ts) else {
                return Item::ignored("malformed");
            };
            if after.subtype.as_deref() == Some("tombstone") {
                return Item::Delete { channel, ts };
            }
            let text = after.text.clone().unwrap_or_default();
            let before = msg.previous_message.as_deref();
            // Slack also sends message_changed when only a reply count, an unfurl or a reaction
            // summary changed: the text is the same.
            if before.is_some_and(|b| b.text.as_deref().unwrap_or_default() == text) {
                return Item::ignored("unchanged");
            }
            Item::Edit { channel, ts, text }
        }
        Some("message_deleted") => {
            let deleted = msg
                .deleted_ts
                .as_ref()
                .or(msg.previous_message.as_deref().and_then(|p| p.ts.as_ref()));
            match deleted.and_then(|v| normalize_ts(v).ok()) {
                Some(ts) => Item::Delete { channel, ts },
                None => Item::ignored("malformed"),
            }
        }
        // A deleted thread root that still has replies, as an export shows it.
        Some("tombstone") => match ts_of(&msg.ts) {
            Some(ts) => Item::Delete { channel, ts },
            None => Item::ignored("malformed"),
        },
        None => new_message(msg, channel, team_id, team),
        Some(s) if MESSAGE_SUBTYPES.contains(&s) => new_message(msg, channel, team_id, team),
        Some(other) => Item::ignored(other),
    }
}

fn ts_of(value: &Option<Value>) -> Option<String> {
    value.as_ref().and_then(|v| normalize_ts(v).ok())
}

fn new_message(msg: &SlackMessage, channel: String, team_id: Option<&str>, team: &Team) -> Item {
    if team.is_own_bot(msg) {
        return Item::ignored("own_bot");
    }
    if msg.bot_id.is_some() {
        return Item::ignored("bot_message");
    }
    let Some(user) = msg.user.as_deref().filter(|u| !u.is_empty()) else {
        return Item::ignored("no_user");
    };
    let Some(ts) = ts_of(&msg.ts) else {
        return Item::ignored("malformed");
    };
    let text = msg.text.clone().unwrap_or_default();
    let files: Vec<FileRef> = msg.files.iter().map(SlackFile::to_ref).collect();
    if text.trim().is_empty() && files.is_empty() {
        return Item::ignored("empty");
    }
    Item::New(IncomingMessage {
        role: team.role(user, msg, team_id),
        channel,
        ts,
        thread_ts: ts_of(&msg.thread_ts),
        user: user.to_owned(),
        text,
        files,
        embedding: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> SlackMessage {
        serde_json::from_value(v).unwrap()
    }

    fn team() -> Team {
        Team {
            users: HashSet::new(),
            bot_user_id: Some("UBOT".into()),
            bot_id: Some("BTRIAGE".into()),
        }
    }

    fn new(item: Item) -> IncomingMessage {
        match item {
            Item::New(m) => m,
            other => panic!("not a new message: {other:?}"),
        }
    }

    #[test]
    fn messages_breaking_the_input_rules_are_ignored_as_invalid() {
        let t = team();
        let interpret_json = |v: Value| interpret(&parse(v), "C1", Some("TUS"), &t);
        let nul = interpret_json(
            json!({"type": "message", "user": "U1", "text": "a\u{0}b", "ts": "1700000000.0001"}),
        );
        assert_eq!(nul, Item::ignored("invalid:text"));
        let long = interpret_json(
            json!({"type": "message", "channel": "C".repeat(100_000), "user": "U1",
                                          "text": "hi", "ts": "1700000000.0001"}),
        );
        assert_eq!(long, Item::ignored("invalid:channel"));
        let edit = interpret_json(
            json!({"type": "message", "subtype": "message_changed", "ts": "1700000001.0",
            "message": {"type": "message", "user": "U1", "text": "x\u{0}", "ts": "1700000000.0001"}}),
        );
        assert_eq!(edit, Item::ignored("invalid:text"));
        // Tabs and newlines are text, not a broken rule.
        let ok = interpret_json(
            json!({"type": "message", "user": "U1", "text": "a\tb\nc", "ts": "1700000000.0001"}),
        );
        assert!(matches!(ok, Item::New(_)));
    }

    #[test]
    fn plain_file_share_and_broadcast_messages_are_new() {
        let t = team();
        let m = new(interpret(
            &parse(
                json!({"type": "message", "channel": "C1", "user": "U1", "text": "Login fails",
                          "ts": "1700000000.0001", "team": "TCUST"}),
            ),
            "CIGNORED",
            Some("TUS"),
            &t,
        ));
        assert_eq!(
            (
                m.channel.as_str(),
                m.ts.as_str(),
                m.thread_ts,
                m.role,
                m.text.as_str()
            ),
            ("C1", "1700000000.000100", None, Role::Customer, "Login fails")
        );
        // An attachment-only message counts, with its files.
        let m = new(interpret(
            &parse(
                json!({"type": "message", "subtype": "file_share", "user": "U1", "text": "",
                          "ts": "1700000001.000000", "files": [
                              {"id": "F1", "name": "crash.log", "permalink": "https://x.slack.com/files/U1/F1/crash.log"},
                              {"id": "F2", "title": "screenshot", "permalink": ""},
                              {"id": "F3", "mode": "tombstone"}]}),
            ),
            "C1",
            None,
            &t,
        ));
        assert_eq!(m.channel, "C1");
        assert_eq!(
            m.files,
            vec![
                FileRef {
                    name: "crash.log".into(),
                    permalink: Some("https://x.slack.com/files/U1/F1/crash.log".into())
                },
                FileRef {
                    name: "screenshot".into(),
                    permalink: None
                },
                FileRef {
                    name: "F3".into(),
                    permalink: None
                },
            ]
        );
        // A thread broadcast is one message, in its thread.
        let m = new(interpret(
            &parse(
                json!({"type": "message", "subtype": "thread_broadcast", "user": "U1", "text": "also here",
                          "ts": "1700000002.000000", "thread_ts": "1700000000.000100"}),
            ),
            "C1",
            None,
            &t,
        ));
        assert_eq!(m.thread_ts.as_deref(), Some("1700000000.000100"));
        assert!(m.in_thread());
        // `files: null` and numbers for ts are accepted.
        let m = new(interpret(
            &parse(json!({"user": "U1", "text": "x", "ts": 1700000003, "files": null})),
            "C1",
            None,
            &t,
        ));
        assert_eq!((m.ts.as_str(), m.files.len()), ("1700000003.000000", 0));
    }

    #[test]
    fn edits_deletes_and_tombstones() {
        let t = team();
        let changed = parse(json!({
            "type": "message", "subtype": "message_changed", "channel": "C1", "hidden": true,
            "ts": "1700000100.000000",
            "message": {"type": "message", "user": "U1", "text": "Login fails on iOS", "ts": "1700000000.000100",
                        "edited": {"user": "U1", "ts": "1700000100.000000"}},
            "previous_message": {"type": "message", "user": "U1", "text": "Login fails", "ts": "1700000000.000100"}
        }));
        assert_eq!(
            interpret(&changed, "C1", None, &t),
            Item::Edit {
                channel: "C1".into(),
                ts: "1700000000.000100".into(),
                text: "Login fails on iOS".into()
            }
        );
        // Only a reply count or an unfurl changed: nothing to do.
        let mut same = changed.clone();
        same.message.as_mut().unwrap().text = Some("Login fails".into());
        assert_eq!(interpret(&same, "C1", None, &t), Item::ignored("unchanged"));
        // A root deleted while it has replies becomes a tombstone.
        let mut tomb = changed.clone();
        let inner = tomb.message.as_mut().unwrap();
        inner.subtype = Some("tombstone".into());
        inner.text = Some("This message was deleted.".into());
        let delete = Item::Delete {
            channel: "C1".into(),
            ts: "1700000000.000100".into(),
        };
        assert_eq!(interpret(&tomb, "C1", None, &t), delete);
        let deleted = parse(
            json!({"type": "message", "subtype": "message_deleted", "channel": "C1",
                                   "hidden": true, "ts": "1700000200.000000", "deleted_ts": "1700000000.000100",
                                   "previous_message": {"user": "U1", "text": "Login fails", "ts": "1700000000.000100"}}),
        );
        assert_eq!(interpret(&deleted, "C1", None, &t), delete);
        let mut no_deleted_ts = deleted.clone();
        no_deleted_ts.deleted_ts = None;
        assert_eq!(interpret(&no_deleted_ts, "C1", None, &t), delete);
        // An export's tombstone.
        let export_tomb = parse(
            json!({"type": "message", "subtype": "tombstone", "user": "USLACKBOT",
                                       "text": "This message was deleted.", "ts": "1700000000.000100"}),
        );
        assert_eq!(interpret(&export_tomb, "C1", None, &t), delete);
        // An edit of a bot's message is not ours to track.
        let mut bot_edit = changed;
        bot_edit.message.as_mut().unwrap().bot_id = Some("B9".into());
        assert_eq!(interpret(&bot_edit, "C1", None, &t), Item::ignored("bot_message"));
    }

    #[test]
    fn bots_and_housekeeping_are_ignored_with_their_subtype() {
        let t = team();
        let table = [
            (
                json!({"subtype": "bot_message", "bot_id": "B1", "text": "deploy done", "ts": "1.0"}),
                "bot_message",
            ),
            (
                json!({"user": "UBOT", "bot_id": "BTRIAGE", "text": "New ticket", "ts": "1.0"}),
                "own_bot",
            ),
            (
                json!({"user": "UBOT", "text": "New ticket", "ts": "1.0"}),
                "own_bot",
            ),
            (
                json!({"user": "UAPP", "bot_id": "B7", "text": "workflow", "ts": "1.0"}),
                "bot_message",
            ),
            (
                json!({"subtype": "channel_join", "user": "U1", "text": "<@U1> has joined the channel", "ts": "1.0"}),
                "channel_join",
            ),
            (
                json!({"subtype": "channel_leave", "user": "U1", "text": "<@U1> has left", "ts": "1.0"}),
                "channel_leave",
            ),
            (
                json!({"subtype": "channel_topic", "user": "U1", "topic": "t", "text": "set the topic", "ts": "1.0"}),
                "channel_topic",
            ),
            (
                json!({"subtype": "channel_purpose", "user": "U1", "text": "set the purpose", "ts": "1.0"}),
                "channel_purpose",
            ),
            (
                json!({"subtype": "channel_name", "user": "U1", "text": "renamed", "ts": "1.0"}),
                "channel_name",
            ),
            (
                json!({"subtype": "pinned_item", "user": "U1", "text": "pinned", "ts": "1.0"}),
                "pinned_item",
            ),
            (json!({"user": "U1", "text": "  ", "ts": "1.0"}), "empty"),
            (json!({"text": "who?", "ts": "1.0"}), "no_user"),
            (
                json!({"user": "U1", "text": "when?", "ts": "yesterday"}),
                "malformed",
            ),
            (
                json!({"subtype": "message_changed", "channel": "C1"}),
                "malformed",
            ),
            (
                json!({"subtype": "message_deleted", "channel": "C1"}),
                "malformed",
            ),
        ];
        for (v, reason) in table {
            assert_eq!(
                interpret(&parse(v.clone()), "C1", None, &t),
                Item::ignored(reason),
                "{v}"
            );
        }
    }

    #[test]
    fn who_is_the_team() {
        let slack_connect = team();
        let msg = |user_team: Option<&str>, team: Option<&str>| {
            parse(json!({"user": "U1", "text": "x", "ts": "1.0", "user_team": user_team, "team": team}))
        };
        let role = |t: &Team, m: &SlackMessage, team_id| new(interpret(m, "C1", team_id, t)).role;
        // Slack Connect: the installing workspace's users are the team.
        assert_eq!(
            role(&slack_connect, &msg(Some("TUS"), Some("TUS")), Some("TUS")),
            Role::Agent
        );
        assert_eq!(
            role(&slack_connect, &msg(Some("TCUST"), Some("TCUST")), Some("TUS")),
            Role::Customer
        );
        assert_eq!(
            role(&slack_connect, &msg(None, Some("TUS")), Some("TUS")),
            Role::Agent
        );
        assert_eq!(
            role(&slack_connect, &msg(None, None), Some("TUS")),
            Role::Customer
        );
        assert_eq!(
            role(&slack_connect, &msg(Some("TUS"), None), None),
            Role::Customer
        );
        // Configured users decide alone (customers who are guests of our workspace).
        let configured = Team {
            users: ["U2".to_owned()].into(),
            ..team()
        };
        assert_eq!(
            role(&configured, &msg(Some("TUS"), None), Some("TUS")),
            Role::Customer
        );
        let u2 = parse(json!({"user": "U2", "text": "x", "ts": "1.0", "user_team": "TCUST"}));
        assert_eq!(role(&configured, &u2, Some("TUS")), Role::Agent);
    }

    #[test]
    fn round_trips_through_json() {
        let v = json!({"type": "message", "user": "U1", "text": "hi", "ts": "1700000000.000100",
                       "files": [{"id": "F1", "name": "a.txt", "permalink": "https://p"}],
                       "client_msg_id": "ignored", "blocks": []});
        let m = parse(v);
        let again: SlackMessage = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(m, again);
    }
}
