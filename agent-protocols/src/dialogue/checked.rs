//! Dialogues whose check cannot be forgotten: [`Checked`] is the [`Guard`] of a protocol of
//! one's own, so the runtime checks every step of its dialogues, in and out, whatever
//! handler receives it and whatever send path it leaves by.

use std::collections::HashMap;
use std::sync::Arc;

use agent_core::protocol::{Guard, GuardCause, GuardFuture, Inbound, Outbound, Refusal};
use agent_core::{Address, Context, Protocol};
use parking_lot::Mutex;

use super::{DialogueError, Dialogues, RefusalCause, Refused, Rules, Step};

/// Each agent's dialogues under one set of rules, in one role, loaded from the agent's
/// storage on first use; the guard of the protocol [`protocol`](Self::protocol) makes.
/// Clones share the dialogues.
///
/// With it, handlers are plain (`async fn on_quote(ctx: Context, from: Address, q: Quote)`)
/// and so are sends (`ctx.send_in(dialogue, peer, message)`): the runtime checks both.
///
/// - A message that is a step of the rules (a message type named by
///   [`RulesBuilder::step`](super::RulesBuilder::step)) is checked with
///   [`Dialogues::incoming`] before any handler of its type runs: a refused one is answered
///   with its [`Refused`] in the same session and never reaches the handler.
/// - A step this agent sends, by any [`Context`] path, is checked with
///   [`Dialogues::outgoing`] first, and recorded: a refused one is not sent, and the send
///   fails with [`SendFailure::Refused`](agent_core::SendFailure::Refused), whose
///   [`GuardCause`] says why.
/// - A dialogue opens with its first message, sent as any other: a step out of the
///   initial state by this agent's role, in a session (the dialogue's id) that has no
///   dialogue yet, opens one with the target as the peer. The peer's role is the one that
///   answers that step (the first other role sending out of the state it leads to); rules
///   whose dialogues have more than two parties are not for this guard.
/// - Messages of the protocol that are not steps ([`Refused`] itself) pass unchecked.
///
/// A message whose variants are different steps
/// ([`variant_step`](super::RulesBuilder::variant_step)) cannot be told apart here, by its
/// type alone: such a protocol checks its steps itself, with
/// [`incoming_named`](Dialogues::incoming_named) and
/// [`outgoing_named`](Dialogues::outgoing_named), as contract-net does.
///
/// One `Checked` serves every agent that includes its protocol (siblings share it), each
/// with its own dialogues, kept by address for the life of the agents' bureau: make a new
/// one for a bureau started again.
#[derive(Clone)]
pub struct Checked {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Rules,
    role: String,
    /// Names of the messages that are steps, sorted.
    steps: Vec<String>,
    books: Mutex<HashMap<Address, Arc<Dialogues>>>,
    /// Refusals being told to their peers ([`MAX_TELLING`] at most).
    telling: Arc<std::sync::atomic::AtomicUsize>,
}

/// At most this many refusals are being told at once, by all the agents a [`Checked`]
/// serves: each may wait for a slow peer up to the send timeout, and a peer that keeps
/// sending out of turn must not pile them up. Beyond it a refused message is still refused,
/// untold.
const MAX_TELLING: usize = 256;

impl Checked {
    /// Dialogues under `rules` in which this agent plays `role`.
    pub fn new(rules: Rules, role: &str) -> Checked {
        let mut steps: Vec<String> = rules.transitions().iter().map(|t| t.message.to_string()).collect();
        steps.sort();
        steps.dedup();
        let telling = Arc::default();
        Checked { inner: Arc::new(Inner { rules, role: role.to_owned(), steps, books: Mutex::default(), telling }) }
    }

    /// The protocol `name`, `version`, guarded by these dialogues: its manifest publishes
    /// the rules' state machine and declares [`Refused`]. Declare its messages and handlers
    /// on it as on any [`Protocol`]; every step in and out is then checked.
    pub fn protocol(&self, name: &str, version: &str) -> Protocol {
        Protocol::new(name, version)
            .message::<Refused>()
            .state_machine(self.inner.rules.state_machine())
            .guard(self.clone())
    }

    /// The dialogues of the agent of `ctx`, loaded from its storage the first time.
    pub fn dialogues(&self, ctx: &Context) -> Result<Arc<Dialogues>, DialogueError> {
        let me = ctx.address();
        if let Some(dialogues) = self.inner.books.lock().get(&me) {
            return Ok(Arc::clone(dialogues));
        }
        let storage = ctx.storage().map_err(|e| DialogueError::Storage { dialogue: 0, reason: e.to_string() })?;
        // Loaded outside the lock (it reads the agent's storage); two first uses at once
        // load twice, and the first kept is used by both.
        let loaded = Arc::new(Dialogues::load(self.inner.rules.clone(), &self.inner.role, storage)?.taking_back());
        Ok(Arc::clone(self.inner.books.lock().entry(me).or_insert(loaded)))
    }

    /// Makes `agent` sweep these dialogues every `every`: an open one whose deadline has
    /// passed expires (it refuses everything after, and stops counting against its peer's
    /// limit of open dialogues), and one older than the rules' maximum age is forgotten.
    pub fn sweep(&self, agent: &mut agent_core::Agent, every: std::time::Duration) {
        let checked = self.clone();
        agent.on_interval(every, move |ctx: Context| {
            let checked = checked.clone();
            async move {
                let swept = checked.dialogues(&ctx).and_then(|d| d.expire(agent_core::envelope::unix_now_ms()));
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "sweeping dialogues failed");
                }
            }
        });
    }

    fn is_step(&self, message: &str) -> bool {
        self.inner.steps.binary_search_by(|step| step.as_str().cmp(message)).is_ok()
    }

    /// Checks and records `message` sent by this agent in dialogue `session` to `to`,
    /// opening the dialogue if the message opens one.
    fn step_out(&self, ctx: &Context, message: Outbound) -> Result<(), DialogueError> {
        let dialogues = self.dialogues(ctx)?;
        let (id, now_ms) = (message.session, agent_core::envelope::unix_now_ms());
        match dialogues.get(id) {
            Some(dialogue) if dialogue.peer != message.to => Err(DialogueError::NotAParty {
                dialogue: id,
                standing: Box::new(dialogue.standing(dialogues.rules())),
                from: message.to,
                message: message.message.into(),
            }),
            Some(_) => dialogues.outgoing_named(message.message, id, now_ms).map(drop),
            None => {
                let Some(peer_role) = self.peer_role_after(message.message) else {
                    return Err(DialogueError::Unknown { dialogue: id, message: message.message.into() });
                };
                dialogues.open_with(message.message, id, message.to, &peer_role, now_ms, Step::default())
            }
        }
    }

    /// The peer's role in a dialogue this agent opens with `message`, if `message` opens
    /// one: the first other role that may send out of the state it leads to, or else the
    /// first other role of the rules.
    fn peer_role_after(&self, message: &str) -> Option<String> {
        let rules = &self.inner.rules;
        let me = self.inner.role.as_str();
        let opening = rules.steps_from(rules.initial()).find(|t| *t.message == *message && *t.sender == *me)?;
        let answering = rules.steps_from(&opening.to).map(|t| &t.sender).find(|sender| **sender != *me);
        let other = || rules.transitions().iter().map(|t| &t.sender).find(|sender| **sender != *me);
        answering.or_else(other).map(|role| role.to_string())
    }
}

impl Guard for Checked {
    fn incoming<'a>(&'a self, ctx: &'a Context, message: Inbound) -> GuardFuture<'a> {
        Box::pin(async move {
            if !self.is_step(message.message) {
                return Ok(());
            }
            let now_ms = agent_core::envelope::unix_now_ms();
            let checked = self
                .dialogues(ctx)
                .and_then(|d| d.incoming_named(message.message, message.session, message.from, now_ms));
            let Err(refused) = checked else { return Ok(()) };
            match refused.refusal() {
                Some(told) => {
                    // Told beside the agent's handlers: a peer that is slow to take it (a
                    // full mailbox, a remote node that does not acknowledge) must not hold
                    // up this agent, least of all a peer sending what it should not.
                    let place = Telling::take(&self.inner.telling);
                    if place.0.load(std::sync::atomic::Ordering::Relaxed) <= MAX_TELLING {
                        let teller = ctx.clone();
                        ctx.spawn(async move {
                            let _place = place;
                            // The peer may be gone; the refusal stands either way.
                            let _ = teller.send_in(message.session, message.from, told).await;
                        });
                    } else {
                        tracing::debug!(peer = %message.from, "too many refusals being told; this one is not");
                    }
                }
                None => tracing::warn!(error = %refused, "a dialogue message could not be checked"),
            }
            Err(guard_refusal(&refused))
        })
    }

    fn outgoing(&self, ctx: &Context, message: Outbound) -> Result<(), Refusal> {
        if !self.is_step(message.message) {
            return Ok(());
        }
        self.step_out(ctx, message).map_err(|refused| guard_refusal(&refused))
    }

    fn unsent(&self, ctx: &Context, message: Outbound) {
        if !self.is_step(message.message) {
            return;
        }
        if let Err(e) = self.dialogues(ctx).and_then(|d| d.unsay(message.message, message.session)) {
            tracing::warn!(error = %e, dialogue = message.session, "a step that was not sent could not be taken back");
        }
    }
}

/// A place among the refusals being told, given back when dropped (told, or its task
/// aborted with the agent).
struct Telling(Arc<std::sync::atomic::AtomicUsize>);

impl Telling {
    fn take(telling: &Arc<std::sync::atomic::AtomicUsize>) -> Telling {
        telling.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Telling(Arc::clone(telling))
    }
}

impl Drop for Telling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A dialogue's refusal as the runtime reports it.
fn guard_refusal(refused: &DialogueError) -> Refusal {
    let cause = match refused.cause() {
        Some(RefusalCause::UnknownDialogue) => GuardCause::UnknownDialogue,
        Some(RefusalCause::Exists) => GuardCause::Exists,
        Some(RefusalCause::Closed) => GuardCause::Closed,
        Some(RefusalCause::OutOfOrder) => GuardCause::OutOfOrder,
        Some(RefusalCause::NotAParty) => GuardCause::NotAParty,
        Some(RefusalCause::Late) => GuardCause::Late,
        Some(RefusalCause::TooManyOpen) => GuardCause::TooManyOpen,
        Some(RefusalCause::Busy) => GuardCause::Busy,
        None => GuardCause::Unavailable,
    };
    Refusal::new(cause, refused.to_string())
}
