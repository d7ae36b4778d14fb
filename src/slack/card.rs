//! A conversation's triage card as Block Kit: what it shows and the controls on it. Pure (no I/O):
//! [`render`] turns what the card service gathered into a `chat.postMessage` body, which a
//! `chat.update` of the same card reuses.
//!
//! Controls (`action_id`, read back by `POST /slack/interactivity`): buttons `acknowledge`
//! (closes, as the spec says), `in_progress` and `close`, each with `value` = the conversation
//! id; a status select `set_status`, an owner picker `set_owner` (`users_select`) and a priority
//! select `set_priority`, whose blocks are named `triage:<conversation id>:...` (a select carries
//! no `value`), and the card's metadata names the conversation too.

use serde_json::{json, Value};

use super::api::{Metadata, PostMessage};
use crate::domain::{Conversation, Priority, Status};

/// Characters of the first message shown on the card.
pub const EXCERPT_CHARS: usize = 280;

/// What a card shows besides the conversation itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardContext {
    /// The customer: display name, or the Slack user id when unknown.
    pub customer: Option<String>,
    pub account: Option<String>,
    pub first_message: Option<String>,
    /// Link to the customer's first message (`chat.getPermalink`).
    pub permalink: Option<String>,
    /// Set when the conversation is gone (merged or deleted): the card says so, without controls.
    pub closed_note: Option<String>,
    /// Set on a card left behind when the conversation's card moved to this channel (its new
    /// owner's): the card says where, without controls.
    pub moved_to: Option<String>,
}

pub fn status_label(s: Status) -> &'static str {
    s.display_name()
}

pub fn priority_label(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "Urgent",
        Priority::High => "High",
        Priority::Medium => "Medium",
        Priority::Low => "Low",
        Priority::None => "None",
    }
}

const PRIORITIES: [Priority; 5] = [
    Priority::Urgent,
    Priority::High,
    Priority::Medium,
    Priority::Low,
    Priority::None,
];

/// `text` with at most `max` characters, an ellipsis when cut.
pub fn trim(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn control characters escaped (user text must not become links or mentions).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn option(text: &str, value: &str) -> Value {
    json!({"text": {"type": "plain_text", "text": text}, "value": value})
}

/// The card of `conv` for `channel`.
pub fn render(conv: &Conversation, ctx: &CardContext, channel: &str) -> PostMessage {
    let id = &conv.id;
    let customer = ctx.customer.as_deref().unwrap_or("unknown customer");
    let account = ctx.account.as_deref().unwrap_or("no account");
    let owner = conv
        .owner
        .as_deref()
        .map(|u| format!("<@{u}>"))
        .unwrap_or_else(|| "Unassigned".into());
    let title = trim(
        if conv.title.is_empty() {
            "(untitled)"
        } else {
            &conv.title
        },
        150,
    );
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Customer*\n{}", escape(customer))},
            {"type": "mrkdwn", "text": format!("*Account*\n{}", escape(account))},
            {"type": "mrkdwn", "text": format!("*Status*\n{}", status_label(conv.status))},
            {"type": "mrkdwn", "text": format!("*Priority*\n{}", priority_label(conv.priority))},
            {"type": "mrkdwn", "text": format!("*Owner*\n{owner}")},
            {"type": "mrkdwn", "text": format!("*Messages*\n{}", conv.message_count)},
        ]}),
    ];
    if let Some(first) = ctx.first_message.as_deref().filter(|t| !t.trim().is_empty()) {
        let quoted = escape(&trim(first, EXCERPT_CHARS)).replace('\n', "\n>");
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(">{quoted}")}}));
    }
    let mut context = vec![format!("<#{}>", conv.channel)];
    if let Some(link) = &ctx.permalink {
        context.push(format!("<{link}|View the customer's message>"));
    }
    if let Some(issue) = &conv.linked_issue {
        context.push(format!("<{}|Linked issue> ({})", issue.url, escape(&issue.state)));
    }
    context.push(format!("`{id}`"));
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]}));
    match (&ctx.closed_note, &ctx.moved_to) {
        (Some(note), _) => {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(note)}]}))
        }
        (None, Some(to)) => blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("Moved to <#{}> (its owner's triage channel).", escape(to))}]})),
        (None, None) => blocks.extend(controls(conv)),
    }
    let text = format!(
        "[{}] {} ({})",
        status_label(conv.status),
        escape(&trim(&conv.title, 150)),
        escape(customer)
    );
    PostMessage {
        channel: channel.to_string(),
        text,
        blocks: Some(Value::Array(blocks)),
        thread_ts: None,
        metadata: Some(Metadata::card(id)),
    }
}

fn controls(conv: &Conversation) -> [Value; 2] {
    let id = &conv.id;
    let button = |text: &str, action: &str, style: Option<&str>| {
        let mut b = json!({"type": "button", "text": {"type": "plain_text", "text": text},
                           "action_id": action, "value": id});
        if let Some(s) = style {
            b["style"] = json!(s);
        }
        b
    };
    let statuses: Vec<Value> = Status::ALL
        .iter()
        .map(|s| option(status_label(*s), s.as_str()))
        .collect();
    let priorities: Vec<Value> = PRIORITIES
        .iter()
        .map(|p| option(priority_label(*p), p.as_str()))
        .collect();
    let mut owner = json!({"type": "users_select", "action_id": "set_owner",
                           "placeholder": {"type": "plain_text", "text": "Owner"}});
    if let Some(u) = &conv.owner {
        owner["initial_user"] = json!(u);
    }
    [
        json!({"type": "actions", "block_id": format!("triage:{id}:buttons"), "elements": [
            button("Acknowledge", "acknowledge", Some("primary")),
            button("In Progress", "in_progress", None),
            button("Close", "close", Some("danger")),
        ]}),
        json!({"type": "actions", "block_id": format!("triage:{id}:pickers"), "elements": [
            {"type": "static_select", "action_id": "set_status",
             "placeholder": {"type": "plain_text", "text": "Status"},
             "initial_option": option(status_label(conv.status), conv.status.as_str()),
             "options": statuses},
            owner,
            {"type": "static_select", "action_id": "set_priority",
             "placeholder": {"type": "plain_text", "text": "Priority"},
             "initial_option": option(priority_label(conv.priority), conv.priority.as_str()),
             "options": priorities},
        ]}),
    ]
}

/// The conversation id a card's `block_id` names (`triage:<id>:...`).
pub fn conversation_of_block(block_id: &str) -> Option<&str> {
    let rest = block_id.strip_prefix("triage:")?;
    Some(rest.rsplit_once(':').map_or(rest, |(id, _)| id)).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn conv() -> Conversation {
        let mut c = Conversation::open("CACME", "Login fails <script>".into(), None, Utc::now());
        c.owner = Some("UOWNER".into());
        c.message_count = 3;
        c
    }

    #[test]
    fn a_card_shows_the_ticket_and_carries_its_controls_and_metadata() {
        let c = conv();
        let ctx = CardContext {
            customer: Some("Wile E. Coyote".into()),
            account: Some("Acme".into()),
            first_message: Some(format!("<!channel> {}\nsecond line", "x".repeat(400))),
            permalink: Some("https://acme.slack.com/archives/CACME/p1".into()),
            ..CardContext::default()
        };
        let msg = render(&c, &ctx, "CTRIAGE");
        assert_eq!(msg.channel, "CTRIAGE");
        assert_eq!(
            msg.metadata.as_ref().unwrap().card_conversation(),
            Some(c.id.as_str())
        );
        let blocks = msg.blocks.clone().unwrap();
        let text = blocks.to_string();
        for want in [
            "Wile E. Coyote",
            "Acme",
            "*Status*\\nNew",
            "<@UOWNER>",
            "*Messages*\\n3",
            "View the customer's message",
            "&lt;!channel&gt;",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        // Plain text is shown as is; mrkdwn (the excerpt, the fallback text) is escaped.
        assert_eq!(blocks[0]["text"]["text"], "Login fails <script>");
        assert!(!text.contains("<!channel>"));
        assert!(msg.text.contains("&lt;script&gt;"), "{}", msg.text);
        let excerpt = blocks[2]["text"]["text"].as_str().unwrap();
        let shown = excerpt
            .trim_start_matches('>')
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        assert_eq!(shown.chars().count(), EXCERPT_CHARS, "{excerpt}");
        assert!(excerpt.ends_with('…'), "{excerpt}");
        let actions: Vec<&str> = blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| {
                b["elements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["action_id"].as_str().unwrap())
            })
            .collect();
        assert_eq!(
            actions,
            [
                "acknowledge",
                "in_progress",
                "close",
                "set_status",
                "set_owner",
                "set_priority"
            ]
        );
        for b in blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
        {
            assert_eq!(
                conversation_of_block(b["block_id"].as_str().unwrap()),
                Some(c.id.as_str())
            );
        }
    }

    #[test]
    fn a_closed_note_replaces_the_controls() {
        let ctx = CardContext {
            closed_note: Some("Merged into another conversation".into()),
            ..CardContext::default()
        };
        let blocks = render(&conv(), &ctx, "C").blocks.unwrap();
        assert!(blocks.as_array().unwrap().iter().all(|b| b["type"] != "actions"));
        assert!(blocks.to_string().contains("Merged into"));
    }

    #[test]
    fn a_moved_card_says_where_and_has_no_controls() {
        let ctx = CardContext {
            moved_to: Some("CNEW".into()),
            ..CardContext::default()
        };
        let blocks = render(&conv(), &ctx, "COLD").blocks.unwrap();
        assert!(blocks.as_array().unwrap().iter().all(|b| b["type"] != "actions"));
        assert!(blocks.to_string().contains("Moved to <#CNEW>"), "{blocks}");
    }

    #[test]
    fn block_ids_name_the_conversation() {
        assert_eq!(conversation_of_block("triage:abc-1:pickers"), Some("abc-1"));
        assert_eq!(conversation_of_block("triage:abc-1"), Some("abc-1"));
        assert_eq!(conversation_of_block("other"), None);
        assert_eq!(trim("  short ", 10), "short");
        assert_eq!(trim("abcdef", 4), "abc…");
    }
}
