//! A miner's queue of admitted tasks: bounded, served highest stake first.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// What [`StakeQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued, pushing out the task with the least stake (the latest among equals), which
    /// is handed back to be refused.
    Evicted(T),
    /// Not queued: the queue is full of tasks with at least as much stake. Handed back.
    Full(T),
}

/// Tasks by stake, highest first, first come first served among equal stakes; at most
/// `capacity` of them.
#[derive(Debug)]
pub(crate) struct StakeQueue<T> {
    /// Keyed by `(stake, Reverse(arrival))`: the last key is the highest stake, earliest.
    tasks: BTreeMap<(u128, Reverse<u64>), T>,
    capacity: usize,
    arrivals: u64,
}

impl<T> StakeQueue<T> {
    /// An empty queue holding at most `capacity` tasks (at least one).
    pub(crate) fn new(capacity: usize) -> StakeQueue<T> {
        StakeQueue { tasks: BTreeMap::new(), capacity: capacity.max(1), arrivals: 0 }
    }

    /// Queues `task` from a sender with `stake`.
    pub(crate) fn push(&mut self, stake: u128, task: T) -> Pushed<T> {
        let key = (stake, Reverse(self.arrivals));
        self.arrivals += 1;
        if self.tasks.len() < self.capacity {
            self.tasks.insert(key, task);
            return Pushed::Queued;
        }
        match self.tasks.first_key_value() {
            Some((&(least, _), _)) if least < stake => {
                let evicted = self.tasks.pop_first().map(|(_, t)| t);
                self.tasks.insert(key, task);
                match evicted {
                    Some(evicted) => Pushed::Evicted(evicted),
                    None => Pushed::Queued,
                }
            }
            _ => Pushed::Full(task),
        }
    }

    /// The task with the most stake (the earliest among equals).
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.tasks.pop_last().map(|(_, t)| t)
    }

    /// How many tasks wait.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Takes every waiting task out (at shutdown, to refuse them).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.tasks).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_highest_stake_first_and_arrival_order_among_equals() {
        let mut q = StakeQueue::new(8);
        for (stake, name) in [(10, "a"), (30, "b"), (20, "c"), (30, "d"), (10, "e")] {
            assert_eq!(q.push(stake, name), Pushed::Queued);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["b", "d", "c", "a", "e"]);
    }

    #[test]
    fn a_full_queue_pushes_out_the_least_stake_or_refuses() {
        let mut q = StakeQueue::new(2);
        assert_eq!(q.push(20, "a"), Pushed::Queued);
        assert_eq!(q.push(10, "b"), Pushed::Queued);
        assert_eq!(q.push(10, "c"), Pushed::Full("c"), "equal stake does not push out");
        assert_eq!(q.push(5, "d"), Pushed::Full("d"));
        assert_eq!(q.push(15, "e"), Pushed::Evicted("b"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("e"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn eviction_takes_the_latest_of_the_least() {
        let mut q = StakeQueue::new(2);
        q.push(10, "first");
        q.push(10, "second");
        assert_eq!(q.push(11, "rich"), Pushed::Evicted("second"));
        assert_eq!(q.drain().len(), 2);
        assert_eq!(q.len(), 0);
    }
}
