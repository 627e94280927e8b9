//! The node's tasks, counted so that a bureau's shutdown can wait for them to end: they
//! hold the node's state, and through it the agents' storage, which a restarted bureau in
//! the same process must be able to open again as soon as the old one has shut down.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

/// Spawns the node's tasks. Each running task holds a sender of one channel; the channel
/// closes when the last one ends, which [`Ended`] waits for.
pub(crate) struct Tasks {
    alive: mpsc::WeakSender<()>,
}

/// The end of every task a node's [`Tasks`] spawned.
pub(crate) struct Ended(mpsc::Receiver<()>);

/// A node's tasks, and their end. `first` runs at once: the first task holds the channel
/// open, so a node has at least one task for as long as it runs (its swarm's).
pub(crate) fn tasks(first: impl Future<Output = ()> + Send + 'static) -> (Tasks, Ended) {
    let (alive, ended) = mpsc::channel(1);
    let tasks = Tasks { alive: alive.downgrade() };
    tokio::spawn(async move {
        let _alive = alive;
        first.await;
    });
    (tasks, Ended(ended))
}

impl Tasks {
    /// Runs `task` as one of the node's. Spawned once every task has ended (the node is
    /// gone), it still runs, uncounted.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let alive = self.alive.upgrade();
        tokio::spawn(async move {
            let _alive = alive;
            task.await;
        });
    }
}

impl Ended {
    /// Waits until every task has ended, for at most `within`; whether they all did.
    pub(crate) async fn wait(mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.0.recv()).await.is_ok()
    }
}
