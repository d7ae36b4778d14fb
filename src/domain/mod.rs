//! The domain: what a conversation, a message and an event are, and every rule that changes them
//! (the status machine, patches, merges, moves and splits, a linked issue closing, planning an
//! ingested message). Pure code: no SQL, HTTP, Slack or models. Callers load state, ask here, and
//! persist the answer (the store) or publish it (the pipeline's event bus).

mod account;
mod change;
mod conversation;
mod edit;
mod error;
mod event;
mod ingest;
mod message;
mod note;
mod regroup;
pub mod status;
pub mod validate;

pub use account::{Account, AccountInput, AccountPatch, AccountRef, TeamMember};
pub use change::Change;
pub use conversation::{
    apply_issue_closed, apply_issue_reopened, apply_patch, build_conversation, human_label, title_from,
    Conversation, ConversationPatch, IssueChange, LinkedIssue, NewConversation, Priority,
};
pub use edit::{apply_delete, apply_edit, Edited, MessageEdit};
pub use error::DomainError;
pub use event::{Actor, Event, EventKind};
pub use ingest::{
    plan_ingest, ChannelContext, ContextMessage, IngestPlan, Prediction, CONTEXT_MESSAGES, OPEN_CONVERSATIONS,
};
pub use message::{normalize_ts, ts_to_time, BadTs, FileRef, IncomingMessage, Message, Role, MAX_TS_SECONDS};
pub use note::{build_note, NewNote, Note, NoteKind, SlackRef, MAX_NOTE_CHARS};
pub use regroup::{apply_merge, apply_move, check_merge, check_move, split_conversation};
pub use status::{ReplyLabel, Status};

/// A new public identifier (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
