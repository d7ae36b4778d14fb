//! The event bus: committed changes ([`Change`]), published after each commit for whoever
//! listens (the Slack cards and the live board). A broadcast channel: every subscriber sees every
//! change in commit order per publisher; one that falls more than the capacity behind gets
//! `RecvError::Lagged` and should reload what it shows. Publishing never waits and never fails,
//! with or without subscribers.

use crate::domain::Change;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Changes a subscriber may fall behind by before it lags.
pub const DEFAULT_CAPACITY: usize = 1024;

/// A change with its place in this bus's sequence (for `GET /v1/events`, whose clients resume
/// after the last one they saw).
pub type Sequenced = (u64, Change);

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Change>,
    sequenced: broadcast::Sender<Sequenced>,
    /// Tells this bus's sequence apart from another process's (a restarted core starts over).
    epoch: Arc<str>,
    log: Arc<Mutex<Log>>,
}

/// What [`EventBus::resume`] found.
pub struct Resumed {
    pub kept: Option<Vec<Sequenced>>,
    /// The sequence number of the last change published before `rx` was subscribed.
    pub position: u64,
    pub rx: broadcast::Receiver<Sequenced>,
}

/// The last `capacity` changes and the next sequence number.
struct Log {
    next: u64,
    recent: VecDeque<Sequenced>,
    capacity: usize,
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
            sequenced: broadcast::channel(capacity).0,
            epoch: crate::domain::new_id().into(),
            log: Arc::new(Mutex::new(Log {
                next: 1,
                recent: VecDeque::with_capacity(capacity),
                capacity,
            })),
        }
    }

    /// Every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// This bus's epoch: sequence numbers mean something only within one.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Every change published after sequence number `after`: the ones still kept and a receiver
    /// of those published from now on (no change lost or repeated between the two). `kept` is
    /// `None` when some after `after` are no longer kept (or `after` is from the future): the
    /// caller missed changes. `after = None`: from now on.
    pub fn resume(&self, after: Option<u64>) -> Resumed {
        let log = self.log.lock().unwrap();
        let rx = self.sequenced.subscribe();
        let position = log.next - 1;
        let oldest = log.recent.front().map_or(log.next, |(seq, _)| *seq);
        let kept = match after {
            None => Some(Vec::new()),
            Some(after) if after + 1 < oldest || after >= log.next => None,
            Some(after) => Some(
                log.recent
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .cloned()
                    .collect(),
            ),
        };
        Resumed { kept, position, rx }
    }

    pub fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        let mut log = self.log.lock().unwrap();
        for change in changes {
            let seq = log.next;
            log.next += 1;
            if log.recent.len() == log.capacity {
                log.recent.pop_front();
            }
            log.recent.push_back((seq, change.clone()));
            // Errors only mean nobody is listening.
            let _ = self.sequenced.send((seq, change.clone()));
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

    #[test]
    fn a_subscriber_resumes_after_the_last_change_it_saw_or_learns_it_missed_some() {
        let bus = EventBus::new(3);
        bus.publish((1..=4).map(change));
        // Kept: 2, 3, 4. After 2: 3 and 4 again, then what comes next.
        let mut r = bus.resume(Some(2));
        let seqs: Vec<u64> = r.kept.unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!((seqs, r.position), (vec![3, 4], 4));
        bus.publish([change(5)]);
        assert_eq!(r.rx.try_recv().unwrap(), (5, change(5)));
        // Kept now: 3, 4, 5. After 1, 2 was missed; so is a number not yet given.
        assert!(bus.resume(Some(1)).kept.is_none());
        assert!(bus.resume(Some(2)).kept.is_some());
        assert!(bus.resume(Some(9)).kept.is_none());
        assert_eq!(bus.resume(Some(5)).kept, Some(Vec::new()));
        let now = bus.resume(None);
        assert_eq!((now.kept, now.position), (Some(Vec::new()), 5));
    }
}
