//! What the Slack adapter keeps about Slack itself: user and channel names (`slack_names`, a cache
//! of `users.info` / `conversations.info` that survives restarts) and the account of a channel
//! triage was added to (created once, never overwritten). `slack_names_ops!(Backend)` expands
//! inside `sqlite.rs` and `postgres.rs` beside `store_ops!`.

use super::{Account, StoreFuture};

/// What a Slack id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    User,
    Channel,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::User => "user",
            NameKind::Channel => "channel",
        }
    }
}

/// A cached name and when it was fetched (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedName {
    pub name: String,
    pub fetched_ms: i64,
}

/// The Slack adapter's directory: cached names and channel accounts.
pub trait SlackDirectory: Send + Sync {
    fn name(&self, kind: NameKind, id: &str) -> StoreFuture<'_, Option<CachedName>>;
    fn put_name(&self, kind: NameKind, id: &str, name: &str, fetched_ms: i64) -> StoreFuture<'_, ()>;
    /// The account `channel` belongs to, if any.
    fn channel_account_id(&self, channel: &str) -> StoreFuture<'_, Option<String>>;
    /// The account of `channel`; when the channel has none, a new account named `name`, owned by
    /// `owner`, with this one channel. An existing account is returned as it is (its name and
    /// owner are never overwritten). `true` when created.
    fn ensure_channel_account(
        &self,
        channel: &str,
        name: &str,
        owner: Option<&str>,
    ) -> StoreFuture<'_, (Account, bool)>;
    /// Renames the account of `channel` to `name` when it is still named after the channel id
    /// (created before the channel's name was known); `true` when renamed.
    fn name_channel_account(&self, channel: &str, name: &str) -> StoreFuture<'_, bool>;
}

macro_rules! slack_names_ops {
    ($backend:ty) => {
        impl $backend {
            async fn ensure_channel_account_inner(
                &self,
                channel: &str,
                name: &str,
                owner: Option<&str>,
            ) -> Result<(Account, bool), StoreError> {
                // Read first: a channel with an account (the usual case) costs no write.
                if let Some(id) = self.channel_account_id_inner(channel).await? {
                    return Ok((self.get_account_inner(&id).await?, false));
                }
                let mut tx = self.write_tx().await?;
                let found: Option<String> =
                    sqlx::query_scalar("SELECT account_id FROM account_channels WHERE channel = $1")
                        .bind(channel)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(id) = found {
                    tx.rollback().await?;
                    return Ok((self.get_account_inner(&id).await?, false));
                }
                let id = new_id();
                sqlx::query("INSERT INTO accounts (id, name, owner) VALUES ($1, $2, $3)")
                    .bind(&id)
                    .bind(name)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                let linked = sqlx::query("INSERT INTO account_channels (channel, account_id) VALUES ($1, $2)")
                    .bind(channel)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await;
                if let Err(e) = linked {
                    // Another replica linked the channel meanwhile: its account wins.
                    let conflict = unique_as_conflict(e, format!("channel {channel} belongs to another account"));
                    tx.rollback().await?;
                    return match (conflict, self.channel_account_id_inner(channel).await?) {
                        (StoreError::Conflict(_), Some(other)) => Ok((self.get_account_inner(&other).await?, false)),
                        (e, _) => Err(e),
                    };
                }
                tx.commit().await?;
                Ok((
                    Account {
                        id,
                        name: name.to_owned(),
                        owner: owner.map(String::from),
                        channels: vec![channel.to_owned()],
                    },
                    true,
                ))
            }

            async fn channel_account_id_inner(&self, channel: &str) -> Result<Option<String>, StoreError> {
                Ok(
                    sqlx::query_scalar("SELECT account_id FROM account_channels WHERE channel = $1")
                        .bind(channel)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }
        }

        impl super::slack_names::SlackDirectory for $backend {
            fn name(
                &self,
                kind: super::slack_names::NameKind,
                id: &str,
            ) -> StoreFuture<'_, Option<super::slack_names::CachedName>> {
                let id = id.to_string();
                Box::pin(async move {
                    let row: Option<(String, i64)> =
                        sqlx::query_as("SELECT name, fetched_ms FROM slack_names WHERE kind = $1 AND id = $2")
                            .bind(kind.as_str())
                            .bind(&id)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.map(|(name, fetched_ms)| super::slack_names::CachedName { name, fetched_ms }))
                })
            }

            fn put_name(
                &self,
                kind: super::slack_names::NameKind,
                id: &str,
                name: &str,
                fetched_ms: i64,
            ) -> StoreFuture<'_, ()> {
                let (id, name) = (id.to_string(), name.to_string());
                Box::pin(async move {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO slack_names (kind, id, name, fetched_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, fetched_ms = excluded.fetched_ms",
                    )
                    .bind(kind.as_str())
                    .bind(&id)
                    .bind(&name)
                    .bind(fetched_ms)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                })
            }

            fn channel_account_id(&self, channel: &str) -> StoreFuture<'_, Option<String>> {
                let channel = channel.to_string();
                Box::pin(async move { self.channel_account_id_inner(&channel).await })
            }

            fn ensure_channel_account(
                &self,
                channel: &str,
                name: &str,
                owner: Option<&str>,
            ) -> StoreFuture<'_, (Account, bool)> {
                let (channel, name, owner) = (channel.to_string(), name.to_string(), owner.map(String::from));
                Box::pin(async move {
                    self.ensure_channel_account_inner(&channel, &name, owner.as_deref())
                        .await
                })
            }

            fn name_channel_account(&self, channel: &str, name: &str) -> StoreFuture<'_, bool> {
                let (channel, name) = (channel.to_string(), name.to_string());
                Box::pin(async move {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(
                        "UPDATE accounts SET name = $2 WHERE name = $1 AND id = \
                         (SELECT account_id FROM account_channels WHERE channel = $1)",
                    )
                    .bind(&channel)
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                })
            }
        }
    };
}
