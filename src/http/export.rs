//! Label exports as JSONL, in the training formats of `shared/data/README.md`.

use crate::pipeline::ts_to_time;
use crate::store::GroupingRow;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn jsonl<T: Serialize>(rows: &[T]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(row)?);
        out.push('\n');
    }
    Ok(out)
}

/// The grouping stream format: per channel in ts order, `idx` counts from 0; messages of
/// human-corrected conversations are `eval` with `gold` (`channel:first idx`) and `parents`
/// (the previous message of the same conversation, or itself when it starts one). Other messages
/// are unannotated context, as in the Ubuntu corpus. `rows` come grouped by channel, in ts order.
pub fn grouping_stream(rows: &[GroupingRow]) -> Vec<Value> {
    let mut out = Vec::with_capacity(rows.len());
    let mut last_in_conversation: HashMap<&str, usize> = HashMap::new();
    let mut first_in_conversation: HashMap<&str, usize> = HashMap::new();
    let mut channel: Option<&str> = None;
    let mut idx = 0;
    for (id, row) in rows.iter().enumerate() {
        let m = &row.message;
        if channel != Some(m.channel.as_str()) {
            channel = Some(&m.channel);
            idx = 0;
        }
        let conv = m.conversation_id.as_str();
        let first = *first_in_conversation.entry(conv).or_insert(idx);
        let parent = last_in_conversation.insert(conv, idx).unwrap_or(idx);
        let (gold, parents) = if row.human_corrected {
            (format!("{}:{first}", m.channel), vec![parent])
        } else {
            (format!("{}:{idx}", m.channel), vec![])
        };
        out.push(json!({
            "id": id,
            "channel": m.channel,
            "idx": idx,
            "ts": ts_to_time(&m.ts).map(|t| t.timestamp_micros() as f64 / 1e6),
            "user": m.user,
            "text": m.text,
            "kind": "msg",
            "system": false,
            "thread_ts": m.thread_ts,
            "role": m.role,
            "eval": row.human_corrected,
            "gold": gold,
            "parents": parents,
        }));
        idx += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Message, Role};

    fn row(channel: &str, ts: &str, conv: &str, corrected: bool) -> GroupingRow {
        GroupingRow {
            message: Message {
                id: ts.into(),
                conversation_id: conv.into(),
                channel: channel.into(),
                ts: ts.into(),
                thread_ts: None,
                user: "U".into(),
                role: Role::Customer,
                text: "t".into(),
                files: Vec::new(),
                edited: false,
                deleted: false,
                label: None,
                score: None,
            },
            human_corrected: corrected,
        }
    }

    #[test]
    fn corrected_conversations_become_gold_chains() {
        let rows = [
            row("C1", "1.000000", "a", true),
            row("C1", "2.000000", "b", false),
            row("C1", "3.000000", "a", true),
            row("C2", "1.000000", "c", true),
        ];
        let out = grouping_stream(&rows);
        let pick = |i: usize| {
            (
                out[i]["idx"].clone(),
                out[i]["gold"].clone(),
                out[i]["parents"].clone(),
                out[i]["eval"].clone(),
            )
        };
        assert_eq!(pick(0), (json!(0), json!("C1:0"), json!([0]), json!(true)));
        assert_eq!(pick(1), (json!(1), json!("C1:1"), json!([]), json!(false)));
        assert_eq!(pick(2), (json!(2), json!("C1:0"), json!([0]), json!(true)));
        assert_eq!(pick(3), (json!(0), json!("C2:0"), json!([0]), json!(true)));
        assert_eq!(out[3]["id"], json!(3));
        assert_eq!(out[2]["ts"], json!(3.0));
    }
}
