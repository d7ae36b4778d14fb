//! The status machine: every rule that moves a conversation between statuses, in one place.
//! Pure logic: callers load the conversation, ask here, and persist the answer.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    OnYou,
    InProgress,
    OnHold,
    Closed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::New,
        Status::OnYou,
        Status::InProgress,
        Status::OnHold,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::OnYou => "on_you",
            Status::InProgress => "in_progress",
            Status::OnHold => "on_hold",
            Status::Closed => "closed",
        }
    }

    /// The name people read (board columns, Slack cards): "On You", "In Progress", ...
    pub fn display_name(self) -> &'static str {
        match self {
            Status::New => "New",
            Status::OnYou => "On You",
            Status::InProgress => "In Progress",
            Status::OnHold => "On Hold",
            Status::Closed => "Closed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What the reply classifier may conclude about a team reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyLabel {
    InProgress,
    Closed,
}

impl ReplyLabel {
    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    pub fn status(self) -> Status {
        match self {
            ReplyLabel::InProgress => Status::InProgress,
            ReplyLabel::Closed => Status::Closed,
        }
    }
}

impl FromStr for ReplyLabel {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in_progress" => Ok(ReplyLabel::InProgress),
            "closed" => Ok(ReplyLabel::Closed),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// Something that happened to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A customer wrote; `in_thread` when the message is a reply in the conversation's Slack thread.
    CustomerMessage { in_thread: bool },
    /// A team member replied and the classifier labelled the reply.
    TeamReply(ReplyLabel),
    /// The linked issue-tracker issue was closed.
    IssueClosed,
    /// A person set the status by hand.
    HumanSet { to: Status, has_linked_issue: bool },
}

/// Why the machine refused a transition (a 422 for the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("on_hold needs a linked issue")]
    OnHoldWithoutIssue,
}

/// The status after `trigger`, or a refusal. Unchanged status is a valid answer.
pub fn next(current: Status, trigger: Trigger) -> Result<Status, Refusal> {
    use Status::*;
    Ok(match trigger {
        Trigger::CustomerMessage { in_thread } => match current {
            New => New,
            // A closed conversation only takes replies in its own thread; the pipeline starts a
            // new conversation otherwise (see `accepts`), so reaching here outside a thread keeps it closed.
            Closed if !in_thread => Closed,
            OnYou | InProgress | OnHold | Closed => OnYou,
        },
        // A progress update does not end a wait on the linked issue; a concluding reply does.
        Trigger::TeamReply(ReplyLabel::InProgress) if current == OnHold => OnHold,
        Trigger::TeamReply(label) => label.status(),
        Trigger::IssueClosed => match current {
            OnHold => OnYou,
            other => other,
        },
        Trigger::HumanSet {
            to: OnHold,
            has_linked_issue: false,
        } => return Err(Refusal::OnHoldWithoutIssue),
        Trigger::HumanSet { to, .. } => to,
    })
}

/// Whether a message may join a conversation in `status`: a closed conversation is reopened only
/// from inside its thread; anything else the grouper sends there starts a new conversation.
pub fn accepts(status: Status, in_thread: bool) -> bool {
    status != Status::Closed || in_thread
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReplyLabel as L;
    use Status::*;
    use Trigger::*;

    #[test]
    fn transition_table() {
        let cust = CustomerMessage { in_thread: false };
        let cust_thread = CustomerMessage { in_thread: true };
        let set = |to, has_linked_issue| HumanSet { to, has_linked_issue };
        let table: &[(Status, Trigger, Result<Status, Refusal>)] = &[
            (New, cust, Ok(New)),
            (New, cust_thread, Ok(New)),
            (New, TeamReply(L::InProgress), Ok(InProgress)),
            (New, TeamReply(L::Closed), Ok(Closed)),
            (InProgress, cust, Ok(OnYou)),
            (InProgress, cust_thread, Ok(OnYou)),
            (InProgress, TeamReply(L::InProgress), Ok(InProgress)),
            (InProgress, TeamReply(L::Closed), Ok(Closed)),
            (OnYou, cust, Ok(OnYou)),
            (OnYou, TeamReply(L::InProgress), Ok(InProgress)),
            (OnYou, TeamReply(L::Closed), Ok(Closed)),
            (Closed, cust_thread, Ok(OnYou)),
            (Closed, cust, Ok(Closed)),
            (Closed, TeamReply(L::InProgress), Ok(InProgress)),
            (OnHold, cust, Ok(OnYou)),
            (OnHold, TeamReply(L::InProgress), Ok(OnHold)),
            (OnHold, TeamReply(L::Closed), Ok(Closed)),
            (OnHold, IssueClosed, Ok(OnYou)),
            (InProgress, IssueClosed, Ok(InProgress)),
            (Closed, IssueClosed, Ok(Closed)),
            (New, set(OnHold, false), Err(Refusal::OnHoldWithoutIssue)),
            (New, set(OnHold, true), Ok(OnHold)),
            (Closed, set(New, false), Ok(New)),
            (OnHold, set(InProgress, true), Ok(InProgress)),
            (InProgress, set(Closed, false), Ok(Closed)),
        ];
        for (from, trigger, want) in table {
            assert_eq!(next(*from, *trigger), *want, "{from} + {trigger:?}");
        }
    }

    #[test]
    fn closed_accepts_only_thread_replies() {
        assert!(accepts(Closed, true));
        assert!(!accepts(Closed, false));
        for st in [New, OnYou, InProgress, OnHold] {
            assert!(accepts(st, false));
        }
    }

    #[test]
    fn status_round_trips_through_text() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>(), Ok(st));
        }
        assert!("open".parse::<Status>().is_err());
    }
}
