//! Accounts (a customer, owning Slack channels) and team members.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub channels: Vec<String>,
}

/// The account a channel belongs to and its owner, as a new conversation there inherits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    pub id: String,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Option<String>>,
    pub channels: Option<Vec<String>>,
}

impl AccountPatch {
    /// The account after this patch.
    pub fn apply(self, current: Account) -> AccountInput {
        AccountInput {
            name: self.name.unwrap_or(current.name),
            owner: self.owner.unwrap_or(current.owner),
            channels: self.channels.unwrap_or(current.channels),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamMember {
    pub slack_user_id: String,
    pub name: String,
    pub triage_channel: Option<String>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None, via `default`).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}
