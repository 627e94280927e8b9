//! What a handler can do: [`Context`].
//!
//! Every handler receives a `Context` by value. It is cheap to clone (one reference count)
//! and may be moved into a spawned task, but replies are only accepted while the handler
//! of the message being answered is running.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::agent::{Kind, WhenFull};
use crate::bureau::Shared;
use crate::delivery::{Body, Delivery, LocalReplySlot, Reply, ReplyTo, RequestFailure};
use crate::envelope::Header;
use crate::error::{ReplyError, RequestError, SendError, SendFailure};
use crate::identity::{Address, Identity};
use crate::message::ProtocolDigest;
use crate::message::{Message, SchemaDigest};
use crate::remote::{Outgoing, RemoteSend};
use crate::router::DeliverError;
use crate::storage::{Storage, StorageError};

/// One running agent's state, shared by its loop and its contexts.
pub(crate) struct AgentCell {
    pub(crate) name: Box<str>,
    pub(crate) identity: Identity,
    pub(crate) kind: Arc<Kind>,
    pub(crate) bureau: Arc<Shared>,
    pub(crate) when_full: WhenFull,
    pub(crate) acknowledge: crate::agent::Acknowledge,
    /// Whether the agent runs on a multi-thread runtime (read once, at start).
    pub(crate) multi_thread: bool,
    /// Boxed: most agents never open storage, and every agent's cell is kept for its life.
    pub(crate) storage: OnceLock<Box<Storage>>,
    pub(crate) wallet: OnceLock<crate::wallet::Wallet>,
    /// The reply slot of the request being handled, tagged with its sequence number so a
    /// context kept from an earlier message cannot answer a later one.
    pub(crate) pending: Mutex<PendingReply>,
    /// The timer of the agent's own requests, rearmed for each one.
    pub(crate) request_timer: RequestTimer,
}

/// One timer an agent keeps for the requests it makes from its own task, instead of
/// registering a new timer for each: registering (and, once answered, removing) takes the
/// timer driver's lock twice, the costliest step of a local round trip. Nor is it rearmed
/// for each request: a request whose deadline is not earlier than the timer's leaves it as
/// it is (most requests, since deadlines follow the clock), and when the timer fires before
/// the deadline of the request waiting on it, that request rearms it to its own deadline
/// and keeps waiting. So the timer may fire early, at most once per earlier deadline, but
/// never late, and a request costs no timer update at all. Only the agent's own task uses
/// it, so it always runs on the runtime that created it; another request in flight at the
/// same time (from the same task) uses a timer of its own. Between requests the timer stays
/// set; when it fires, the agent's task is woken once and finds nothing to do.
#[derive(Default)]
pub(crate) struct RequestTimer(Mutex<OwnTimer>);

#[derive(Default)]
pub(crate) struct OwnTimer {
    /// The task running the agent's loop, set when it starts.
    task: Option<tokio::task::Id>,
    /// Created on the first request; out while a request uses it.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RequestTimer {
    /// Records the task that runs the agent's loop: only requests made from it use the timer.
    pub(crate) fn belongs_to(&self, task: tokio::task::Id) {
        self.0.lock().task = Some(task);
    }

    /// For a request made in the agent's own task (its handlers, not a task they spawned),
    /// a timer set to fire no later than `deadline`: the agent's own if it is free (left as
    /// it is unless its deadline is later), else a new one.
    fn take(&self, deadline: Instant) -> Option<Pin<Box<tokio::time::Sleep>>> {
        let mut own = self.0.lock();
        if own.task.is_none() || tokio::task::try_id() != own.task {
            return None;
        }
        let Some(mut timer) = own.timer.take() else {
            return Some(Box::pin(tokio::time::sleep_until(deadline)));
        };
        drop(own);
        if timer.deadline() > deadline {
            // Earlier than the timer: rearmed (the driver's lock). Only a request with a
            // shorter timeout than the one that set the timer can get here.
            timer.as_mut().reset(deadline);
        }
        Some(timer)
    }

    fn put_back(&self, timer: Pin<Box<tokio::time::Sleep>>) {
        let replaced = self.0.lock().timer.replace(timer);
        // Dropped after the lock: dropping a registered timer takes the timer driver's.
        drop(replaced);
    }
}

#[derive(Default)]
pub(crate) struct PendingReply {
    pub(crate) seq: u64,
    pub(crate) slot: Option<ReplyTo>,
}

/// The message being handled.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    pub(crate) from: Address,
    pub(crate) schema: SchemaDigest,
    pub(crate) name: &'static str,
    pub(crate) session: u128,
    pub(crate) trace_id: u128,
    pub(crate) seq: u64,
    pub(crate) is_request: bool,
    /// Whether the message belongs to a protocol, whose rules then constrain the reply.
    pub(crate) in_protocol: bool,
}

/// A handler's view of its agent: address, sending, requests, replies, storage.
#[derive(Clone)]
pub struct Context {
    pub(crate) cell: Arc<AgentCell>,
    pub(crate) current: Option<Current>,
}

/// The result of [`Context::broadcast`].
#[derive(Debug, Default)]
pub struct BroadcastReport {
    /// How many agents received the message.
    pub delivered: usize,
    /// The sends that failed, with why.
    pub failed: Vec<SendFailure>,
    /// Why agents beyond this process could not be listed, if they could not.
    pub discovery_error: Option<String>,
}

/// Most agents one broadcast reaches through discovery.
pub const MAX_BROADCAST: usize = 1000;

impl Context {
    /// This agent's address.
    pub fn address(&self) -> Address {
        self.cell.identity.address()
    }

    /// This agent's name.
    pub fn name(&self) -> &str {
        &self.cell.name
    }

    /// The sender of the message being handled (`None` in startup, interval and shutdown
    /// handlers).
    pub fn sender(&self) -> Option<Address> {
        self.current.map(|c| c.from)
    }

    /// The conversation (session) id of the message being handled.
    pub fn session(&self) -> Option<u128> {
        self.current.map(|c| c.session)
    }

    /// Whether the sender of the message being handled waits for a reply (a request).
    pub fn is_request(&self) -> bool {
        self.current.is_some_and(|c| c.is_request)
    }

    /// Runs `task` beside this agent's handlers, for as long as the bureau runs: work that
    /// must not hold up the agent's mailbox (a timer over many deadlines, a slow call whose
    /// answer nobody waits for). Unlike `tokio::spawn`, the task ends with the bureau: it
    /// is aborted when [`Bureau::shutdown`](crate::Bureau::shutdown) has stopped the
    /// agents, and at once when a simulated host crashes, as a real crash would end it.
    /// A task that panics is logged (when the bureau next spawns or stops); the agent goes
    /// on. Spawned after the bureau stopped, the task never runs; a bureau dropped without
    /// [`Bureau::shutdown`](crate::Bureau::shutdown) aborts them too.
    pub fn spawn<F>(&self, task: F) -> tokio::task::AbortHandle
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut background = self.cell.bureau.background.lock();
        let Some(background) = background.as_mut() else {
            // The bureau has stopped: the task never runs.
            let never = tokio::spawn(async {}).abort_handle();
            drop(task);
            return never;
        };
        // Tasks that ended are forgotten here, a few per spawn: the set stays as large as
        // the tasks running, not as all the tasks ever spawned.
        for _ in 0..2 {
            match background.try_join_next() {
                // Whose task it was is not known here: the set is the bureau's.
                Some(Err(e)) if e.is_panic() => tracing::error!(error = %e, "a task an agent spawned panicked"),
                Some(_) => {}
                None => break,
            }
        }
        background.spawn(task)
    }

    /// The trace id of the message being handled; messages sent from this handler carry it.
    pub fn trace_id(&self) -> Option<u128> {
        self.current.map(|c| c.trace_id)
    }

    /// Sends `message` to `to`, waiting for mailbox space up to the bureau's send timeout
    /// if the target's policy is to wait. Returns once the message is queued.
    ///
    /// Cancel safety: dropping the future before it completes leaves the message undelivered.
    pub async fn send<M: Message>(&self, to: Address, message: M) -> Result<(), SendError<M>> {
        self.send_in(self.session_for_new(), to, message).await
    }

    /// [`send`](Self::send) in the conversation `session`: the receiver's
    /// [`session`](Self::session) is `session`. A dialogue keeps its messages in one
    /// session this way, whichever handler sends them.
    pub async fn send_in<M: Message>(&self, session: u128, to: Address, message: M) -> Result<(), SendError<M>> {
        if !self.guarded() {
            return self.send_unguarded(session, to, message).await;
        }
        if let Err(refused) = self.guard_out::<M>(to, session) {
            return Err(SendError::new(refused, Some(message)));
        }
        let sent = Box::pin(self.send_unguarded(session, to, message)).await;
        if let Err(unsent) = &sent {
            self.guard_failed::<M>(to, session, unsent.failure());
        }
        sent
    }

    /// [`send_in`](Self::send_in) past the guards.
    async fn send_unguarded<M: Message>(&self, session: u128, to: Address, message: M) -> Result<(), SendError<M>> {
        let trace_id = self.trace_for_new();
        let router = &self.cell.bureau.router;
        if let Some(remote) = self.remote().filter(|_| router.is_elsewhere(&to)) {
            return self.send_out(remote, to, message, session, trace_id).await;
        }
        let delivery = self.delivery::<M>(message, None, session, trace_id);
        let timeout = self.cell.bureau.config.send_timeout;
        let (failure, delivery) = match router.deliver(to, delivery, None, timeout).await {
            Ok(()) => return Ok(()),
            Err(failed) => failed,
        };
        let message = take_back(*delivery);
        match (&failure, self.remote(), message) {
            (SendFailure::Unroutable { .. }, Some(remote), Some(message)) => {
                self.send_out(remote, to, message, session, trace_id).await
            }
            (_, _, message) => Err(SendError::new(failure, message)),
        }
    }

    /// Sends `message` to `to` in another bureau, through `remote`.
    async fn send_out<M: Message>(
        &self,
        remote: &Arc<dyn RemoteSend>,
        to: Address,
        message: M,
        session: u128,
        trace_id: u128,
    ) -> Result<(), SendError<M>> {
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => payload,
            Err(e) => return Err(SendError::new(SendFailure::Encode { to, reason: e.to_string() }, Some(message))),
        };
        let header = self.header::<M>(session, trace_id, false);
        let outgoing = Outgoing { schema: M::digest(), name: M::NAME, payload, header };
        let span = self.span("send", to, trace_id);
        // The way out's own boxed future, awaited as it is: local sends carry only its
        // pointer, and the network path is not boxed a second time around it.
        let sending = remote.send(&self.cell.identity, to, outgoing, remote.delivery_timeout());
        let sent = crate::trace::traced!(span, sending);
        sent.map_err(|failure| SendError::new(failure, Some(message)))
    }

    /// Sends `message` to `to` and waits for the reply, matched by correlation (never by
    /// type). `timeout` bounds the whole exchange, mailbox waits and network included;
    /// `None` uses the bureau's default request timeout.
    ///
    /// Cancel safety: dropping the future abandons the request; a later reply is discarded.
    pub async fn request<Req: Message, Resp: Message>(
        &self,
        to: Address,
        message: Req,
        timeout: impl Into<Option<Duration>>,
    ) -> Result<Resp, RequestError> {
        self.request_in(self.session_for_new(), to, message, timeout).await
    }

    /// [`request`](Self::request) in the conversation `session` (see
    /// [`send_in`](Self::send_in)).
    pub async fn request_in<Req: Message, Resp: Message>(
        &self,
        session: u128,
        to: Address,
        message: Req,
        timeout: impl Into<Option<Duration>>,
    ) -> Result<Resp, RequestError> {
        if !self.guarded() {
            return self.request_unguarded(session, to, message, timeout).await;
        }
        self.guard_out::<Req>(to, session).map_err(RequestError::Send)?;
        let reply = match Box::pin(self.request_unguarded(session, to, message, timeout)).await {
            Ok(reply) => reply,
            Err(RequestError::Send(failure)) => {
                self.guard_failed::<Req>(to, session, &failure);
                return Err(RequestError::Send(failure));
            }
            Err(other) => return Err(other),
        };
        self.guard_reply::<Resp>(to, session).await?;
        Ok(reply)
    }

    /// [`request_in`](Self::request_in) past the guards: the request is checked before,
    /// and its reply after.
    async fn request_unguarded<Req: Message, Resp: Message>(
        &self,
        session: u128,
        to: Address,
        message: Req,
        timeout: impl Into<Option<Duration>>,
    ) -> Result<Resp, RequestError> {
        let timeout = timeout.into().unwrap_or(self.cell.bureau.config.request_timeout);
        let deadline = Instant::now() + timeout;
        let trace_id = self.trace_for_new();
        let router = &self.cell.bureau.router;
        // A target outside the bureau: no local delivery (nor reply slot) to box and undo.
        if let Some(remote) = self.remote().filter(|_| router.is_elsewhere(&to)) {
            let header = self.header::<Req>(session, trace_id, true);
            return self.request_out(remote.as_ref(), to, message, header, deadline, timeout).await;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let delivery = self.delivery::<Req>(message, Some(ReplyTo::Local(reply_tx)), session, trace_id);
        let own_timer = match self.cell.multi_thread {
            true => self.cell.request_timer.take(deadline),
            false => None,
        };
        let waited = match own_timer {
            Some(timer) => self.deliver_armed(to, delivery, reply_rx, timer, deadline, timeout).await,
            None => match router.deliver(to, delivery, Some(deadline), timeout).await {
                // Let the target run first: a quick reply is then ready at the first poll of
                // the timeout below, which then never registers its timer (on a multi-thread
                // runtime a lock shared by all workers, and on either the costliest step of
                // a local round trip). The deadline is unchanged.
                Ok(()) => Ok(self.wait_for_reply(reply_rx, deadline).await),
                Err(undelivered) => Err(undelivered),
            },
        };
        let answered = match waited {
            Ok(answered) => answered,
            Err((failure, delivery)) => {
                return match (&failure, self.remote(), take_back::<Req>(*delivery)) {
                    (SendFailure::Unroutable { .. }, Some(remote), Some(message)) => {
                        let header = self.header::<Req>(session, trace_id, true);
                        self.request_out(remote.as_ref(), to, message, header, deadline, timeout).await
                    }
                    _ => Err(RequestError::Send(failure)),
                };
            }
        };
        let reply = match answered {
            Err(_) => return Err(RequestError::Timeout { to, after: timeout }),
            Ok(Err(_)) => return Err(RequestError::Stopped { to }),
            Ok(Ok(Err(RequestFailure::NoReply))) => return Err(RequestError::NoReply { to }),
            Ok(Ok(Err(RequestFailure::HandlerFailed(reason)))) => {
                return Err(RequestError::HandlerFailed { to, reason })
            }
            Ok(Ok(Ok(reply))) => reply,
        };
        let name = reply.name;
        reply.value.downcast::<Resp>().map(|value| *value).map_err(|_| RequestError::WrongReplyType {
            to,
            expected: Resp::NAME,
            got: name.to_owned(),
        })
    }

    /// Answers the message being handled. For a request, completes the requester's wait
    /// (in this process or, as an envelope, in another); for a plain message, sends
    /// `message` back to its sender in the same session. If the message belongs to a
    /// protocol, `M` must be an allowed reply to it.
    pub async fn reply<M: Message>(&self, message: M) -> Result<(), ReplyError> {
        let current = self.current.ok_or(ReplyError::NoCurrentMessage)?;
        self.check_reply::<M>(&current)?;
        let slot = match current.is_request {
            true => Some(self.take_reply_slot(&current).ok_or(ReplyError::AlreadyAnswered)?),
            false => None,
        };
        // Checked once the answer is this call's to give (a request answered already
        // records no step); a plain message's answer is checked on its way out by
        // `send_in`.
        if slot.is_some() && self.guarded() {
            if let Err(refused) = self.guard_out::<M>(current.from, current.session) {
                if let Some(slot) = slot {
                    self.put_back_reply_slot(&current, slot);
                }
                return Err(ReplyError::Send(refused));
            }
        }
        let answered = match slot {
            // Answered without awaiting: a handler's future then holds no send or network
            // state for its reply, and is small enough to create and box cheaply.
            Some(ReplyTo::Local(slot)) => answer_local(slot, message),
            slot => Box::pin(self.answer(current, slot, message)).await,
        };
        if answered.is_err() {
            self.reply_failed::<M>(&current, &answered);
        }
        answered
    }

    /// Tells the guards of a reply to a request that surely did not reach its requester
    /// (gone, or refused by its node before handing it over), as
    /// [`guard_failed`](Self::guard_failed) does for a send. (A plain message's answer went
    /// by [`send_in`](Self::send_in), which told them.)
    fn reply_failed<M: Message>(&self, current: &Current, answered: &Result<(), ReplyError>) {
        if !current.is_request || !self.guarded() {
            return;
        }
        match answered {
            Err(ReplyError::Send(failure)) => self.guard_failed::<M>(current.from, current.session, failure),
            Err(ReplyError::RequesterGone) => self.guard_unsent::<M>(current.from, current.session),
            _ => {}
        }
    }

    /// Puts back the reply slot of `current` taken by a reply its guard refused, so that
    /// another, allowed, reply may still be given. (Dropped if the handler has returned
    /// meanwhile: the requester is then told there is no reply.)
    #[cold]
    fn put_back_reply_slot(&self, current: &Current, slot: ReplyTo) {
        let mut pending = self.cell.pending.lock();
        if pending.seq == current.seq && pending.slot.is_none() {
            pending.slot = Some(slot);
        }
    }

    /// Takes over the answer to the message being handled, to send it after the handler
    /// returns: from a spawned task, once long work is done, while the agent goes on
    /// handling other messages. A requester keeps waiting, up to its own timeout. A
    /// [`DeferredReply`] dropped unsent tells the requester there is no reply.
    ///
    /// ```
    /// # use agent_core::{Address, Context, Message, ReplyError};
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Message)] struct Build(u32);
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Message)] struct Built(u32);
    /// async fn on_build(ctx: Context, _from: Address, Build(n): Build) -> Result<(), ReplyError> {
    ///     let reply = ctx.defer_reply()?;
    ///     tokio::spawn(async move {
    ///         tokio::time::sleep(std::time::Duration::from_secs(3600)).await; // an hour's work
    ///         let _ = reply.send(Built(n)).await;
    ///     });
    ///     Ok(())
    /// }
    /// ```
    pub fn defer_reply(&self) -> Result<DeferredReply, ReplyError> {
        let current = self.current.ok_or(ReplyError::NoCurrentMessage)?;
        let slot = match current.is_request {
            true => Some(self.take_reply_slot(&current).ok_or(ReplyError::AlreadyAnswered)?),
            false => None,
        };
        Ok(DeferredReply { ctx: self.clone(), current, slot })
    }

    fn check_reply<M: Message>(&self, current: &Current) -> Result<(), ReplyError> {
        if !current.in_protocol {
            return Ok(());
        }
        if let Some(protocol) = self.cell.kind.routes.get(&current.schema).and_then(|r| r.protocol.as_ref()) {
            if !protocol.allows_reply(&current.schema, &M::digest()) {
                return Err(ReplyError::NotAllowed {
                    protocol: protocol.name.clone(),
                    request: current.name,
                    reply: M::NAME,
                });
            }
        }
        Ok(())
    }

    /// The reply slot of `current`, if it is still the message being handled and
    /// unanswered.
    fn take_reply_slot(&self, current: &Current) -> Option<ReplyTo> {
        let mut pending = self.cell.pending.lock();
        match pending.seq == current.seq {
            true => pending.slot.take(),
            false => None,
        }
    }

    async fn answer<M: Message>(&self, current: Current, slot: Option<ReplyTo>, message: M) -> Result<(), ReplyError> {
        match slot {
            Some(ReplyTo::Local(slot)) => answer_local(slot, message),
            Some(ReplyTo::Remote(path)) => {
                let payload = serde_json::to_vec(&message).map_err(|e| {
                    ReplyError::Send(SendFailure::Encode { to: path.requester(), reason: e.to_string() })
                })?;
                let timeout = self.cell.bureau.config.send_timeout;
                let protocol = self.cell.kind.protocol_of(&M::digest());
                path.reply(&self.cell.identity, M::digest(), payload, protocol, timeout).await
            }
            None => self
                .send_in(current.session, current.from, message)
                .await
                .map_err(|err| ReplyError::Send(err.failure().clone())),
        }
    }

    /// Sends `message` to every other agent that speaks `protocol`: those in this bureau,
    /// and those the bureau's [`Discovery`](crate::bureau::Discovery) finds elsewhere.
    pub async fn broadcast<M: Message + Clone>(&self, protocol: ProtocolDigest, message: M) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        let me = self.address();
        let mut targets = self.cell.bureau.router.agents_speaking(&protocol);
        if let Some(discovery) = &self.cell.bureau.config.discovery {
            match discovery.agents_speaking(&protocol, MAX_BROADCAST).await {
                Ok(found) => targets.extend(found),
                Err(reason) => report.discovery_error = Some(reason),
            }
        }
        targets.sort();
        targets.dedup();
        for target in targets {
            if target == me {
                continue;
            }
            match self.send(target, message.clone()).await {
                Ok(()) => report.delivered += 1,
                Err(err) => report.failed.push(err.failure().clone()),
            }
        }
        report
    }

    /// This agent's persistent key-value storage (opened on first use).
    pub fn storage(&self) -> Result<Storage, StorageError> {
        if let Some(storage) = self.cell.storage.get() {
            return Ok(Storage::clone(storage));
        }
        let storage = Storage::open(&self.cell.bureau.storage, self.address());
        Ok(Storage::clone(self.cell.storage.get_or_init(|| Box::new(storage))))
    }

    /// This agent's wallet on the bureau's ledger. Its key is derived from the agent's
    /// identity. Fails only if no ledger is configured; the ledger is not contacted here.
    pub fn wallet(&self) -> Result<crate::wallet::Wallet, crate::wallet::WalletError> {
        let ledger = self.cell.bureau.config.ledger.clone().ok_or(crate::wallet::WalletError::NoLedger)?;
        Ok(self
            .cell
            .wallet
            .get_or_init(|| crate::wallet::Wallet::new(self.cell.identity.derive("wallet"), ledger))
            .clone())
    }

    /// The span of a message leaving this agent for another process: its trace id follows
    /// the message through the transport, into the receiver's delivery and handler, and
    /// back with the reply.
    fn span(&self, what: &'static str, to: Address, trace_id: u128) -> Option<tracing::Span> {
        let agent = &self.cell.name;
        crate::trace::message_span!("message", what, %agent, %to, trace_id = %format_args!("{trace_id:032x}"))
    }

    /// How agents outside this bureau are reached, once it is a network node.
    fn remote(&self) -> Option<&Arc<dyn RemoteSend>> {
        self.cell.bureau.remote.get()
    }

    /// The header of a new message `M` from this agent: the protocol it belongs to, if the
    /// agent speaks one with it, travels with it.
    fn header<M: Message>(&self, session: u128, trace_id: u128, expects_reply: bool) -> Header {
        let protocol = self.cell.kind.protocol_of(&M::digest());
        Header { session, protocol, in_reply_to: None, expects_reply, trace_id }
    }

    /// Sends the request `message` to `to` in another bureau, through `remote`, traced.
    async fn request_out<Req: Message, Resp: Message>(
        &self,
        remote: &dyn RemoteSend,
        to: Address,
        message: Req,
        header: Header,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let span = self.span("request", to, header.trace_id);
        let requested = self.request_remote(remote, to, &message, header, deadline, timeout);
        crate::trace::traced!(span, Box::pin(requested))
    }

    async fn request_remote<Req: Message, Resp: Message>(
        &self,
        remote: &dyn RemoteSend,
        to: Address,
        message: &Req,
        header: Header,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| RequestError::Send(SendFailure::Encode { to, reason: e.to_string() }))?;
        let message = Outgoing { schema: Req::digest(), name: Req::NAME, payload, header };
        let reply = remote.request(&self.cell.identity, to, message, deadline, timeout).await?;
        if reply.schema != Resp::digest() {
            return Err(RequestError::WrongReplyType {
                to,
                expected: Resp::NAME,
                got: format!("schema {}", reply.schema),
            });
        }
        serde_json::from_slice(&reply.payload).map_err(|e| RequestError::WrongReplyType {
            to,
            expected: Resp::NAME,
            got: format!("undecodable payload: {e}"),
        })
    }

    /// Queues the request `delivery` for `to` and waits for its answer on `reply` until
    /// `deadline`, on `timer`, the agent's own. `Err` is a delivery that could not be queued.
    ///
    /// For a request from the agent's own task on a multi-thread runtime: both waits (the
    /// reply and the timer) are armed before the message leaves, and the poll returns at
    /// once after queueing it. Queueing wakes the target, and a woken task that is still
    /// being polled on one worker is requeued there instead of joining its waker on the
    /// other: the shorter the requester's poll after the wake, the less often the two agents
    /// end up answering each other across workers once a steal has parted them.
    async fn deliver_armed(
        &self,
        to: Address,
        delivery: Box<Delivery>,
        mut reply: oneshot::Receiver<Result<Reply, RequestFailure>>,
        mut timer: Pin<Box<tokio::time::Sleep>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Answered, DeliverError> {
        let router = &self.cell.bureau.router;
        let mut delivery = Some(delivery);
        let waited = std::future::poll_fn(|cx| {
            let answered = poll_answer(&mut reply, &mut timer, deadline, cx);
            match delivery.take().map(|delivery| router.try_deliver(to, delivery)) {
                Some(Err(blocked)) => Poll::Ready(Err(blocked)),
                // Queued (just now or at an earlier poll): the answer is awaited.
                Some(Ok(())) | None => answered.map(Ok),
            }
        })
        .await;
        self.cell.request_timer.put_back(timer);
        match waited {
            Ok(answered) => Ok(answered),
            // Not queued: nothing was sent, so no answer can come yet. A full mailbox is
            // waited on, then the answer as anywhere else.
            Err(blocked) => {
                Box::pin(router.deliver_blocked(to, blocked, Some(deadline), timeout)).await?;
                Ok(self.wait_for_reply(reply, deadline).await)
            }
        }
    }

    /// Waits for `reply` until `deadline`, on the agent's rearmed timer where it can (see
    /// [`RequestTimer`]).
    async fn wait_for_reply<T>(
        &self,
        mut reply: oneshot::Receiver<T>,
        deadline: Instant,
    ) -> Result<Result<T, oneshot::error::RecvError>, ()> {
        if !self.cell.multi_thread {
            // A woken task goes to the back of a current-thread runtime's queue, behind the
            // target the request just woke: requeued once, the requester finds a quick reply
            // without touching the timer. (`yield_now` would wait for the next poll of the
            // I/O driver, a system call; a multi-thread runtime would run the requester
            // again before the target.)
            let mut requeued = false;
            let quick = std::future::poll_fn(|cx| match Pin::new(&mut reply).poll(cx) {
                Poll::Ready(answered) => Poll::Ready(Some(answered)),
                Poll::Pending if requeued => Poll::Ready(None),
                Poll::Pending => {
                    requeued = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
            if let Some(answered) = quick {
                return Ok(answered);
            }
        }
        let timers = &self.cell.request_timer;
        let Some(mut timer) = timers.take(deadline) else {
            return tokio::time::timeout_at(deadline, reply).await.map_err(|_| ());
        };
        let answered = std::future::poll_fn(|cx| poll_answer(&mut reply, &mut timer, deadline, cx)).await;
        timers.put_back(timer);
        answered
    }

    /// Whether this agent includes a guarded protocol: all an agent without one pays per
    /// send, one test of an empty list, before [`guard_out`](Self::guard_out).
    #[inline(always)]
    fn guarded(&self) -> bool {
        !self.cell.kind.guards.is_empty()
    }

    /// Checks an `M` for `to` in `session` with the guards of this agent's protocols (see
    /// [`Guard`](crate::protocol::Guard)). Out of line, so that the sends of agents without
    /// guards carry none of it.
    #[cold]
    #[inline(never)]
    fn guard_out<M: Message>(&self, to: Address, session: u128) -> Result<(), SendFailure> {
        let message = crate::protocol::Outbound { to, session, message: M::NAME, schema: M::digest() };
        crate::protocol::check_outgoing(self, &self.cell.kind.guards, message)
    }

    /// Tells the guards an `M` they allowed for `to` in `session` was not sent, if
    /// `failure` says it surely did not leave.
    #[cold]
    #[inline(never)]
    fn guard_failed<M: Message>(&self, to: Address, session: u128, failure: &SendFailure) {
        if failure.may_have_been_delivered() || matches!(failure, SendFailure::Refused { .. }) {
            return;
        }
        self.guard_unsent::<M>(to, session);
    }

    /// Tells the guards an `M` they allowed for `to` in `session` was not sent.
    #[cold]
    #[inline(never)]
    fn guard_unsent<M: Message>(&self, to: Address, session: u128) {
        let message = crate::protocol::Outbound { to, session, message: M::NAME, schema: M::digest() };
        crate::protocol::tell_unsent(self, &self.cell.kind.guards, message);
    }

    /// Checks the reply `Resp` that `from` sent to this agent's request in `session` with
    /// the guards whose protocols have its type, as a handler's message is checked.
    #[cold]
    #[inline(never)]
    async fn guard_reply<Resp: Message>(&self, from: Address, session: u128) -> Result<(), RequestError> {
        let inbound = crate::protocol::Inbound { from, session, message: Resp::NAME, schema: Resp::digest() };
        for entry in self.cell.kind.guards.iter().filter(|entry| entry.covers(&inbound.schema)) {
            if let Err(refusal) = entry.guard.incoming(self, inbound).await {
                return Err(RequestError::ReplyRefused {
                    to: from,
                    protocol: entry.protocol.to_string(),
                    reply: Resp::NAME,
                    refusal: Box::new(refusal),
                });
            }
        }
        Ok(())
    }

    fn session_for_new(&self) -> u128 {
        self.current.map(|c| c.session).unwrap_or_else(rand::random)
    }

    fn trace_for_new(&self) -> u128 {
        self.current.map(|c| c.trace_id).unwrap_or_else(rand::random)
    }

    fn delivery<M: Message>(&self, message: M, reply: Option<ReplyTo>, session: u128, trace_id: u128) -> Box<Delivery> {
        Box::new(Delivery {
            from: self.address(),
            schema: M::digest(),
            name: M::NAME,
            session,
            trace_id,
            body: Body::Typed(Box::new(message)),
            reply,
            handled: None,
        })
    }
}

/// How a local request's wait ended: answered (or its target gone), or `Err` at its deadline.
type Answered = Result<Result<Result<Reply, RequestFailure>, oneshot::error::RecvError>, ()>;

/// Polls the wait for `reply` on `timer`, an agent's own (see [`RequestTimer`]), until
/// `deadline`.
fn poll_answer<T>(
    reply: &mut oneshot::Receiver<T>,
    timer: &mut Pin<Box<tokio::time::Sleep>>,
    deadline: Instant,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<Result<T, oneshot::error::RecvError>, ()>> {
    if let Poll::Ready(answered) = Pin::new(reply).poll(cx) {
        return Poll::Ready(Ok(answered));
    }
    loop {
        std::task::ready!(timer.as_mut().poll(cx));
        // Fired at an earlier request's deadline (see `RequestTimer`): rearmed to this
        // one's, and polled again to wait on it.
        if timer.deadline() >= deadline {
            return Poll::Ready(Err(()));
        }
        timer.as_mut().reset(deadline);
    }
}

/// Completes the wait of a requester in this process.
fn answer_local<M: Message>(slot: LocalReplySlot, message: M) -> Result<(), ReplyError> {
    slot.send(Ok(Reply { name: M::NAME, value: Box::new(message) })).map_err(|_| ReplyError::RequesterGone)
}

/// The typed value of a delivery that was handed back undelivered.
fn take_back<M: Message>(delivery: Delivery) -> Option<M> {
    match delivery.body {
        Body::Typed(value) => value.downcast::<M>().ok().map(|m| *m),
        Body::Json(_) => None,
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("agent", &self.cell.name)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// The answer to a message, taken over by [`Context::defer_reply`] to be sent later.
pub struct DeferredReply {
    ctx: Context,
    current: Current,
    slot: Option<ReplyTo>,
}

impl DeferredReply {
    /// Sends the answer (see [`Context::reply`]).
    pub async fn send<M: Message>(mut self, message: M) -> Result<(), ReplyError> {
        self.ctx.check_reply::<M>(&self.current)?;
        if self.slot.is_some() && self.ctx.guarded() {
            // Refused, the reply is dropped: the requester is told there is no reply.
            self.ctx.guard_out::<M>(self.current.from, self.current.session).map_err(ReplyError::Send)?;
        }
        let slot = self.slot.take();
        let answered = self.ctx.answer(self.current, slot, message).await;
        self.ctx.reply_failed::<M>(&self.current, &answered);
        answered
    }
}

impl Drop for DeferredReply {
    fn drop(&mut self) {
        match self.slot.take() {
            Some(ReplyTo::Local(slot)) => {
                // A requester that stopped waiting has nothing left to tell.
                let _ = slot.send(Err(RequestFailure::NoReply));
            }
            Some(ReplyTo::Remote(path)) => {
                // Telling a remote requester takes a send: done on the runtime, if there
                // is one; otherwise the requester's own timeout tells it.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let (identity, timeout) =
                        (self.ctx.cell.identity.clone(), self.ctx.cell.bureau.config.send_timeout);
                    runtime.spawn(async move { path.fail(&identity, RequestFailure::NoReply, timeout).await });
                }
            }
            None => {}
        }
    }
}

impl std::fmt::Debug for DeferredReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredReply").field("to", &self.current.from).field("message", &self.current.name).finish()
    }
}
