//! [`Work`]: what an agent does beside its handlers on behalf of a peer (a participant's
//! `perform`, a seller's delivery, a buyer's payment and what it does once paid), which a
//! graceful stop lets finish and a crash ends.
//!
//! Such work runs user code that is not cancel-safe: a `perform` dropped halfway (between
//! paying a sub-supplier and noting it) leaves the user's books half-written, so a graceful
//! [`Bureau::shutdown`](agent_core::Bureau::shutdown) must not interrupt it, and
//! [`Context::spawn`] alone (aborted once the agents have stopped) would. But a crashed
//! host's work must not go on acting after the crash either (collecting a payment, writing
//! to the storage its restarted agents read): a real crash ends it, and a simulated one
//! ([`agent_core::sim`]) must too. So the work runs on a task of its own, watched by one
//! that [`Context::spawn`] ends with the bureau: when the watch ends before the work, the
//! work is aborted unless the agent's shutdown handlers have run, which a crash never does.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_core::{Agent, Context};

/// An agent's work in hand, ended by a crash of its host and not by a graceful stop.
#[derive(Clone, Default)]
pub(crate) struct Work {
    /// Set by the agent's shutdown handler: the agent stops gracefully.
    stopping: Arc<AtomicBool>,
}

impl Work {
    /// The work of `agent`, whose shutdown handler marks a graceful stop.
    pub(crate) fn of(agent: &mut Agent) -> Work {
        let work = Work::default();
        let stopping = Arc::clone(&work.stopping);
        agent.on_shutdown(move |_ctx: Context| {
            stopping.store(true, Ordering::Release);
            std::future::ready(())
        });
        work
    }

    /// Runs `work` on a task of its own until it ends, or until `ctx`'s bureau ends other
    /// than by a graceful stop (a crash, or the bureau dropped without a shutdown).
    pub(crate) fn spawn<F>(&self, ctx: &Context, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut watch = Watch { work: tokio::spawn(work), stopping: Arc::clone(&self.stopping) };
        ctx.spawn(async move {
            if let Err(e) = (&mut watch.work).await {
                if e.is_panic() {
                    tracing::error!(error = %e, "an agent's work panicked");
                }
            }
        });
    }
}

/// Aborts the work it watches when it is dropped before the work ends (its bureau crashed),
/// unless the agent stopped gracefully.
struct Watch {
    work: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Aborting work that has ended does nothing.
        if !self.stopping.load(Ordering::Acquire) {
            self.work.abort();
        }
    }
}
