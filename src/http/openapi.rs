//! `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, written out by hand next to the
//! routes (an integration test checks that every documented operation is served).

use crate::domain::validate as limits;
use serde_json::{json, Value};

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

fn ok(description: &str, name: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn list_of(name: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": schema(name)},
            "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page"}
        }
    })
}

fn errors(codes: &[u16]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/E{code}")}),
        );
    }
    Value::Object(out)
}

fn op(summary: &str, ok_code: &str, ok_response: Value, error_codes: &[u16]) -> Value {
    let mut responses = errors(error_codes);
    responses[ok_code] = ok_response;
    json!({"summary": summary, "responses": responses})
}

/// `op` with a second success answer.
fn also(mut op: Value, code: &str, response: Value) -> Value {
    op["responses"][code] = response;
    op
}

fn with(mut op: Value, key: &str, value: Value) -> Value {
    op[key] = value;
    op
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": description})
}

fn public(op: Value) -> Value {
    with(op, "security", json!([]))
}

/// The document (built once per request: it is small).
pub fn document() -> Value {
    let id = || json!([path_param("id")]);
    let status_enum = json!(["new", "on_you", "in_progress", "on_hold", "closed"]);
    let priority_enum = json!(["urgent", "high", "medium", "low", "none"]);
    let ts = json!({"oneOf": [
        {"type": "string", "pattern": "^[0-9]+(\\.[0-9]*)?$", "example": "1700000000.000100"},
        {"type": "number", "minimum": 1, "maximum": crate::domain::MAX_TS_SECONDS}
    ], "description": "seconds since the epoch, plain decimal (no exponent), from 1 to year 9999"});
    // The limits of `domain::validate`: NUL is refused in every string; identifiers also refuse
    // other control characters and surrounding whitespace.
    let ident = json!({"type": "string", "minLength": 1, "maxLength": limits::MAX_ID_CHARS, "pattern": "^[^\\s\\p{Cc}](.*[^\\s\\p{Cc}])?$"});
    let opt_ident = json!({"oneOf": [ident, {"type": "null"}]});
    let title = json!({"type": "string", "maxLength": limits::MAX_TITLE_CHARS});
    let name = json!({"type": "string", "minLength": 1, "maxLength": limits::MAX_NAME_CHARS});
    let message_in = json!({
        "type": "object",
        "required": ["channel", "ts", "user", "text"],
        "properties": {
            "channel": ident, "ts": ts, "thread_ts": {"oneOf": [ts, {"type": "null"}]},
            "user": ident, "text": {"type": "string", "minLength": 1, "maxLength": limits::MAX_TEXT_CHARS, "description": "not blank"},
            "role": {"enum": ["customer", "agent"], "description": "default: agent for TRIAGE_TEAM_USERS, else customer"},
            "files": {"type": "array", "items": schema("File"), "description": "kept on the message (/v1/messages); an attachment-only message may have empty text"},
            "dry_run": {"type": "boolean", "default": false}
        }
    });
    let import_form = json!({
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/zip", "description": "the export (channels.json, users.json, <channel>/<YYYY-MM-DD>.json), or slackdump's output"},
            "channels": {"type": "string", "description": "comma-separated channel names or ids"},
            "team_users": {"type": "string", "description": "comma-separated Slack user ids (default: TRIAGE_TEAM_USERS, else the export's own workspace members)"},
            "since": {"type": "string", "description": "YYYY-MM-DD or RFC 3339"},
            "until": {"type": "string", "description": "YYYY-MM-DD (included) or RFC 3339"},
            "dry_run": {"type": "boolean"}
        }
    });
    let import_op = with(
        op(
            "Import a Slack export zip as a background job (same import as `triage import slack-export`)",
            "202",
            ok("the job started", "ImportStarted"),
            &[400, 401, 413, 422, 503],
        ),
        "requestBody",
        json!({"required": true, "content": {"multipart/form-data": {"schema": import_form}}}),
    );
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "triage",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted support ticketing with local models. `/v1/*` needs a bearer token; errors are `{\"error\": {\"code\", \"message\", \"field\"}}`."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": public(op("Liveness", "200", json!({"description": "alive"}), &[]))},
            "/readyz": {"get": public(op("Readiness: models warm and database reachable", "200", json!({"description": "ready"}), &[503]))},
            "/metrics": {"get": public(op("Prometheus metrics (OpenMetrics text)", "200", json!({"description": "metrics"}), &[]))},
            "/openapi.json": {"get": public(op("This document", "200", json!({"description": "OpenAPI 3.1"}), &[]))},
            "/v1/embed": {"post": with(op("Sentence embeddings (text-embeddings-inference shape), L2-normalised", "200",
                json!({"description": "one 384-float vector per input", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}}),
                &[400, 401, 413, 422, 429, 503]), "requestBody", body("EmbedRequest"))},
            "/v1/classify": {"post": with(op("Status label of a team reply (or a list of them for `inputs`)", "200", ok("a result, or a list of results for `inputs`", "Classification"), &[400, 401, 413, 422, 429, 503]), "requestBody", body("ClassifyRequest"))},
            "/v1/group": {"post": with(op("Conversation of a message (stateful per channel, in memory)", "200", ok("decision", "GroupDecision"), &[400, 401, 413, 422, 429, 503]), "requestBody", json!({"required": true, "content": {"application/json": {"schema": message_in.clone()}}}))},
            "/v1/messages": {"post": with(op("Ingest one message through the whole pipeline (store, group, classify, status)", "201", ok("stored", "Ingested"), &[400, 401, 413, 422, 429, 503]), "requestBody", json!({"required": true, "content": {"application/json": {"schema": message_in}}}))},
            "/v1/messages/{id}/move": {"post": with(with(op("Move a message to a conversation; null splits it into a new one", "200", ok("moved", "Moved"), &[401, 404, 409, 422]), "parameters", id()), "requestBody", body("MoveRequest"))},
            "/v1/conversations": {
                "get": with(op("List conversations, newest first", "200", json!({"description": "a page", "content": {"application/json": {"schema": list_of("Conversation")}}}), &[401, 422]), "parameters", json!([
                    query_param("status", "one of the statuses"), query_param("owner", "Slack user id"),
                    query_param("account", "account id"), query_param("channel", "Slack channel id"),
                    query_param("q", "full-text search over message text (at most 500 characters)"), query_param("cursor", "from next_cursor of the same query (another query's cursor: 400)"),
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
                ])),
                "post": with(op("Create a conversation by hand", "201", ok("created", "Conversation"), &[400, 401, 422]), "requestBody", body("NewConversation"))
            },
            "/v1/conversations/{id}": {
                "parameters": id(),
                "get": op("A conversation", "200", ok("the conversation", "Conversation"), &[401, 404]),
                "patch": with(op("Change status, owner, priority, title or linked issue (recorded as a human event)", "200", ok("updated", "Conversation"), &[400, 401, 404, 409, 422]), "requestBody", body("ConversationPatch")),
                "delete": op("Delete a conversation and its messages", "204", json!({"description": "deleted"}), &[401, 404])
            },
            "/v1/conversations/{id}/messages": {"get": with(op("Its messages, oldest first", "200", json!({"description": "a page", "content": {"application/json": {"schema": list_of("Message")}}}), &[401, 404, 422]), "parameters", id())},
            "/v1/conversations/{id}/events": {"get": with(op("Its events (status, owner, priority, grouping changes)", "200", json!({"description": "a page", "content": {"application/json": {"schema": list_of("Event")}}}), &[401, 404, 422]), "parameters", id())},
            "/v1/conversations/{id}/notes": {
                "parameters": id(),
                "get": op("Its internal notes, oldest first", "200", json!({"description": "a page", "content": {"application/json": {"schema": list_of("Note")}}}), &[401, 404, 422]),
                "post": with(also(op("Add an internal note (author: X-Triage-User); never sent to the customer, never classified. With `slack` (the card-thread reply it is), adding it again answers 200 with the stored note", "201", ok("added", "Note"), &[400, 401, 404, 413, 422]), "200", ok("added before (same slack channel and ts)", "Note")), "requestBody", body("NoteInput"))
            },
            "/v1/conversations/{id}/merge": {"post": with(with(op("Merge this conversation into another", "200", ok("the resulting conversation", "Merged"), &[401, 404, 409, 422]), "parameters", id()), "requestBody", body("MergeRequest"))},
            "/v1/accounts": {
                "get": op("Accounts", "200", json!({"description": "all accounts", "content": {"application/json": {"schema": list_of("Account")}}}), &[401]),
                "post": with(op("Create an account", "201", ok("created", "Account"), &[400, 401, 409, 422]), "requestBody", body("AccountInput"))
            },
            "/v1/accounts/{id}": {
                "parameters": id(),
                "get": op("An account", "200", ok("the account", "Account"), &[401, 404]),
                "patch": with(op("Change name, owner or channels", "200", ok("updated", "Account"), &[400, 401, 404, 409, 422]), "requestBody", body("AccountInput"))
            },
            "/v1/team": {"get": op("Team members", "200", json!({"description": "all members", "content": {"application/json": {"schema": list_of("TeamMember")}}}), &[401])},
            "/v1/team/{slack_user_id}": {"put": with(with(op("Add or update a team member", "200", ok("stored", "TeamMember"), &[400, 401, 422]), "parameters", json!([path_param("slack_user_id")])), "requestBody", body("TeamMemberInput"))},
            "/v1/webhooks/issues": {"post": with(public(op("Issue-tracker events: GitHub (X-Hub-Signature-256), Linear (Linear-Signature) or generic {url, state} with a bearer token", "200", json!({"description": "conversations changed"}), &[400, 401, 422])), "requestBody", json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}))},
            "/slack/events": {"post": public(op("Slack Events API: verified with X-Slack-Signature before parsing (401 otherwise; 403 without TRIAGE_SLACK_SIGNING_SECRET); url_verification answers {challenge}; an event_callback is stored in the inbox and acknowledged at once ({ok: true}), retries (X-Slack-Retry-Num) included, then processed in order by a worker", "200", json!({"description": "acknowledged, or {\"challenge\"} for url_verification"}), &[400, 401, 403, 413, 422, 503]))},
            "/slack/interactivity": {"post": with(public(op("Slack block actions on triage cards (signed with X-Slack-Signature): acknowledge and close close, in_progress, set_status, set_owner, set_priority; a refused change is answered ephemerally via response_url", "200", json!({"description": "acknowledged (empty body)"}), &[400, 401, 403])), "requestBody", json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["payload"], "properties": {"payload": {"type": "string", "description": "the interaction payload, JSON"}}}}}}))},
            "/v1/export/labels": {"get": with(op("Labels for retraining as JSONL (application/x-ndjson)", "200", json!({"description": "one JSON object per line", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}), &[401, 422]), "parameters", json!([
                {"name": "kind", "in": "query", "required": true, "schema": {"enum": ["status", "grouping"]}},
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}}
            ]))},
            "/v1/analytics": {"get": op("First-response time, time to close, open conversations per owner", "200", json!({"description": "analytics", "content": {"application/json": {"schema": {"type": "object"}}}}), &[401])}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a token from TRIAGE_API_TOKENS"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "field"], "properties": {
                    "code": {"enum": ["bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "timeout", "conflict", "payload_too_large", "invalid_request", "overloaded", "unavailable", "internal"], "description": "one per status: 400 bad_request, 401 unauthorized, 403 forbidden, 404 not_found, 405 method_not_allowed, 408 timeout, 409 conflict, 413 payload_too_large, 422 invalid_request, 429 overloaded, 503 unavailable, 500 internal"}, "message": {"type": "string", "description": "for people: names the input and the rule"}, "field": {"type": ["string", "null"], "description": "the input at fault as a JSON path (`linked_issue.url`, `channels[2]`), a query parameter, `body`, `path` or `authorization`; null when no one input is (overload, unavailability, internal errors)"}}}}},
                "EmbedRequest": {"type": "object", "required": ["inputs"], "properties": {"inputs": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}}},
                "ClassifyRequest": {"type": "object", "properties": {"text": {"type": "string"}, "role": {"enum": ["agent", "customer"]}, "inputs": {"type": "array", "items": {"type": "string"}}}},
                "Classification": {"type": "object", "required": ["label", "scores", "model"], "properties": {
                    "label": {"enum": ["in_progress", "closed"]},
                    "scores": {"type": "object", "properties": {"in_progress": {"type": "number"}, "closed": {"type": "number"}}},
                    "model": {"type": "string", "example": "status@82dfe389521d"}}},
                "Reason": {"type": "object", "required": ["signal", "detail", "weight"], "properties": {
                    "signal": {"enum": ["thread", "mention", "author", "time", "similarity"]}, "detail": {"type": "string"}, "weight": {"type": "number"}}},
                "GroupDecision": {"type": "object", "required": ["conversation_id", "new", "confidence", "reasons"], "properties": {
                    "conversation_id": {"type": "string"}, "new": {"type": "boolean"}, "confidence": {"type": "number"},
                    "reasons": {"type": "array", "items": {"type": "object"}}, "candidates": {"type": "array", "items": {"type": "object"}}}},
                "LinkedIssue": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+", "maxLength": limits::MAX_URL_CHARS},
                    "provider": {"oneOf": [{"enum": limits::ISSUE_PROVIDERS}, {"type": "null"}]}, "key": opt_ident,
                    "state": {"enum": limits::ISSUE_STATES, "default": "open"}}},
                "Conversation": {"type": "object", "properties": {
                    "id": {"type": "string"}, "status": {"enum": status_enum}, "priority": {"enum": priority_enum},
                    "owner": {"type": ["string", "null"]}, "account_id": {"type": ["string", "null"]}, "channel": {"type": "string"},
                    "title": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "first_response_at": {"type": ["string", "null"], "format": "date-time"}, "closed_at": {"type": ["string", "null"], "format": "date-time"},
                    "linked_issue": {"oneOf": [schema("LinkedIssue"), {"type": "null"}]}, "message_count": {"type": "integer"}}},
                "ConversationPatch": {"type": "object", "properties": {
                    "status": {"enum": status_enum}, "owner": opt_ident, "priority": {"enum": priority_enum},
                    "title": title,
                    "linked_issue": {"oneOf": [schema("LinkedIssue"), {"type": "null"}]}}},
                "NewConversation": {"type": "object", "required": ["channel"], "properties": {
                    "channel": ident, "title": title, "status": {"enum": status_enum},
                    "priority": {"enum": priority_enum}, "owner": opt_ident, "account_id": opt_ident,
                    "linked_issue": {"oneOf": [schema("LinkedIssue"), {"type": "null"}]}}},
                "Message": {"type": "object", "properties": {
                    "id": {"type": "string"}, "conversation_id": {"type": "string"}, "channel": {"type": "string"}, "ts": {"type": "string"},
                    "thread_ts": {"type": ["string", "null"]}, "user": {"type": "string"}, "role": {"enum": ["customer", "agent"]},
                    "text": {"type": "string"}, "files": {"type": "array", "items": schema("File")},
                    "edited": {"type": "boolean", "description": "edited at its source (Slack message_changed)"},
                    "deleted": {"type": "boolean", "description": "a tombstone: deleted at its source, kept for the history"},
                    "label": {"enum": ["in_progress", "closed", null]}, "score": {"type": ["number", "null"]}}},
                "Note": {"type": "object", "required": ["id", "conversation_id", "kind", "author", "text", "created_at"], "properties": {
                    "id": {"type": "string"}, "conversation_id": {"type": "string"}, "kind": {"const": "note"},
                    "author": {"type": "string"}, "text": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "slack_channel": {"type": ["string", "null"]}, "slack_ts": {"type": ["string", "null"], "description": "the card-thread reply it came from"}}},
                "NoteInput": {"type": "object", "required": ["text"], "additionalProperties": false, "properties": {"text": {"type": "string", "maxLength": 40000}}},
                "File": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "permalink": {"type": ["string", "null"]}}, "description": "a file shared with the message (Slack file_share)"},
                "Event": {"type": "object", "properties": {
                    "id": {"type": "string"}, "conversation_id": {"type": "string"}, "kind": {"enum": ["status", "owner", "priority", "grouping"]},
                    "actor": {"type": "string", "example": "human:U123"}, "message_id": {"type": ["string", "null"]},
                    "before": {"type": ["string", "null"]}, "after": {"type": ["string", "null"]},
                    "model_label": {"type": ["string", "null"]}, "model_score": {"type": ["number", "null"]}, "at": {"type": "string", "format": "date-time"}}},
                "Ingested": {"type": "object", "required": ["message", "conversation", "reasons"], "properties": {
                    "message": schema("Message"), "conversation": schema("Conversation"), "reasons": {"type": "array", "items": schema("Reason")}}},
                "MoveRequest": {"type": "object", "required": ["conversation_id"], "properties": {"conversation_id": {"type": ["string", "null"]}}},
                "MergeRequest": {"type": "object", "required": ["into"], "properties": {"into": {"type": "string"}}},
                "Merged": {"type": "object", "required": ["conversation"], "properties": {"conversation": schema("Conversation")}},
                "Moved": {"type": "object", "required": ["conversation", "message"], "properties": {"conversation": schema("Conversation"), "message": schema("Message")}},
                "Account": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "owner": {"type": ["string", "null"]}, "channels": {"type": "array", "items": {"type": "string"}}}},
                "AccountInput": {"type": "object", "properties": {"name": name, "owner": opt_ident, "channels": {"type": "array", "items": ident}}},
                "TeamMember": {"type": "object", "properties": {"slack_user_id": {"type": "string"}, "name": {"type": "string"}, "triage_channel": {"type": ["string", "null"]}}},
                "TeamMemberInput": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "triage_channel": {"type": ["string", "null"]}}}
            },
            "responses": {}
        }
    });
    // Added apart: the document above is at the json! macro's recursion limit.
    // The Slack edge's routes (src/slack/remote.rs).
    doc["components"]["schemas"]["NoteInput"]["properties"]["slack"] = json!({"type": ["object", "null"], "required": ["channel", "ts"], "additionalProperties": false,
        "description": "the Slack message this note is (a reply in a triage card's thread)",
        "properties": {"channel": {"type": "string"}, "ts": {"type": ["string", "number"]}}});
    doc["components"]["schemas"]["SourceEdit"] = json!({"type": "object", "required": ["text"], "additionalProperties": false, "properties": {"text": {"type": "string", "maxLength": 40000}}});
    doc["components"]["schemas"]["SourceEdited"] = json!({"type": "object", "required": ["message", "conversation", "changed"], "properties": {
        "message": schema("Message"), "conversation": schema("Conversation"),
        "changed": {"type": "boolean", "description": "false when the message already read so (or was already deleted)"}}});
    doc["paths"]["/v1/channels/{channel}/messages/{ts}"] = json!({
        "parameters": [path_param("channel"), path_param("ts")],
        "patch": with(op("A message edited at its source (Slack's message_changed): the text is replaced, an edited team reply classified again (the status follows when the model had set it from that reply); 404 when (channel, ts) was never stored", "200", ok("edited", "SourceEdited"), &[400, 401, 404, 413, 422, 429, 503]), "requestBody", body("SourceEdit")),
        "delete": op("A message deleted at its source (Slack's message_deleted): kept as a tombstone (`deleted: true`); 404 when (channel, ts) was never stored", "200", ok("deleted", "SourceEdited"), &[401, 404, 422])
    });
    doc["paths"]["/v1/events"] = json!({"get": op("The core's committed changes as server-sent events (text/event-stream), for a Slack edge's cards: `hello` (id = the current position), then `change` events whose data is one change as JSON (`type`: conversation_created, message_added, message_edited, message_deleted, note_added, status_changed, owner_changed, priority_changed, title_changed, merged, moved, conversation_deleted) with id `<epoch>:<seq>`. Reconnect with Last-Event-ID to get the changes after it first; `lagged` says changes were missed (another epoch, too far behind): re-read. A stream ends after 30 s", "200", json!({"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}), &[401])});
    doc["paths"]["/v1/import"] = json!({"post": import_op});
    doc["paths"]["/v1/import/{id}"] = json!({"get": with(op("Progress of an import and, once done, its summary", "200", ok("the job", "ImportJob"), &[401, 404]), "parameters", id())});
    doc["components"]["schemas"]["ImportStarted"] = json!({"type": "object", "required": ["id", "state", "url"], "properties": {"id": {"type": "string"}, "state": {"const": "running"}, "url": {"type": "string"}}});
    doc["components"]["schemas"]["ImportJob"] = json!({"type": "object", "required": ["id", "state", "total", "done"], "properties": {
        "id": {"type": "string"}, "state": {"enum": ["running", "done", "failed"]},
        "total": {"type": "integer", "description": "messages to go through"}, "done": {"type": "integer"},
        "summary": {"type": ["object", "null"], "description": "once done: messages_imported, duplicates_skipped, ignored, conversations, channels, seconds, ignored_subtypes, repeats_merged, thread_replies, deleted, placeholder_users, team_users, team_source, dry_run"},
        "error": {"type": ["string", "null"], "description": "why it failed, e.g. the malformed file and line"},
        "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}});
    for (code, what) in [
        (400, "malformed request (unparsable JSON)"),
        (401, "missing or invalid credentials"),
        (403, "forbidden"),
        (404, "not found"),
        (409, "conflict with the current state"),
        (413, "body over 1 MiB"),
        (422, "well-formed but invalid; `field` names the input"),
        (429, "overloaded; see Retry-After"),
        (503, "models loading or database unavailable"),
    ] {
        doc["components"]["responses"][format!("E{code}")] =
            json!({"description": what, "content": {"application/json": {"schema": schema("Error")}}});
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` points at something defined, and every operation has a 2xx response.
    #[test]
    fn references_resolve_and_operations_answer() {
        let doc = document();
        fn walk(v: &Value, doc: &Value, refs: &mut usize) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let ptr = r.trim_start_matches('#');
                        assert!(doc.pointer(ptr).is_some(), "dangling {r}");
                        *refs += 1;
                    }
                    m.values().for_each(|x| walk(x, doc, refs));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, refs)),
                _ => {}
            }
        }
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 50);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
                assert!(
                    codes.iter().any(|c| c.starts_with('2')),
                    "{method} {path}: {codes:?}"
                );
            }
        }
    }
}
