//! Wake-up counters, one per [`Topic`], shared by every backend.

use tokio::sync::watch;

use crate::params::Topic;

pub(crate) fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Ready => 0,
        Topic::Scheduled => 1,
        Topic::Finished => 2,
    }
}

/// One counter per topic; subscribers wait for it to move on.
pub(crate) struct Topics {
    senders: [watch::Sender<u64>; 3],
}

impl Topics {
    pub fn new() -> Self {
        Topics { senders: std::array::from_fn(|_| watch::channel(0).0) }
    }

    pub fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.senders[topic_index(topic)].subscribe()
    }

    /// Moves on the counter of each topic marked in `touched` (indexed by [`topic_index`]).
    pub fn announce(&self, touched: [bool; 3]) {
        for (sender, hit) in self.senders.iter().zip(touched) {
            if hit {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}
