//! The event bus: committed changes ([`Change`]), published after each commit for whoever
//! listens (the Slack cards and the live board). A broadcast channel: every subscriber sees every
//! change in commit order per publisher; one that falls more than the capacity behind gets
//! `RecvError::Lagged` and should reload what it shows. Publishing never waits and never fails,
//! with or without subscribers.

use crate::domain::Change;
use tokio::sync::broadcast;

/// Changes a subscriber may fall behind by before it lags.
pub const DEFAULT_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Change>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(DEFAULT_CAPACITY)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        EventBus {
            sender: broadcast::channel(capacity).0,
        }
    }

    /// Every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    pub fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            // An error only means nobody is listening.
            let _ = self.sender.send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    fn change(n: usize) -> Change {
        Change::ConversationDeleted { id: n.to_string() }
    }

    #[test]
    fn every_subscriber_sees_every_change_in_order_and_a_slow_one_lags() {
        let bus = EventBus::new(2);
        // Nobody listening: publishing is a no-op, not an error.
        bus.publish([change(0)]);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish([change(1), change(2)]);
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.try_recv().unwrap(), change(1));
            assert_eq!(rx.try_recv().unwrap(), change(2));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
        bus.publish((3..6).map(change));
        assert_eq!(a.blocking_recv(), Err(RecvError::Lagged(1)));
        assert_eq!(a.blocking_recv().unwrap(), change(4));
    }
}
