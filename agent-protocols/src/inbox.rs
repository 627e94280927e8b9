//! An auctioneer's dialogues with its bidders, and the routing of their messages to the
//! running auction (or round) they name; shared by the English, Dutch, sealed-bid and
//! double auctions.
//!
//! Each bidder has a dialogue of its own in each auction ([`auction::dialogue_of`]), under
//! the auction's declared [`Rules`]. Every bid is checked against its sender's dialogue as
//! it arrives: one out of order, from the wrong role, after the deadline, after the close,
//! or in a dialogue the sender does not have (another auction's, or one it was not invited
//! to) is refused with a [`DialogueError`], changes nothing, and its sender is told which
//! dialogue and state it hit ([`Refused`](crate::dialogue::Refused)). The check and the
//! hand-over to the running auction happen under one lock, which the close takes too: a bid
//! counts exactly when its dialogue accepted it before the close. A message only the
//! auctioneer may send (an opening, a price, a close) that reaches an auctioneer is checked
//! the same way, refused, and its sender told ([`Inbox::refuse`]).
//!
//! [`Book`] keeps an agent's dialogues of one auction kind in its storage, for auctioneers
//! and bidders ([`bidding`](crate::bidding)) alike.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::{Address, Agent, Context};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auction::{self, BIDDER};
use crate::dialogue::{DialogueError, Dialogues, Rules, Step};

/// How many messages one running auction may have waiting; more are dropped (and logged),
/// so a flood from one bidder cannot grow the auctioneer's memory.
const CAPACITY: usize = 4096;

/// How often an agent's auction dialogues are swept (the first time when it starts), and how
/// long after its deadline an open one is spared. Sweeping frees storage: dialogues older
/// than the rules' maximum age (a day) are forgotten, and those of auctions that never
/// closed (the auctioneer stopped mid-auction, or its close never reached a bidder) expire.
/// A dialogue past its deadline refuses bids whether or not it was swept, and the grace
/// keeps a running Dutch clock's dialogues open between its ticks.
const SWEEP: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(60);

/// A message that reached a running auction: its sender, and what it carries if its
/// dialogue accepted it (or why not).
pub(crate) type Arrival<T> = (Address, Result<T, DialogueError>);

/// An agent's dialogues of one auction kind, in one role (auctioneer or bidder): read from
/// its storage on first use, and swept every [`SWEEP`].
#[derive(Clone)]
pub(crate) struct Book {
    dialogues: Arc<OnceLock<Dialogues>>,
    rules: fn() -> Rules,
    role: &'static str,
}

impl Book {
    /// The dialogues under `rules` in which the agent plays `role`, swept on `agent`.
    pub(crate) fn serve(agent: &mut Agent, rules: fn() -> Rules, role: &'static str) -> Book {
        let book = Book { dialogues: Arc::default(), rules, role };
        let swept = book.clone();
        agent.on_interval(SWEEP, move |ctx: Context| {
            let book = swept.clone();
            async move {
                let swept = book.get(&ctx).and_then(|dialogues| dialogues.expire_after(now_ms(), GRACE));
                if let Err(e) = swept {
                    tracing::warn!(error = %e, role = book.role, "sweeping auction dialogues failed");
                }
            }
        });
        book
    }

    /// The dialogues, read from the agent's storage on first use.
    pub(crate) fn get(&self, ctx: &Context) -> Result<&Dialogues, DialogueError> {
        if let Some(dialogues) = self.dialogues.get() {
            return Ok(dialogues);
        }
        let storage = ctx.storage().map_err(|e| DialogueError::Storage { dialogue: 0, reason: e.to_string() })?;
        let loaded = Dialogues::load((self.rules)(), self.role, storage)?;
        Ok(self.dialogues.get_or_init(|| loaded))
    }

    /// The dialogues, once read (at the agent's start, or the first message to need them).
    pub(crate) fn loaded(&self) -> Option<&Dialogues> {
        self.dialogues.get()
    }
}

/// The running auctions of one agent, by id, with the line each one's messages go to, and
/// the agent's dialogues of that auction kind.
pub(crate) struct Inbox<T> {
    running: Arc<Mutex<HashMap<String, mpsc::Sender<Arrival<T>>>>>,
    book: Book,
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox { running: Arc::clone(&self.running), book: self.book.clone() }
    }
}

/// One running auction: receives its bidders' messages until closed (or dropped).
pub(crate) struct Opened<T> {
    id: String,
    inbox: Inbox<T>,
    messages: mpsc::Receiver<Arrival<T>>,
    /// The invited bidders whose dialogue opened, with its id.
    bidders: Vec<(Address, u128)>,
}

impl<T> Drop for Opened<T> {
    fn drop(&mut self) {
        self.inbox.running.lock().remove(&self.id);
    }
}

impl<T: Send + 'static> Inbox<T> {
    /// The inbox of `agent`, an auctioneer of auctions under `rules`; its dialogues are swept
    /// every [`SWEEP`].
    pub(crate) fn serve(agent: &mut Agent, rules: fn() -> Rules) -> Inbox<T> {
        Inbox { running: Arc::default(), book: Book::serve(agent, rules, auction::AUCTIONEER) }
    }

    /// The auctioneer's dialogues, read from its storage on first use.
    pub(crate) fn dialogues(&self, ctx: &Context) -> Result<&Dialogues, DialogueError> {
        self.book.get(ctx)
    }

    /// The auctioneer's dialogues, once read (at its start, its first auction or bid).
    pub(crate) fn loaded(&self) -> Option<&Dialogues> {
        self.book.loaded()
    }

    /// A handler for `M`, a bidder's message: `split` names the auction it is for, the
    /// bidder's step of the dialogue it is, and what it carries. The message is checked
    /// against its sender's dialogue in that auction, handed to the auction if it runs
    /// here, and its sender told if it was refused.
    pub(crate) fn route<M: agent_core::Message>(
        &self,
        split: fn(M) -> (String, &'static str, T),
    ) -> impl Fn(Context, Address, M) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
           + Send
           + Sync
           + 'static {
        let inbox = self.clone();
        move |ctx, from, message| {
            let inbox = inbox.clone();
            Box::pin(async move {
                let (auction, step, item) = split(message);
                let id = auction::dialogue_of(&auction, &from);
                if let Err(refused) = inbox.take(&ctx, &auction, id, from, step, item) {
                    tell(&ctx, id, from, refused).await;
                }
            })
        }
    }

    /// A handler for `M`, a message only the auctioneer may send (an opening, a price, a
    /// close), sent to this auctioneer: `auction_of` names the auction it claims, and `step`
    /// is its step in the rules. It is checked against its sender's dialogue in that auction
    /// here, which refuses it (from the wrong role, or in a dialogue its sender does not
    /// have) without changing it, and its sender is told which dialogue and state it hit.
    pub(crate) fn refuse<M: agent_core::Message>(
        &self,
        auction_of: fn(&M) -> &str,
        step: &'static str,
    ) -> impl Fn(Context, Address, M) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
           + Send
           + Sync
           + 'static {
        let inbox = self.clone();
        move |ctx, from, message| {
            let inbox = inbox.clone();
            Box::pin(async move {
                let auction = auction_of(&message);
                let id = auction::dialogue_of(auction, &from);
                let checked = inbox.dialogues(&ctx).and_then(|dialogues| {
                    dialogues.incoming_named(step, id, from, now_ms()).map(drop).map_err(|e| late(dialogues, e))
                });
                match checked {
                    Err(refused) => tell(&ctx, id, from, refused).await,
                    // The auction rules let only the auctioneer send these; a dialogue here
                    // has a bidder as its peer, so none can take this step.
                    Ok(()) => tracing::error!(auction, %from, step, "an auctioneer's step taken by a bidder"),
                }
            })
        }
    }

    /// Checks `step` from `from` in dialogue `id` of `auction` and hands the outcome to the
    /// auction if it runs here. A bidder's step never moves the dialogue's deadline: the
    /// auction's close bounds every state a bid leads to.
    fn take(
        &self,
        ctx: &Context,
        auction: &str,
        id: u128,
        from: Address,
        step: &str,
        item: T,
    ) -> Result<(), DialogueError> {
        let dialogues = self.dialogues(ctx)?;
        let running = self.running.lock();
        let deadline_ms = dialogues.get(id).and_then(|d| d.deadline_ms);
        let checked = dialogues
            .incoming_with(step, id, from, now_ms(), until(deadline_ms))
            .map(drop)
            .map_err(|e| late(dialogues, e));
        if let Some(line) = running.get(auction) {
            if line.try_send((from, checked.clone().map(|()| item))).is_err() {
                tracing::warn!(auction, %from, "an auction's line is full; a message was dropped");
            }
        }
        checked
    }

    /// Opens auction `id` to `bidders`: a dialogue with each, opened by the auctioneer's
    /// `opening` step, whose state lasts until `deadline_ms`. A bidder whose dialogue cannot
    /// be opened (listed twice, or storage failing) is left out, and logged.
    pub(crate) fn open(
        &self,
        ctx: &Context,
        id: &str,
        bidders: &[Address],
        opening: &str,
        deadline_ms: u64,
    ) -> Result<Opened<T>, DialogueError> {
        let dialogues = self.dialogues(ctx)?;
        let (to, messages) = mpsc::channel(CAPACITY);
        self.running.lock().insert(id.to_owned(), to);
        let mut opened = Opened { id: id.to_owned(), inbox: self.clone(), messages, bidders: Vec::new() };
        let now = now_ms();
        for &bidder in bidders {
            let dialogue = auction::dialogue_of(id, &bidder);
            match dialogues.open_with(opening, dialogue, bidder, BIDDER, now, Step::default().until(deadline_ms)) {
                Ok(_) => opened.bidders.push((bidder, dialogue)),
                Err(e) => tracing::warn!(auction = id, %bidder, error = %e, "a bidder left out of an auction"),
            }
        }
        Ok(opened)
    }
}

impl<T> Opened<T> {
    /// The bidders in the auction (those whose dialogue opened).
    pub(crate) fn bidders(&self) -> Vec<Address> {
        self.bidders.iter().map(|(bidder, _)| *bidder).collect()
    }

    /// The next message that reached the auction, waiting for one until `closes`; `None`
    /// once `closes` has passed and every message already there has been taken.
    pub(crate) async fn next_before(&mut self, closes: Instant) -> Option<Arrival<T>> {
        match tokio::time::timeout_at(closes, self.messages.recv()).await {
            Ok(next) => next,
            Err(_) => self.messages.try_recv().ok(),
        }
    }

    /// Records the auctioneer's `step` (not allowed past the deadline unless the rules say
    /// so) in each bidder's dialogue, moving its deadline to `deadline_ms` if given, and
    /// sends `message` to those in whose dialogue it was recorded.
    pub(crate) async fn tell<M: agent_core::Message + Clone + Sync>(
        &self,
        ctx: &Context,
        step: &str,
        deadline_ms: Option<u64>,
        message: &M,
    ) {
        let Some(dialogues) = self.inbox.book.loaded() else { return };
        let now = now_ms();
        let told: Vec<Address> = self
            .bidders
            .iter()
            .filter(|(bidder, id)| match dialogues.outgoing_with(step, *id, now, until(deadline_ms)) {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(%bidder, error = %e, step, "an auction message not sent: its dialogue refused it");
                    false
                }
            })
            .map(|(bidder, _)| *bidder)
            .collect();
        tell_all(ctx, &told, message).await;
    }

    /// Closes the auction with the auctioneer's terminal `step` in every bidder's dialogue,
    /// under the lock its bids are checked under, and returns what reached it before: from
    /// now on every bid is refused (as late, or as after the close). Tell the bidders the
    /// result next, with [`tell_closed`](Self::tell_closed).
    pub(crate) fn close(&mut self, step: &str) -> Vec<Arrival<T>> {
        {
            let mut running = self.inbox.running.lock();
            running.remove(&self.id);
            if let Some(dialogues) = self.inbox.book.loaded() {
                let now = now_ms();
                for (bidder, id) in &self.bidders {
                    if let Err(e) = dialogues.outgoing_named(step, *id, now) {
                        tracing::warn!(%bidder, error = %e, step, "a bidder's dialogue could not be closed");
                    }
                }
            }
        }
        self.messages.close();
        let mut rest = Vec::new();
        while let Ok(arrival) = self.messages.try_recv() {
            rest.push(arrival);
        }
        rest
    }

    /// Sends `message` (the close already recorded by [`close`](Self::close)) to every
    /// bidder.
    pub(crate) async fn tell_closed<M: agent_core::Message + Clone + Sync>(&self, ctx: &Context, message: &M) {
        tell_all(ctx, &self.bidders(), message).await;
    }
}

/// A refusal of a closed dialogue whose deadline had passed is told as late: the bid
/// came after the close, whether or not the result was out yet.
fn late(dialogues: &Dialogues, refused: DialogueError) -> DialogueError {
    let DialogueError::Closed { dialogue, state, message } = refused else { return refused };
    let now_ms = now_ms();
    match dialogues.get(dialogue).and_then(|d| d.deadline_ms).filter(|deadline| now_ms > *deadline) {
        Some(deadline_ms) => DialogueError::Late { dialogue, state, message, deadline_ms, now_ms },
        None => DialogueError::Closed { dialogue, state, message },
    }
}

/// Tells `to` why its message in dialogue `id` was refused.
pub(crate) async fn tell(ctx: &Context, id: u128, to: Address, refused: DialogueError) {
    tracing::debug!(%to, error = %refused, "an auction message refused");
    if let Some(told) = refused.refusal() {
        if let Err(e) = ctx.send_in(id, to, told).await {
            tracing::debug!(%to, error = %e, "a refusal was not delivered; the refusal stands");
        }
    }
}

/// Sends `message` to each of `to` side by side and waits for every outcome; a failed send
/// is logged (the auction goes on without that bidder hearing it).
pub(crate) async fn tell_all<M: agent_core::Message + Clone + Sync>(ctx: &Context, to: &[Address], message: &M) {
    let mut sends = tokio::task::JoinSet::new();
    for &peer in to {
        let (ctx, message) = (ctx.clone(), message.clone());
        sends.spawn(async move { (peer, ctx.send(peer, message).await) });
    }
    while let Some(joined) = sends.join_next().await {
        if let Ok((peer, Err(e))) = joined {
            tracing::debug!(%peer, error = %e, message = M::NAME, "an auction message was not delivered");
        }
    }
}

fn now_ms() -> u64 {
    agent_core::envelope::unix_now_ms()
}

/// A step that keeps the auction's deadline, if it has one, instead of the rules'.
fn until(deadline_ms: Option<u64>) -> Step {
    match deadline_ms {
        Some(deadline_ms) => Step::default().until(deadline_ms),
        None => Step::default(),
    }
}
