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
//! counts exactly when its dialogue accepted it before the close. Each running auction's
//! line holds at most [`CAPACITY`] messages not yet taken by the auction: room on it is
//! taken before the dialogue is asked, so a bid arriving when the line is full is refused
//! ([`Untaken::Full`]), its dialogue unchanged, and its sender told to try again; a bid its
//! dialogue accepted is never dropped. A message only the
//! auctioneer may send (an opening, a price, a close) that reaches an auctioneer is checked
//! the same way, refused, and its sender told ([`Inbox::refuse`]).
//!
//! [`Book`] keeps an agent's dialogues of one auction kind in its storage, for auctioneers
//! and bidders ([`bidding`](crate::bidding)) alike.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::envelope::unix_now_ms as now_ms;
use agent_core::{Address, Agent, Context};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auction::{self, BIDDER};
use crate::dialogue::{DialogueError, Dialogues, RefusalCause, Refused, Rules, Standing, Step};

/// How many messages one running auction may have waiting; more are refused before their
/// dialogue sees them ([`Untaken::Full`]), so a flood from one bidder cannot grow the
/// auctioneer's memory and no accepted bid is lost.
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

/// Why a running auction did not take a bidder's message. Either way the message changed
/// nothing, and its sender is told ([`Untaken::refusal`]).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Untaken {
    /// Its dialogue refused it.
    #[error(transparent)]
    Refused(#[from] DialogueError),
    /// The auction's line was full (the auction is behind on counting what already
    /// reached it): the message was refused before its dialogue saw it, and may be sent
    /// again.
    #[error("dialogue {dialogue:032x}: the auction already has {waiting} messages waiting, the most it holds; {message} refused before its dialogue saw it, send it again")]
    Full {
        /// The id.
        dialogue: u128,
        /// Where the dialogue stands, unchanged.
        standing: Standing,
        /// The refused message.
        message: String,
        /// How many messages wait on the line.
        waiting: usize,
    },
}

impl Untaken {
    /// What to tell the sender, if anything (nothing when the auctioneer's storage failed).
    pub(crate) fn refusal(&self) -> Option<Refused> {
        match self {
            Untaken::Refused(refused) => refused.refusal(),
            Untaken::Full { dialogue, standing, .. } => Some(Refused {
                dialogue: *dialogue,
                standing: standing.clone(),
                expected: Vec::new(),
                deadline_ms: None,
                cause: RefusalCause::Busy,
                detail: self.to_string(),
            }),
        }
    }
}

/// The running auctions of one agent, by id, with the line each one's messages go to, and
/// the agent's dialogues of that auction kind.
pub(crate) struct Inbox<T> {
    running: Arc<Mutex<HashMap<String, mpsc::Sender<Arrival<T>>>>>,
    book: Book,
    /// How many messages each running auction's line holds ([`CAPACITY`]).
    capacity: usize,
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox { running: Arc::clone(&self.running), book: self.book.clone(), capacity: self.capacity }
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
        Inbox { running: Arc::default(), book: Book::serve(agent, rules, auction::AUCTIONEER), capacity: CAPACITY }
    }

    /// The same inbox, whose auctions opened from now on hold `capacity` waiting messages
    /// (at least 1) instead of [`CAPACITY`].
    pub(crate) fn with_capacity(mut self, capacity: usize) -> Inbox<T> {
        self.capacity = capacity.max(1);
        self
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
                if let Err(untaken) = inbox.take(&ctx, &auction, id, from, step, item) {
                    tracing::debug!(%from, error = %untaken, "an auction message not taken");
                    send_refusal(&ctx, id, from, untaken.refusal()).await;
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
    /// auction if it runs here. Room on its line is taken first, so the dialogue never
    /// accepts a message the auction then cannot take: with the line full, the message is
    /// refused ([`Untaken::Full`]) and the dialogue left as it was. A bidder's step never
    /// moves the dialogue's deadline: the auction's close bounds every state a bid leads to.
    fn take(&self, ctx: &Context, auction: &str, id: u128, from: Address, step: &str, item: T) -> Result<(), Untaken> {
        let dialogues = self.dialogues(ctx)?;
        let running = self.running.lock();
        // Under `running`'s lock a listed auction's receiver is alive (dropping or closing
        // an auction unlists it under this lock first), so the only failure is a full line.
        let room = match running.get(auction).map(|line| (line.try_reserve(), line)) {
            None => None,
            Some((Ok(room), _)) => Some(room),
            Some((Err(_), line)) => {
                return Err(Untaken::Full {
                    dialogue: id,
                    standing: dialogues.get(id).map_or(Standing::NoSuchDialogue, |d| d.standing(dialogues.rules())),
                    message: step.to_owned(),
                    waiting: line.max_capacity() - line.capacity(),
                });
            }
        };
        let deadline_ms = dialogues.get(id).and_then(|d| d.deadline_ms);
        let checked = dialogues
            .incoming_with(step, id, from, now_ms(), until(deadline_ms))
            .map(drop)
            .map_err(|e| late(dialogues, e));
        if let Some(room) = room {
            room.send((from, checked.clone().map(|()| item)));
        }
        Ok(checked?)
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
        let (to, messages) = mpsc::channel(self.capacity);
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
        Some(deadline_ms) => DialogueError::Late {
            dialogue,
            standing: Box::new(Standing::Closed { state }),
            message,
            deadline_ms,
            now_ms,
            expected: Box::default(),
        },
        None => DialogueError::Closed { dialogue, state, message },
    }
}

/// Tells `to` why its message in dialogue `id` was refused.
pub(crate) async fn tell(ctx: &Context, id: u128, to: Address, refused: DialogueError) {
    tracing::debug!(%to, error = %refused, "an auction message refused");
    send_refusal(ctx, id, to, refused.refusal()).await;
}

/// Sends `refusal`, if there is one, to `to` in dialogue `id`.
async fn send_refusal(ctx: &Context, id: u128, to: Address, refusal: Option<Refused>) {
    if let Some(told) = refusal {
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

/// A step that keeps the auction's deadline, if it has one, instead of the rules'.
fn until(deadline_ms: Option<u64>) -> Step {
    match deadline_ms {
        Some(deadline_ms) => Step::default().until(deadline_ms),
        None => Step::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use agent_core::{Agent, Bureau, Identity, Message};

    use super::*;
    use crate::english::{self, Closed, Opening, Raise};
    use crate::sealed_bid::SignedBid;

    /// The line of the auction under test holds this many raises, and the bidder sends more.
    const LINE: usize = 3;
    const SENT: usize = 8;

    /// An English auction that takes nothing from its line while a bidder raises: once the
    /// line is full, each further raise is refused before its dialogue sees it and its
    /// sender is told; every raise the dialogue accepted is among what the close returns.
    #[tokio::test]
    async fn a_full_line_refuses_a_bid_before_its_dialogue_accepts_it_and_loses_none_it_accepted() {
        let bureau = Bureau::new().unwrap();
        let mut auctioneer = Agent::builder("auctioneer").build().unwrap();
        let inbox: Inbox<SignedBid> = Inbox::serve(&mut auctioneer, english::rules).with_capacity(LINE);
        let route = inbox.route(|Raise(bid): Raise| (bid.auction.clone(), Raise::NAME, bid));
        auctioneer.include(english::protocol().on_message(route));
        let auctioneer = bureau.add(auctioneer).unwrap();
        let mut bidder = Agent::builder("bidder").seed("line bidder").build().unwrap();
        let refusals: Arc<Mutex<Vec<Refused>>> = Arc::default();
        let told = refusals.clone();
        bidder.on_message(move |_: Context, _: Address, refused: Refused| {
            told.lock().push(refused);
            std::future::ready(())
        });
        let bidder = bureau.add(bidder).unwrap();

        let auction = "a full line";
        let ctx = bureau.context(auctioneer).unwrap();
        let mut opened = inbox.open(&ctx, auction, &[bidder], Opening::NAME, now_ms() + 60_000).unwrap();
        let identity = Identity::from_seed("line bidder");
        let bidder_ctx = bureau.context(bidder).unwrap();
        for amount in 1..=SENT as u128 {
            bidder_ctx.send(auctioneer, Raise(SignedBid::sign(&identity, auction, amount))).await.unwrap();
        }
        let id = auction::dialogue_of(auction, &bidder);
        let dialogues = inbox.loaded().unwrap();
        let accepted = || dialogues.get(id).map_or(0, |d| d.said.iter().filter(|s| s.message == Raise::NAME).count());
        for _ in 0..300 {
            if accepted() + refusals.lock().len() >= SENT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let accepted = accepted();
        let taken = opened.close(Closed::NAME);
        assert!(taken.iter().all(|(from, bid)| *from == bidder && bid.is_ok()), "{taken:?}");
        assert_eq!(taken.len(), accepted, "every raise its dialogue accepted reaches the auction");
        assert_eq!(accepted, LINE, "the line's room, and no more");
        let refusals = refusals.lock().clone();
        assert_eq!(refusals.len(), SENT - LINE, "every other raise refused, and its sender told: {refusals:?}");
        for refused in &refusals {
            assert_eq!((refused.dialogue, refused.state()), (id, Some("open")), "{refused:?}");
            assert_eq!(refused.cause, RefusalCause::Busy, "{refused:?}");
        }
        bureau.shutdown().await.unwrap();
    }
}
