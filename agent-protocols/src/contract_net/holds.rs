//! [`Holds`]: when a participant's proposals stop being held, and the one timer that
//! releases those whose hold ends without a decision.

use tokio::time::Instant;

use super::participant::held_proposal;
use super::*;

/// The holds of one participant agent's proposals, by dialogue, released when they end
/// undecided. One timer task per agent serves them all: a round with a thousand proposals
/// would otherwise start a thousand tasks and timers, nearly all stopped unfired when the
/// proposals are decided. Stopped with the agent, so a stopped agent's timer does not act
/// on what a restarted one holds.
#[derive(Clone, Default)]
pub(super) struct Holds {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: parking_lot::Mutex<State>,
    /// Wakes the timer when a hold ends sooner than the one it sleeps for.
    sooner: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Each hold, by when it ends and its dialogue. On tokio's clock, as a timer of its own
    /// per hold would be (a test on paused time sees holds end as time advances).
    by_end: BTreeMap<(Instant, u128), Hold>,
    /// When each dialogue's hold ends: the key into `by_end`.
    end_of: HashMap<u128, Instant>,
    /// When the timer wakes next by itself; `None` while it waits with nothing held. A hold
    /// that ends later needs no wake: the timer finds it when it wakes.
    wakes_at: Option<Instant>,
    /// The timer task, once a hold needed it; aborted by [`Holds::stop_all`].
    timer: Option<tokio::task::AbortHandle>,
}

/// What ends with a hold: the proposal kept with its dialogue, which the initiator made.
pub(super) struct Hold {
    pub(super) initiator: Address,
    pub(super) kept: Data,
}

impl Holds {
    /// Holds what dialogue `id`'s proposal (kept with the dialogue as `hold.kept`) holds until
    /// `until_ms`, replacing an earlier hold of the same dialogue; `participant` is told to
    /// release it then, unless [`stop`](Self::stop) came first. Only the proposal this hold
    /// is for is released: a revised call may have replaced it in the dialogue meanwhile.
    /// An award that comes after the release is answered with a failure: what was held may
    /// be gone.
    pub(super) fn hold<P: Participant>(
        &self,
        ctx: &Context,
        participant: &Arc<P>,
        book: &Book,
        id: u128,
        until_ms: u64,
        hold: Hold,
    ) {
        let ends = Instant::now() + Duration::from_millis(until_ms.saturating_sub(now_ms()));
        let mut state = self.shared.state.lock();
        if let Some(replaced) = state.end_of.insert(id, ends) {
            state.by_end.remove(&(replaced, id));
        }
        let sooner = state.wakes_at.is_none_or(|at| ends < at);
        state.by_end.insert((ends, id), hold);
        if state.timer.is_none() {
            self.start_timer(&mut state, ctx, participant, book);
        } else if sooner {
            self.shared.sooner.notify_one();
        }
    }

    /// Starts the timer if it is not running: when the agent starts, so that its first
    /// proposals (in a round with many participants, all made at once) start no task.
    pub(super) fn start<P: Participant>(&self, ctx: &Context, participant: &Arc<P>, book: &Book) {
        let mut state = self.shared.state.lock();
        if state.timer.is_none() {
            self.start_timer(&mut state, ctx, participant, book);
        }
    }

    /// The timer and its releases run as the agent's tasks ([`Context::spawn`]): they end
    /// with its bureau, and a crashed host's timer releases nothing after the crash.
    fn start_timer<P: Participant>(&self, state: &mut State, ctx: &Context, participant: &Arc<P>, book: &Book) {
        let timer = release_when_due(Arc::clone(&self.shared), ctx.clone(), Arc::clone(participant), book.clone());
        state.timer = Some(ctx.spawn(timer));
    }

    /// The hold of dialogue `id` ends without a release: its proposal was decided.
    pub(super) fn stop(&self, id: u128) {
        let mut state = self.shared.state.lock();
        if let Some(end) = state.end_of.remove(&id) {
            state.by_end.remove(&(end, id));
        }
    }

    /// Every hold ends without a release, and the timer stops: the agent is stopping.
    pub(super) fn stop_all(&self) {
        let mut state = self.shared.state.lock();
        state.by_end.clear();
        state.end_of.clear();
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
    }
}

/// The timer: sleeps until the first hold ends (or a sooner one is added), then releases
/// every hold that has ended, one after the other, and sleeps again.
async fn release_when_due<P: Participant>(shared: Arc<Shared>, ctx: Context, participant: Arc<P>, book: Book) {
    loop {
        let first_end = {
            let mut state = shared.state.lock();
            state.wakes_at = state.by_end.first_key_value().map(|(&(end, _), _)| end);
            state.wakes_at
        };
        match first_end {
            // A permit left by `hold` while nothing was held ends this wait at once.
            None => shared.sooner.notified().await,
            Some(end) => {
                tokio::select! {
                    () = tokio::time::sleep_until(end) => {}
                    () = shared.sooner.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        let ended: Vec<(u128, Hold)> = {
            let mut state = shared.state.lock();
            let mut ended = Vec::new();
            while let Some(entry) = state.by_end.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), hold) = entry.remove_entry();
                state.end_of.remove(&id);
                ended.push((id, hold));
            }
            ended
        };
        let Some(dialogues) = book.dialogues() else { continue };
        for (id, Hold { initiator, kept }) in ended {
            match dialogues.take_data(id, Some(&kept)) {
                Ok(taken) => {
                    if let Some(proposal) = held_proposal::<P::Proposal>(taken) {
                        tracing::debug!(dialogue = %format!("{id:032x}"), "a proposal's hold ended without a decision");
                        // On a task of its own: a release that is slow, never returns or
                        // panics holds up no other hold, and leaves the timer running.
                        let participant = Arc::clone(&participant);
                        ctx.spawn(async move { participant.release(initiator, proposal).await });
                    }
                }
                // Not recorded (storage refuses writes): the proposal is still held in its
                // dialogue, so the release is tried again rather than forgotten.
                Err(e @ DialogueError::Storage { .. }) => {
                    tracing::warn!(error = %e, "a proposal whose hold ended could not be released; retrying");
                    let mut state = shared.state.lock();
                    let retry = Instant::now() + RETRY_RELEASE;
                    // Unless a new hold of the dialogue came meanwhile: it stands instead.
                    if let std::collections::hash_map::Entry::Vacant(end) = state.end_of.entry(id) {
                        end.insert(retry);
                        state.by_end.insert((retry, id), Hold { initiator, kept });
                    }
                }
                // Decided or forgotten meanwhile: nothing is held any more.
                Err(e) => tracing::debug!(error = %e, "a hold ended on a dialogue that holds nothing"),
            }
        }
    }
}

/// How long after a release that storage could not record it is tried again.
const RETRY_RELEASE: Duration = Duration::from_secs(1);
