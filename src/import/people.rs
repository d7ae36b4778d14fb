//! Who wrote what: names from `users.json` (a placeholder for anyone missing, such as external
//! Slack Connect users or deleted accounts) and which authors are the support team.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::ExportUser;

/// Where the team came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamSource {
    /// `--team-users`.
    Flag,
    /// `TRIAGE_TEAM_USERS` / `team_users` in the configuration file.
    Configured,
    /// The export's own workspace members, told apart from external users by `team_id`.
    Workspace,
    /// No team known: every message is a customer's.
    #[default]
    None,
}

pub struct People {
    names: HashMap<String, String>,
    /// The `team_id` most of users.json shares: the exporting workspace.
    home: Option<String>,
    team: HashSet<String>,
    source: TeamSource,
}

impl People {
    pub fn new(users: &[ExportUser], flag: &HashSet<String>, configured: &HashSet<String>) -> Self {
        let names = users.iter().map(|u| (u.id.clone(), u.name.clone())).collect();
        let (team, source) = if !flag.is_empty() {
            (flag.clone(), TeamSource::Flag)
        } else if !configured.is_empty() {
            (configured.clone(), TeamSource::Configured)
        } else {
            match workspace_members(users) {
                Some(team) => (team, TeamSource::Workspace),
                None => (HashSet::new(), TeamSource::None),
            }
        };
        if source == TeamSource::None {
            tracing::warn!(
                "no support team known (--team-users, TRIAGE_TEAM_USERS, or an export with external users): \
                 every message is imported as a customer's"
            );
        }
        People {
            names,
            home: home_team(users).map(str::to_owned),
            team,
            source,
        }
    }

    pub fn is_team(&self, user: &str) -> bool {
        self.team.contains(user)
    }

    /// The team's user ids (empty: the message's own workspace decides, see `home_team`).
    pub fn team(&self) -> &HashSet<String> {
        &self.team
    }

    /// The exporting workspace's id, when users.json tells it: a message whose `user_team` is
    /// another workspace's is a customer's (Slack Connect).
    pub fn home_team(&self) -> Option<&str> {
        self.home.as_deref()
    }

    pub fn is_known(&self, user: &str) -> bool {
        self.names.contains_key(user)
    }

    /// The user's name, or a placeholder for one missing from users.json.
    pub fn name(&self, user: &str) -> String {
        self.names
            .get(user)
            .cloned()
            .unwrap_or_else(|| format!("unknown user {user}"))
    }

    pub fn team_size(&self) -> usize {
        self.team.len()
    }

    pub fn source(&self) -> TeamSource {
        self.source
    }
}

/// When users.json holds people of more than one workspace (Slack Connect), the members of the
/// export's own workspace (the `team_id` most of its people share) are the team, bots excluded.
fn workspace_members(users: &[ExportUser]) -> Option<HashSet<String>> {
    let teams: HashSet<&str> = users.iter().filter_map(|u| u.team_id.as_deref()).collect();
    if teams.len() < 2 {
        return None;
    }
    let home = home_team(users)?;
    Some(
        users
            .iter()
            .filter(|u| u.team_id.as_deref() == Some(home) && !u.is_bot)
            .map(|u| u.id.clone())
            .collect(),
    )
}

/// The `team_id` most people of users.json share.
fn home_team(users: &[ExportUser]) -> Option<&str> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for u in users {
        if let Some(t) = u.team_id.as_deref() {
            *counts.entry(t).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, team: &str) -> ExportUser {
        ExportUser {
            id: id.into(),
            name: format!("name of {id}"),
            team_id: Some(team.into()),
            is_bot: false,
        }
    }

    #[test]
    fn team_from_flag_configuration_or_workspace() {
        let users = [user("U1", "T1"), user("U2", "T1"), user("X1", "T2")];
        let none = HashSet::new();
        let p = People::new(&users, &none, &none);
        assert_eq!((p.source(), p.home_team()), (TeamSource::Workspace, Some("T1")));
        assert!(p.is_team("U1") && p.is_team("U2") && !p.is_team("X1"));
        let flag = HashSet::from(["X1".to_owned()]);
        let p = People::new(&users, &flag, &HashSet::from(["U1".to_owned()]));
        assert_eq!(
            (p.source(), p.is_team("X1"), p.is_team("U1")),
            (TeamSource::Flag, true, false)
        );
        let p = People::new(&users[..2], &none, &none);
        assert_eq!((p.source(), p.team_size()), (TeamSource::None, 0));
        assert_eq!(p.name("U1"), "name of U1");
        assert_eq!(p.name("U404"), "unknown user U404");
        assert!(!p.is_known("U404"));
    }
}
