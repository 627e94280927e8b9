//! Handlers whose dialogue check cannot be forgotten: [`Checked::handle`] wraps a handler so
//! that its message is checked with [`Dialogues::incoming`] before the handler sees it (a
//! refused one is answered with its [`Refused`] and goes no further), and the handler sends
//! through a [`Turn`], which checks each message with [`Dialogues::outgoing`] first.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use agent_core::{Address, Context, Message, SendFailure};

use super::{DialogueError, Dialogues, Rules, Step};

/// An agent's dialogues under one set of rules, in one role, loaded from the agent's storage
/// on first use, with handlers and sends checked against them. Clones share the dialogues.
#[derive(Clone)]
pub struct Checked {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Rules,
    role: String,
    dialogues: OnceLock<Dialogues>,
}

/// Why a checked send did not go out.
#[derive(Debug, thiserror::Error)]
pub enum CheckedSendError {
    /// The dialogue refused the message (or could not record it): nothing was sent.
    #[error(transparent)]
    Refused(#[from] DialogueError),
    /// The step was recorded, but the message could not be handed to the peer.
    #[error("the step was recorded, but the message was not delivered: {0}")]
    Send(SendFailure),
}

/// A handler's turn in a dialogue: the message it was given passed the dialogue's check,
/// and what it sends through [`send`](Self::send) is checked before it goes.
pub struct Turn {
    checked: Checked,
    ctx: Context,
    dialogue: u128,
    peer: Address,
}

/// What [`Checked::handle`] gives [`Protocol::on_message`](agent_core::Protocol::on_message).
pub type CheckedFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Checked {
    /// Dialogues under `rules` in which this agent plays `role`.
    pub fn new(rules: Rules, role: &str) -> Checked {
        Checked { inner: Arc::new(Inner { rules, role: role.to_owned(), dialogues: OnceLock::new() }) }
    }

    /// The agent's dialogues, loaded from its storage the first time.
    pub fn dialogues(&self, ctx: &Context) -> Result<&Dialogues, DialogueError> {
        if let Some(dialogues) = self.inner.dialogues.get() {
            return Ok(dialogues);
        }
        let storage = ctx.storage().map_err(|e| DialogueError::Storage { dialogue: 0, reason: e.to_string() })?;
        let loaded = Dialogues::load(self.inner.rules.clone(), &self.inner.role, storage)?;
        // Two first uses at once load twice; one is kept, and both read the same storage.
        Ok(self.inner.dialogues.get_or_init(|| loaded))
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

    /// `handler`, called only for an `M` its dialogue accepts (the session the message came
    /// in is the dialogue's id). A refused `M` is answered with its [`Refused`](super::Refused)
    /// and not handed on; one that came in no session, or that storage could not record, is
    /// dropped (logged), as there is no dialogue to name or the refusal is not the peer's doing.
    pub fn handle<M, F, Fut>(&self, handler: F) -> impl Fn(Context, Address, M) -> CheckedFuture + Send + Sync + 'static
    where
        M: Message,
        F: Fn(Turn, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let checked = self.clone();
        let handler = Arc::new(handler);
        move |ctx: Context, from: Address, message: M| {
            let (checked, handler) = (checked.clone(), handler.clone());
            Box::pin(async move {
                let Some(dialogue) = ctx.session() else {
                    tracing::debug!(%from, message = M::NAME, "a dialogue message outside any session is dropped");
                    return;
                };
                let accepted = checked
                    .dialogues(&ctx)
                    .and_then(|dialogues| dialogues.incoming::<M>(dialogue, from, agent_core::envelope::unix_now_ms()));
                match accepted {
                    Ok(_) => handler(Turn { checked, ctx, dialogue, peer: from }, message).await,
                    Err(refused) => match refused.refusal() {
                        Some(told) => {
                            // The peer may be gone; the refusal stands either way.
                            let _ = ctx.send_in(dialogue, from, told).await;
                        }
                        None => tracing::warn!(error = %refused, "a dialogue message could not be checked"),
                    },
                }
            })
        }
    }

    /// Opens dialogue `dialogue` with `peer`, playing `peer_role`, by sending `message` (a
    /// step out of the initial state), checked and recorded first.
    pub async fn open<M: Message>(
        &self,
        ctx: &Context,
        dialogue: u128,
        peer: Address,
        peer_role: &str,
        message: M,
    ) -> Result<(), CheckedSendError> {
        let now_ms = agent_core::envelope::unix_now_ms();
        self.dialogues(ctx)?.open_with(M::NAME, dialogue, peer, peer_role, now_ms, Step::default())?;
        ctx.send_in(dialogue, peer, message).await.map_err(|e| CheckedSendError::Send(e.failure().clone()))
    }

    /// Sends `message` to the peer of dialogue `dialogue`, checked with
    /// [`Dialogues::outgoing`] and recorded first: a message the dialogue refuses is not sent.
    pub async fn send<M: Message>(&self, ctx: &Context, dialogue: u128, message: M) -> Result<(), CheckedSendError> {
        let dialogues = self.dialogues(ctx)?;
        let peer = dialogues
            .get(dialogue)
            .map(|d| d.peer)
            .ok_or_else(|| DialogueError::Unknown { dialogue, message: M::NAME.into() })?;
        dialogues.outgoing::<M>(dialogue, agent_core::envelope::unix_now_ms())?;
        ctx.send_in(dialogue, peer, message).await.map_err(|e| CheckedSendError::Send(e.failure().clone()))
    }
}

impl Turn {
    /// The handler's context.
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// The dialogue's id.
    pub fn dialogue(&self) -> u128 {
        self.dialogue
    }

    /// The other party.
    pub fn peer(&self) -> Address {
        self.peer
    }

    /// Sends `message` to the peer in this dialogue, checked first ([`Checked::send`]).
    pub async fn send<M: Message>(&self, message: M) -> Result<(), CheckedSendError> {
        self.checked.send(&self.ctx, self.dialogue, message).await
    }
}
