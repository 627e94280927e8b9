//! Contract-net (FIPA Contract Net Interaction Protocol).
//!
//! The initiator calls for proposals with a deadline; each participant proposes or
//! refuses; at the deadline (or once everyone has answered) the initiator accepts some
//! proposals and rejects the rest; a proposal that comes after the deadline is rejected
//! with the reason [`RejectReason::Late`]; a winner performs the task and reports done (with
//! a result) or failure. The initiator may withdraw a call ([`cancel`]); an award with no
//! report in time is cancelled.
//!
//! Each participant's part is a dialogue of its own (its id is the session its messages
//! travel in), checked on both sides against [`rules`]. The initiator side is [`call`] and
//! [`award`], plain async functions usable from any handler. The participant side is a
//! [`Participant`] attached to an agent with [`serve`].
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> start
//!     start --> called: Cfp (initiator)
//!     called --> proposed: Propose (participant)
//!     called --> refused: Refuse (participant)
//!     called --> rejected: Reject (initiator, also after the deadline: late)
//!     called --> cancelled: Cancel (initiator)
//!     proposed --> cancelled: Cancel (initiator)
//!     proposed --> called: Cfp (initiator; a revised call)
//!     proposed --> awarded: Accept (initiator)
//!     proposed --> rejected: Reject (initiator)
//!     awarded --> done: Done (participant)
//!     awarded --> failed: Failure (participant)
//!     awarded --> cancelled: Cancel (initiator), or Report::Cancelled (participant)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::ledger::{DealId, EscrowId};
use agent_core::{Address, Agent, Context, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dialogue::{Data, Dialogue, DialogueError, Dialogues, Refused, Rules, Step, EXPIRED};
use crate::settlement::{refund_when_due, release_by, REFUND_GRACE};

/// The role that calls for proposals.
pub const INITIATOR: &str = "initiator";
/// The role that proposes and performs.
pub const PARTICIPANT: &str = "participant";

/// Why a contract-net call or award could not run. What the participants did (refusals,
/// failures, silence) is never an error: it is in the [`Called`] and [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum ContractNetError {
    /// The agent's dialogues could not be read, or the book belongs to the other role.
    #[error("contract-net dialogues unavailable: {0}")]
    Dialogues(String),
    /// A step could not be recorded (storage) or was refused by the rules.
    #[error(transparent)]
    Dialogue(#[from] DialogueError),
    /// The task could not be encoded as JSON.
    #[error("the task cannot be encoded: {0}")]
    Encode(String),
    /// The initiator has no wallet to pay from (its bureau has no ledger).
    #[error("no wallet to pay from: {0}")]
    Wallet(String),
}

/// A call for proposals: the task, as JSON, and when proposals are due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Cfp")]
pub struct Cfp {
    /// The task.
    pub task: serde_json::Value,
    /// Proposals later than this (ms since the Unix epoch) are rejected as late.
    pub deadline_ms: u64,
}

/// A participant's answer to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Answer")]
pub enum Answer {
    /// A proposal, held for the initiator until `hold_until_ms` (a participant served by
    /// [`serve`] always sets it: to what it chose, or [`DEFAULT_HOLD_AFTER_DEADLINE`] past the
    /// call's deadline).
    Propose {
        /// The proposal.
        proposal: serde_json::Value,
        /// Until when the participant holds what it proposes (a seat, a lot).
        hold_until_ms: Option<u64>,
        /// The wallet to pay if the proposal wins and is paid through escrow.
        #[serde(default)]
        pay_to: Option<Address>,
    },
    /// No proposal.
    Refuse {
        /// Why.
        reason: String,
    },
}

/// The initiator's decision on a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Accept")]
pub struct Accept;

/// Why a proposal was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RejectReason {
    /// Another proposal was chosen.
    NotChosen,
    /// It came after the deadline (FIPA requires the answer; JADE drops it silently).
    Late,
}

/// A proposal rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Reject")]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
}

/// What a winner reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Report")]
pub enum Report {
    /// Done, with the result.
    Done {
        /// The result.
        result: serde_json::Value,
    },
    /// Could not do it.
    Failure {
        /// Why.
        reason: String,
    },
    /// The participant withdrew from the award (the FIPA cancel, from the participant's
    /// side): the task will not be done, and the dialogue is over.
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// Why an awarded task was not done: it failed, or the participant withdrew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unperformed {
    /// Tried, and failed: reported as [`Report::Failure`].
    #[error("failed: {0}")]
    Failed(String),
    /// Withdrawn by the participant: reported as [`Report::Cancelled`].
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl From<String> for Unperformed {
    fn from(reason: String) -> Self {
        Unperformed::Failed(reason)
    }
}

impl From<&str> for Unperformed {
    fn from(reason: &str) -> Self {
        Unperformed::Failed(reason.into())
    }
}

/// An award or a call withdrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Cancel")]
pub struct Cancel {
    /// Why.
    pub reason: String,
}

/// The contract-net protocol as agents publish it: its messages, which reply answers which
/// request, and its digest, by which participants are found in the almanac. [`serve`]
/// includes it (with the participant's handlers) in an agent.
pub fn protocol() -> agent_core::Protocol {
    agent_core::Protocol::new("agora.contract-net", "1.0.0")
        .message::<Cfp>()
        .message::<Answer>()
        .message::<Accept>()
        .message::<Reject>()
        .message::<Report>()
        .message::<Cancel>()
        .message::<Refused>()
        .replies::<Cfp, Answer>()
        .replies::<Accept, Report>()
}

/// The agents registered in `directory` as speaking contract-net, with every attribute in
/// `attributes` (a route, a region, a kind of goods), at most `limit`.
pub async fn find_participants(
    directory: &dyn almanac::Directory,
    attributes: &[(&str, &str)],
    limit: usize,
) -> Result<Vec<Address>, almanac::AlmanacError> {
    let mut query = almanac::Query::protocol(protocol().digest());
    for (key, value) in attributes {
        query = query.with_attribute(*key, *value);
    }
    let mut found = Vec::new();
    loop {
        let page = directory.query(query.clone()).await?;
        found.extend(page.records.iter().map(|r| r.address));
        match page.next {
            Some(next) if found.len() < limit => query = query.after(next),
            _ => break,
        }
    }
    found.truncate(limit);
    Ok(found)
}

/// How long after a call's deadline a proposal is held when its participant gives it no
/// hold of its own: time for the initiator to weigh the proposals and award, after which
/// what the proposal held is released ([`Participant::release`]) and a later award fails.
/// A participant that must hold longer (a decision taking hours) sets its own hold.
pub const DEFAULT_HOLD_AFTER_DEADLINE: Duration = Duration::from_secs(60);

/// How long a contract-net dialogue is kept from its call: the longest a task may take.
pub const MAX_AWARD_AGE: Duration = Duration::from_secs(31 * 24 * 3600);

/// The contract-net dialogue rules (both roles).
pub fn rules() -> Rules {
    Rules::builder("contract-net")
        .initial("start")
        .step::<Cfp>("start", INITIATOR, "called")
        .named_step("Propose", "called", PARTICIPANT, "proposed", false)
        .named_step("Refuse", "called", PARTICIPANT, "refused", false)
        .named_step("Reject", "called", INITIATOR, "rejected", true)
        .named_step("Cancel", "called", INITIATOR, "cancelled", true)
        .named_step("Accept", "proposed", INITIATOR, "awarded", false)
        .named_step("Reject", "proposed", INITIATOR, "rejected", true)
        .named_step("Cancel", "proposed", INITIATOR, "cancelled", true)
        .step::<Cfp>("proposed", INITIATOR, "called")
        .named_step("Done", "awarded", PARTICIPANT, "done", false)
        .named_step("Failure", "awarded", PARTICIPANT, "failed", false)
        .named_step("Cancel", "awarded", INITIATOR, "cancelled", true)
        .named_step("Cancel", "awarded", PARTICIPANT, "cancelled", true)
        .terminal("refused")
        .terminal("rejected")
        .terminal("cancelled")
        .terminal("done")
        .terminal("failed")
        // An award lasts as long as its work (a lead time of days): its dialogue must
        // outlive it on both sides, or the report would find no dialogue.
        .max_age(MAX_AWARD_AGE)
        .build()
        .unwrap_or_else(|e| unreachable!("the contract-net rules are valid: {e}"))
}

fn now_ms() -> u64 {
    agent_core::envelope::unix_now_ms()
}

fn answer_step(answer: &Answer) -> &'static str {
    match answer {
        Answer::Propose { .. } => "Propose",
        Answer::Refuse { .. } => "Refuse",
    }
}

fn report_step(report: &Report) -> &'static str {
    match report {
        Report::Done { .. } => "Done",
        Report::Failure { .. } => "Failure",
        Report::Cancelled { .. } => "Cancel",
    }
}

/// An agent's contract-net dialogues in one role, loaded from its storage on first use.
#[derive(Clone, Default)]
pub struct Book {
    dialogues: Arc<OnceLock<Dialogues>>,
}

impl Book {
    fn get(&self, ctx: &Context, role: &str) -> Result<&Dialogues, ContractNetError> {
        if let Some(dialogues) = self.dialogues.get() {
            return match dialogues.role() == role {
                true => Ok(dialogues),
                false => Err(ContractNetError::Dialogues(format!(
                    "this book holds the {} side of contract-net; the {role} side needs a book of its own",
                    dialogues.role()
                ))),
            };
        }
        let storage = ctx.storage().map_err(|e| ContractNetError::Dialogues(e.to_string()))?;
        let loaded = Dialogues::load(rules(), role, storage)?;
        Ok(self.dialogues.get_or_init(|| loaded))
    }

    /// The dialogues, once loaded.
    pub fn dialogues(&self) -> Option<&Dialogues> {
        self.dialogues.get()
    }
}

/// A proposal received in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal<P> {
    /// Who proposed.
    pub from: Address,
    /// The dialogue with them.
    pub dialogue: u128,
    /// What they propose.
    pub proposal: P,
    /// Until when they hold it.
    pub hold_until_ms: Option<u64>,
    /// Their wallet, for [`award_and_pay`].
    pub pay_to: Option<Address>,
}

/// What a call for proposals gathered by its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Called<P> {
    /// The call's id, kept with each of its dialogues: what [`recall`] gathers them by.
    pub call: u128,
    /// Proposals in time, in the order they came.
    pub proposals: Vec<Proposal<P>>,
    /// Who refused, with their reasons.
    pub refused: Vec<(Address, String)>,
    /// Who did not answer in time (a later proposal is rejected as late).
    pub silent: Vec<Address>,
}

/// How a contract-net round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<R> {
    /// Some proposals were accepted: each winner's report (a result, or why it failed or
    /// gave no report in time).
    Awarded(Vec<(Address, Result<R, String>)>),
    /// Nobody proposed in time.
    NoProposals,
    /// Every winner failed.
    AllFailed(Vec<(Address, String)>),
    /// The initiator chose no proposal: every proposer was rejected.
    NoneChosen,
    /// The initiator withdrew the call ([`cancel`]): every proposer was told.
    Cancelled,
}

/// Calls `participants` for proposals on `task`, each in a dialogue of its own, and
/// gathers the answers until all have answered or `deadline` has passed. A proposal that
/// arrives later is rejected with [`RejectReason::Late`]. Use [`award`] next.
pub async fn call<T: Serialize, P: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    participants: &[Address],
    task: &T,
    deadline: Duration,
) -> Result<Called<P>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    let (task, until, deadline_ms) = prepare(task, deadline)?;
    let call = rand_id();
    let kept = kept(call, None);
    let mut targets = Vec::with_capacity(participants.len());
    for &participant in participants {
        let id: u128 = rand_id();
        let step = Step::default().until(deadline_ms).keeping(kept.clone());
        dialogues.open_with(Cfp::NAME, id, participant, PARTICIPANT, now_ms(), step)?;
        targets.push((participant, id));
    }
    Ok(gather(ctx, book, dialogues, call, targets, task, deadline, until, deadline_ms).await)
}

/// The iterated variant: calls the proposers of `called` again, in the same dialogues, with
/// a revised `task` (a lower budget, a changed quantity), each answering with a new
/// proposal or a refusal by the new `deadline`. Their earlier proposals are void: each
/// participant releases what it held for them. Proposers that are not called again should
/// be rejected (a later [`award`] or [`cancel`] does it).
pub async fn call_again<T: Serialize, P: DeserializeOwned + Send + 'static, Q>(
    ctx: &Context,
    book: &Book,
    called: &Called<Q>,
    task: &T,
    deadline: Duration,
) -> Result<Called<P>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    let (task, until, deadline_ms) = prepare(task, deadline)?;
    let kept = kept(called.call, None);
    let mut targets = Vec::with_capacity(called.proposals.len());
    for proposal in &called.proposals {
        let step = Step::default().until(deadline_ms).keeping(kept.clone());
        dialogues.outgoing_with(Cfp::NAME, proposal.dialogue, now_ms(), step)?;
        targets.push((proposal.from, proposal.dialogue));
    }
    Ok(gather(ctx, book, dialogues, called.call, targets, task, deadline, until, deadline_ms).await)
}

/// The task as JSON, and the deadline on both clocks: the participants are told
/// `deadline_ms`, and answers are gathered until the same instant.
fn prepare<T: Serialize>(
    task: &T,
    deadline: Duration,
) -> Result<(serde_json::Value, tokio::time::Instant, u64), ContractNetError> {
    let task = serde_json::to_value(task).map_err(|e| ContractNetError::Encode(e.to_string()))?;
    Ok((task, tokio::time::Instant::now() + deadline, now_ms().saturating_add(deadline.as_millis() as u64)))
}

/// Sends the call to each (participant, dialogue) and gathers the answers until `until`.
#[allow(clippy::too_many_arguments)]
async fn gather<P: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    dialogues: &Dialogues,
    call: u128,
    targets: Vec<(Address, u128)>,
    task: serde_json::Value,
    deadline: Duration,
    until: tokio::time::Instant,
    deadline_ms: u64,
) -> Called<P> {
    let late_window = deadline.max(Duration::from_secs(1));
    let participants: Vec<Address> = targets.iter().map(|(p, _)| *p).collect();
    let mut answers = tokio::task::JoinSet::new();
    for (participant, id) in targets {
        let ctx = ctx.clone();
        let cfp = Cfp { task: task.clone(), deadline_ms };
        let book = book.clone();
        // Each call waits past the deadline, so a late proposal is seen and answered. The
        // answer's step is checked here, as it arrives, so answers are recorded side by side.
        answers.spawn(async move {
            let answer = ctx.request_in::<Cfp, Answer>(id, participant, cfp, Some(deadline + late_window)).await;
            let step = match (&answer, book.dialogues()) {
                (Ok(answer), Some(dialogues)) => {
                    let step = Step::default().keeping(kept(call, Some(answer)));
                    Some(dialogues.incoming_with(answer_step(answer), id, participant, now_ms(), step).map(drop))
                }
                _ => None,
            };
            (participant, id, answer.map_err(|e| e.to_string()), step, book)
        });
    }
    let mut called = Called { call, proposals: Vec::new(), refused: Vec::new(), silent: Vec::new() };
    let mut answered = BTreeMap::new();
    while let Ok(Some(joined)) = tokio::time::timeout_at(until, answers.join_next()).await {
        // No answer (the participant ended without one, or is unreachable) is silence.
        let Ok((from, id, Ok(answer), Some(step), _)) = joined else { continue };
        match step {
            Ok(()) => {
                answered.insert(from, ());
                match answer {
                    Answer::Propose { proposal, hold_until_ms, pay_to } => match serde_json::from_value(proposal) {
                        Ok(proposal) => {
                            called.proposals.push(Proposal { from, dialogue: id, proposal, hold_until_ms, pay_to })
                        }
                        Err(e) => {
                            // Not a proposal this initiator can weigh: rejected, so its hold ends.
                            reject(ctx, dialogues, id, from, RejectReason::NotChosen).await;
                            called.refused.push((from, format!("an unreadable proposal: {e}")));
                        }
                    },
                    Answer::Refuse { reason } => called.refused.push((from, reason)),
                }
            }
            // Past the deadline by the dialogue's clock: late, and told so.
            Err(DialogueError::Late { .. }) if matches!(answer, Answer::Propose { .. }) => {
                reject(ctx, dialogues, id, from, RejectReason::Late).await;
            }
            Err(refused) => tell(ctx, id, from, refused).await,
        }
    }
    called.silent = participants.iter().filter(|p| !answered.contains_key(p)).copied().collect();
    // The rest answer late, if at all: each late proposal gets its rejection (one that
    // arrived just before the deadline but was not gathered in time is late too).
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(joined) = answers.join_next().await {
            let Ok((from, id, Ok(Answer::Propose { .. }), _, book)) = joined else { continue };
            let Some(dialogues) = book.dialogues() else { continue };
            reject(&ctx, dialogues, id, from, RejectReason::Late).await;
        }
    });
    called
}

/// What an initiator keeps with each dialogue of a call ([`Dialogue::data`]): the call, and
/// the participant's answer once it came. A restarted initiator finds its calls by it.
#[derive(Serialize, Deserialize)]
struct Kept<A> {
    call: String,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    answer: Option<A>,
}

fn kept(call: u128, answer: Option<&Answer>) -> Data {
    let kept = Kept { call: format!("{call:032x}"), answer };
    // Nothing in a call id or an answer (JSON already) can fail to encode.
    Data::encode(&kept).unwrap_or_else(|_| Data::from(serde_json::Value::Null))
}

/// The calls this initiator made that still wait for a decision, read from its storage:
/// after a restart (the same storage, a new process), each can be awarded, paid, called
/// again or cancelled as if [`call`] had just returned it. A call waits while a proposal in
/// it is neither accepted, rejected nor cancelled, or a participant has not answered; its
/// proposals are those received before the restart, in the order they came, and its
/// silent participants those that had not answered. Calls come in the order they were made.
pub fn recall<P: DeserializeOwned>(ctx: &Context, book: &Book) -> Result<Vec<Called<P>>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    let mut calls: BTreeMap<u128, Recalled<P>> = BTreeMap::new();
    for dialogue in dialogues.all() {
        let Some(kept) = dialogue.data.and_then(|data| data.decode::<Kept<Answer>>().ok()) else {
            continue;
        };
        let Ok(call) = u128::from_str_radix(&kept.call, 16) else { continue };
        let Recalled { opened_ms, proposals, called } = calls.entry(call).or_insert_with(|| Recalled {
            opened_ms: dialogue.opened_ms,
            proposals: Vec::new(),
            called: Called { call, proposals: Vec::new(), refused: Vec::new(), silent: Vec::new() },
        });
        *opened_ms = (*opened_ms).min(dialogue.opened_ms);
        let from = dialogue.peer;
        match (dialogue.state.as_str(), kept.answer) {
            ("proposed", Some(Answer::Propose { proposal, hold_until_ms, pay_to })) => {
                match serde_json::from_value(proposal) {
                    Ok(proposal) => {
                        let came = dialogue.said.last().map_or(0, |said| said.at_ms);
                        proposals
                            .push((came, Proposal { from, dialogue: dialogue.id, proposal, hold_until_ms, pay_to }));
                    }
                    Err(e) => called.refused.push((from, format!("an unreadable proposal: {e}"))),
                }
            }
            ("refused", Some(Answer::Refuse { reason })) => called.refused.push((from, reason)),
            ("called", _) => called.silent.push(from),
            _ => {}
        }
    }
    let mut waiting: Vec<(u64, Called<P>)> = calls
        .into_values()
        .map(|Recalled { opened_ms, mut proposals, mut called }| {
            proposals.sort_by_key(|(came, _)| *came);
            called.proposals = proposals.into_iter().map(|(_, proposal)| proposal).collect();
            (opened_ms, called)
        })
        .filter(|(_, called)| !called.proposals.is_empty() || !called.silent.is_empty())
        .collect();
    waiting.sort_by_key(|(opened, _)| *opened);
    Ok(waiting.into_iter().map(|(_, called)| called).collect())
}

/// A call being read back by [`recall`]: when its first dialogue opened, and its proposals
/// with when each came.
struct Recalled<P> {
    opened_ms: u64,
    proposals: Vec<(u64, Proposal<P>)>,
    called: Called<P>,
}

/// What a winner's report (or its absence) means: its result, or why there is none. With
/// no report in time the award is withdrawn, so the winner stops too.
async fn outcome_of<R: DeserializeOwned>(
    ctx: &Context,
    dialogues: &Dialogues,
    id: u128,
    winner: Address,
    report: Result<Report, agent_core::RequestError>,
) -> Result<R, String> {
    match report {
        Ok(report) => match dialogues.incoming_named(report_step(&report), id, winner, now_ms()) {
            Ok(_) => match report {
                Report::Done { result } => {
                    serde_json::from_value(result).map_err(|e| format!("an unreadable result: {e}"))
                }
                Report::Failure { reason } => Err(reason),
                Report::Cancelled { reason } => Err(format!("cancelled by the participant: {reason}")),
            },
            Err(refused) => {
                let reason = refused.to_string();
                tell(ctx, id, winner, refused).await;
                Err(reason)
            }
        },
        Err(e) => {
            if dialogues.outgoing_named("Cancel", id, now_ms()).is_ok() {
                // The winner may be gone; the award is withdrawn either way.
                let _ = ctx.send_in(id, winner, Cancel { reason: format!("no report in time: {e}") }).await;
            }
            Err(format!("no report: {e}"))
        }
    }
}

/// Rejects the proposal of dialogue `id`, if the dialogue allows it now.
async fn reject(ctx: &Context, dialogues: &Dialogues, id: u128, to: Address, reason: RejectReason) {
    if dialogues.outgoing_named("Reject", id, now_ms()).is_ok() {
        // The participant may be gone; a rejected proposal has no claim either way.
        let _ = ctx.send_in(id, to, Reject { reason }).await;
    }
}

/// Withdraws a call before any award: every proposer is sent [`Cancel`] (and releases what
/// it held), every dialogue of the call is closed. Returns [`Outcome::Cancelled`].
pub async fn cancel<P, R>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    reason: &str,
) -> Result<Outcome<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    for proposal in &called.proposals {
        let (id, to) = (proposal.dialogue, proposal.from);
        if dialogues.outgoing_named("Cancel", id, now_ms()).is_ok() {
            // A proposer that is gone loses nothing by not hearing it.
            let _ = ctx.send_in(id, to, Cancel { reason: reason.into() }).await;
        }
    }
    Ok(Outcome::Cancelled)
}

/// Accepts the proposals of `winners` (the rest of `called` are rejected as not chosen),
/// waits up to `perform_timeout` for each winner's report, and says how the round ended.
pub async fn award<P, R: DeserializeOwned>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    winners: &[Address],
    perform_timeout: Duration,
) -> Result<Outcome<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    if called.proposals.is_empty() {
        return Ok(Outcome::NoProposals);
    }
    let mut reports = tokio::task::JoinSet::new();
    let mut losers = Vec::with_capacity(called.proposals.len());
    // Winners first: they perform while the others are told.
    for proposal in &called.proposals {
        let (id, to) = (proposal.dialogue, proposal.from);
        if winners.contains(&to) && dialogues.outgoing_named("Accept", id, now_ms()).is_ok() {
            let ctx = ctx.clone();
            reports.spawn(async move {
                (to, id, ctx.request_in::<Accept, Report>(id, to, Accept, Some(perform_timeout)).await)
            });
        } else {
            losers.push((id, to));
        }
    }
    for (id, to) in losers {
        reject(ctx, dialogues, id, to, RejectReason::NotChosen).await;
    }
    if reports.is_empty() {
        return Ok(Outcome::NoneChosen);
    }
    let mut results = Vec::new();
    while let Some(joined) = reports.join_next().await {
        let Ok((from, id, report)) = joined else { continue };
        results.push((from, outcome_of(ctx, dialogues, id, from, report).await));
    }
    if results.iter().all(|(_, r)| r.is_err()) {
        return Ok(Outcome::AllFailed(results.into_iter().map(|(a, r)| (a, r.err().unwrap_or_default())).collect()));
    }
    Ok(Outcome::Awarded(results))
}

/// The deal a contract-net dialogue settles: what its escrow names.
pub fn deal_of(dialogue: u128) -> DealId {
    DealId::named(&format!("agora.cnp/{dialogue:032x}"))
}

/// A winner's award, paid through escrow.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement<R> {
    /// The winner.
    pub winner: Address,
    /// Its report: the result, or why there is none.
    pub result: Result<R, String>,
    /// The escrow locked for it (none if the lock failed: then it was not awarded).
    pub escrow: Option<EscrowId>,
    /// Whether the escrow was released to the winner. If not, it is refunded to the
    /// initiator once its deadline has passed ([`refund_when_due`] runs in the background).
    pub paid: bool,
}

/// How a paid contract-net round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Paid<R> {
    /// Winners were chosen: each one's settlement.
    Settled(Vec<Settlement<R>>),
    /// Nobody proposed in time.
    NoProposals,
    /// No proposal was chosen.
    NoneChosen,
}

/// [`award`], paying each winner through escrow from the initiator's wallet: the price
/// (`price_of` the proposal) is locked for the winner's wallet, keyed by the dialogue
/// ([`deal_of`]), before the award is sent; it is released when the winner reports done,
/// and refunded after its deadline (`perform_timeout` plus [`REFUND_GRACE`]) on a failure,
/// a cancellation or no report. A winner whose price cannot be locked (no wallet given,
/// insufficient funds) is not awarded. No path leaves the money locked past its deadline
/// or pays it twice: the ledger settles an escrow once.
pub async fn award_and_pay<P, R: DeserializeOwned + Send + 'static>(
    ctx: &Context,
    book: &Book,
    called: &Called<P>,
    winners: &[Address],
    price_of: impl Fn(&P) -> u128,
    perform_timeout: Duration,
) -> Result<Paid<R>, ContractNetError> {
    let dialogues = book.get(ctx, INITIATOR)?;
    if called.proposals.is_empty() {
        return Ok(Paid::NoProposals);
    }
    let wallet = ctx.wallet().map_err(|e| ContractNetError::Wallet(e.to_string()))?;
    let mut settlements = Vec::new();
    let mut reports = tokio::task::JoinSet::new();
    for proposal in &called.proposals {
        let (id, to) = (proposal.dialogue, proposal.from);
        let locked = match (winners.contains(&to), proposal.pay_to) {
            (false, _) => None,
            (true, None) => {
                settlements.push(Settlement {
                    winner: to,
                    result: Err("no wallet to pay".into()),
                    escrow: None,
                    paid: false,
                });
                None
            }
            (true, Some(pay_to)) => {
                let price = price_of(&proposal.proposal);
                // Each winner's own deadline, from its own lock: winners locked later get
                // their full time too.
                let deadline_ms = now_ms() + (perform_timeout + REFUND_GRACE).as_millis() as u64;
                match wallet.lock(price, pay_to, deadline_ms, wallet.address(), Some(deal_of(id))).await {
                    Ok((escrow, _)) => {
                        // Scheduled now, whatever happens next (this future dropped, the
                        // award refused): a release before the deadline makes it a no-op.
                        refund_when_due(wallet.clone(), escrow, deadline_ms);
                        Some((escrow, deadline_ms))
                    }
                    Err(e) => {
                        let result = Err(format!("the price could not be locked: {e}"));
                        settlements.push(Settlement { winner: to, result, escrow: None, paid: false });
                        None
                    }
                }
            }
        };
        match locked {
            Some((escrow, deadline_ms)) if dialogues.outgoing_named("Accept", id, now_ms()).is_ok() => {
                let (ctx, book, wallet) = (ctx.clone(), book.clone(), wallet.clone());
                // Each winner is heard and paid on its own, side by side.
                reports.spawn(async move {
                    let report = ctx.request_in::<Accept, Report>(id, to, Accept, Some(perform_timeout)).await;
                    let Some(dialogues) = book.dialogues() else {
                        return Settlement {
                            winner: to,
                            result: Err("no dialogues".into()),
                            escrow: Some(escrow),
                            paid: false,
                        };
                    };
                    let result = outcome_of(&ctx, dialogues, id, to, report).await;
                    let paid = result.is_ok() && release_by(&wallet, escrow, deadline_ms).await;
                    Settlement { winner: to, result, escrow: Some(escrow), paid }
                });
            }
            _ => {
                reject(ctx, dialogues, id, to, RejectReason::NotChosen).await;
            }
        }
    }
    if reports.is_empty() && settlements.is_empty() {
        return Ok(Paid::NoneChosen);
    }
    while let Some(joined) = reports.join_next().await {
        // A failed winner's escrow is refunded when due (scheduled at the lock).
        if let Ok(settlement) = joined {
            settlements.push(settlement);
        }
    }
    Ok(Paid::Settled(settlements))
}

fn rand_id() -> u128 {
    rand::random()
}

/// A participant's side of contract-net. `evaluate` decides whether to propose; `perform`
/// does an awarded task; `release` is told when a proposal's hold ends without an award
/// (rejected, cancelled), so what it held can go to someone else.
#[async_trait::async_trait]
pub trait Participant: Send + Sync + 'static {
    /// The task, as the initiator describes it.
    type Task: DeserializeOwned + Send;
    /// What this participant proposes.
    type Proposal: Serialize + DeserializeOwned + Send;
    /// What performing the task gives.
    type Result: Serialize + Send;

    /// A proposal for `task` from `initiator` and until when it is held (ms since the Unix
    /// epoch), or `None` to refuse. A proposal given no hold is held until
    /// [`DEFAULT_HOLD_AFTER_DEADLINE`] past the call's deadline, never longer: whatever it
    /// holds is released then if no decision came.
    async fn evaluate(&self, initiator: Address, task: Self::Task) -> Option<(Self::Proposal, Option<u64>)>;

    /// Performs an awarded task. `Err` says why not: [`Unperformed::Failed`] (a `String`
    /// converts to it) is reported as a failure; [`Unperformed::Cancelled`] withdraws from
    /// the award (the participant's cancel). Either way the initiator's escrow, if any, goes
    /// back to it.
    async fn perform(&self, initiator: Address, proposal: Self::Proposal) -> Result<Self::Result, Unperformed>;

    /// The hold on `proposal` ended without an award.
    async fn release(&self, _initiator: Address, _proposal: Self::Proposal) {}
}

/// A proposal a participant holds, kept with its dialogue ([`Dialogue::data`]) in the same
/// record as the step that made it, so a restarted participant still honours an award and
/// still releases the hold when it ends.
///
/// [`Dialogue::data`]: crate::dialogue::Dialogue::data
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HeldProposal<P> {
    proposal: P,
    hold_until_ms: u64,
}

/// The proposal held in `data` (a [`HeldProposal`] kept with a dialogue), decoded as `P`.
fn held_proposal<P: DeserializeOwned>(data: Option<Data>) -> Option<P> {
    data?.decode::<HeldProposal<P>>().ok().map(|held| held.proposal)
}

/// The timers that release a participant's holds when they end, by dialogue; each is
/// stopped when its proposal is decided, and all of them with the agent, so a stopped
/// agent's timers do not act on what a restarted one holds.
#[derive(Clone, Default)]
struct Holds {
    timers: Arc<parking_lot::Mutex<HashMap<u128, tokio::task::AbortHandle>>>,
}

impl Holds {
    /// The hold of dialogue `id` no longer needs its timer (the proposal was decided).
    fn stop(&self, id: u128) {
        if let Some(timer) = self.timers.lock().remove(&id) {
            timer.abort();
        }
    }

    fn stop_all(&self) {
        for (_, timer) in self.timers.lock().drain() {
            timer.abort();
        }
    }
}

/// Makes `agent` a contract-net participant played by `participant`. Messages that do not
/// fit a dialogue are refused and the sender told why ([`Refused`]).
pub fn serve<P: Participant>(agent: &mut Agent, participant: Arc<P>) -> Book {
    let book = Book::default();
    let holds = Holds::default();
    {
        // Dialogues from before a restart are read when the agent starts, not when the
        // first call comes; the proposals they hold are released when their holds end.
        let (book, holds, participant) = (book.clone(), holds.clone(), participant.clone());
        agent.on_startup(move |ctx: Context| {
            let (book, holds, participant) = (book.clone(), holds.clone(), participant.clone());
            async move {
                let dialogues = match book.get(&ctx, PARTICIPANT) {
                    Ok(dialogues) => dialogues,
                    Err(e) => return tracing::error!(error = %e, "cannot load the contract-net dialogues"),
                };
                for dialogue in dialogues.all() {
                    let Some(kept) = dialogue.data else { continue };
                    if let Ok(held) = kept.decode::<HeldProposal<serde::de::IgnoredAny>>() {
                        let (id, initiator) = (dialogue.id, dialogue.peer);
                        release_when_hold_ends(&participant, &book, &holds, id, initiator, held.hold_until_ms, kept);
                    }
                }
            }
        });
    }
    {
        let holds = holds.clone();
        agent.on_shutdown(move |_ctx: Context| {
            let holds = holds.clone();
            async move { holds.stop_all() }
        });
    }
    let mut served = protocol();
    {
        let (book, participant, holds) = (book.clone(), participant.clone(), holds.clone());
        served = served.on_message(move |ctx: Context, from: Address, cfp: Cfp| {
            let (book, participant, holds) = (book.clone(), participant.clone(), holds.clone());
            async move {
                let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
                let step = Step::default().until(cfp.deadline_ms);
                // A revised call voids the earlier proposal in this dialogue.
                let earlier = match dialogues.incoming_with(Cfp::NAME, id, from, now_ms(), step) {
                    Ok(earlier) => earlier,
                    Err(refused) => return tell(&ctx, id, from, refused).await,
                };
                holds.stop(id);
                if let Some(earlier) = held_proposal::<P::Proposal>(earlier) {
                    participant.release(from, earlier).await;
                }
                let default_hold = cfp.deadline_ms.saturating_add(DEFAULT_HOLD_AFTER_DEADLINE.as_millis() as u64);
                let evaluated = match serde_json::from_value::<P::Task>(cfp.task) {
                    Ok(task) => participant.evaluate(from, task).await,
                    Err(_) => None,
                };
                let (answer, held) = match evaluated {
                    Some((proposal, hold_until_ms)) => {
                        let hold_until_ms = hold_until_ms.unwrap_or(default_hold);
                        let encoded = serde_json::to_value(&proposal).and_then(|value| {
                            let kept = Data::encode(&HeldProposal { proposal: &value, hold_until_ms })?;
                            Ok((value, kept))
                        });
                        match encoded {
                            Ok((value, kept)) => {
                                let pay_to = ctx.wallet().ok().map(|wallet| wallet.address());
                                let answer =
                                    Answer::Propose { proposal: value, hold_until_ms: Some(hold_until_ms), pay_to };
                                (answer, Some((kept, hold_until_ms, proposal)))
                            }
                            Err(e) => (Answer::Refuse { reason: e.to_string() }, None),
                        }
                    }
                    None => (Answer::Refuse { reason: "no proposal".into() }, None),
                };
                let step = match &held {
                    Some((kept, _, _)) => Step::default().keeping(kept.clone()),
                    None => Step::default(),
                };
                match dialogues.outgoing_with(answer_step(&answer), id, now_ms(), step) {
                    Ok(_) => {
                        if let Some((kept, hold_until_ms, _)) = held {
                            release_when_hold_ends(&participant, &book, &holds, id, from, hold_until_ms, kept);
                        }
                        // A proposal the initiator no longer waits for (it came after the call's
                        // wait, by the initiator's clock) is sent in the dialogue instead, so
                        // the initiator answers it (as late) rather than never hearing it.
                        if let Err(e) = ctx.reply(answer.clone()).await {
                            if matches!(answer, Answer::Propose { .. }) {
                                tracing::debug!(error = %e, "a proposal not taken as the reply is sent in its dialogue");
                                if let Err(e) = ctx.send_in(id, from, answer).await {
                                    // Its hold still ends when due: nothing stays held for good.
                                    tracing::debug!(error = %e, "the initiator of a proposal is unreachable");
                                }
                            }
                        }
                    }
                    // Too late to propose (the deadline passed while evaluating): what the
                    // proposal would have held goes back at once.
                    Err(_) => {
                        if let Some((_, _, proposal)) = held {
                            participant.release(from, proposal).await;
                        }
                    }
                }
            }
        });
    }
    {
        let (book, participant, holds) = (book.clone(), participant.clone(), holds.clone());
        served = served.on_message(move |ctx: Context, from: Address, _: Accept| {
            let (book, participant, holds) = (book.clone(), participant.clone(), holds.clone());
            async move {
                let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
                let held = match dialogues.incoming_named("Accept", id, from, now_ms()) {
                    Ok(held) => held,
                    Err(refused) => return tell(&ctx, id, from, refused).await,
                };
                holds.stop(id);
                let Ok(reply) = ctx.defer_reply() else { return };
                // Performed on a task of its own: the work may take long (a lead time, a
                // computation), and the participant goes on answering other calls.
                tokio::spawn(async move {
                    let report = match held_proposal::<P::Proposal>(held) {
                        Some(proposal) => match participant.perform(from, proposal).await {
                            Ok(result) => match serde_json::to_value(result) {
                                Ok(result) => Report::Done { result },
                                Err(e) => Report::Failure { reason: e.to_string() },
                            },
                            Err(Unperformed::Failed(reason)) => Report::Failure { reason },
                            Err(Unperformed::Cancelled(reason)) => Report::Cancelled { reason },
                        },
                        None => Report::Failure { reason: "the proposal is no longer held (its hold ended)".into() },
                    };
                    let Some(dialogues) = book.dialogues() else { return };
                    if dialogues.outgoing_named(report_step(&report), id, now_ms()).is_ok() {
                        // Not sent if cancelled meanwhile (the initiator no longer waits).
                        // A send that fails ends like silence: the initiator's wait times
                        // out and its escrow is refunded at the deadline.
                        let _ = reply.send(report).await;
                    }
                });
            }
        });
    }
    let release = |book: Book, participant: Arc<P>, holds: Holds, ctx: Context, from: Address, step: &'static str| async move {
        let (Ok(dialogues), Some(id)) = (book.get(&ctx, PARTICIPANT), ctx.session()) else { return };
        let held = match dialogues.incoming_named(step, id, from, now_ms()) {
            Ok(held) => held,
            Err(refused) => return tell(&ctx, id, from, refused).await,
        };
        holds.stop(id);
        if let Some(proposal) = held_proposal::<P::Proposal>(held) {
            participant.release(from, proposal).await;
        }
    };
    {
        let (book, participant, holds) = (book.clone(), participant.clone(), holds.clone());
        served = served.on_message(move |ctx: Context, from: Address, _: Reject| {
            release(book.clone(), participant.clone(), holds.clone(), ctx, from, "Reject")
        });
    }
    {
        let (book, participant, holds) = (book.clone(), participant, holds);
        served = served.on_message(move |ctx: Context, from: Address, _: Cancel| {
            release(book.clone(), participant.clone(), holds.clone(), ctx, from, "Cancel")
        });
    }
    agent.include(served);
    sweep(agent, &book, PARTICIPANT);
    book
}

/// Releases the proposal of dialogue `id` (made to `initiator`) once its hold ends, if no
/// decision took it first (an award takes it to perform; a rejection or cancellation
/// releases it). An award that comes later is answered with a failure: what was held may
/// be gone.
fn release_when_hold_ends<P: Participant>(
    participant: &Arc<P>,
    book: &Book,
    holds: &Holds,
    id: u128,
    initiator: Address,
    hold_until_ms: u64,
    kept: Data,
) {
    let (participant, book) = (Arc::clone(participant), book.clone());
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(hold_until_ms.saturating_sub(now_ms()))).await;
        let Some(dialogues) = book.dialogues() else { return };
        // Only the proposal this hold was for: a revised call may have replaced it.
        match dialogues.take_data(id, Some(&kept)) {
            Ok(taken) => {
                if let Some(proposal) = held_proposal::<P::Proposal>(taken) {
                    tracing::debug!(dialogue = %format!("{id:032x}"), "a proposal's hold ended without a decision");
                    participant.release(initiator, proposal).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "a proposal whose hold ended could not be released"),
        }
    });
    let mut timers = holds.timers.lock();
    timers.retain(|_, timer| !timer.is_finished());
    if let Some(replaced) = timers.insert(id, timer.abort_handle()) {
        replaced.abort();
    }
}

/// How often an agent's contract-net dialogues are swept, and how long after its deadline
/// an open one is kept (a late proposal is still rejected as late within it). Sweeping
/// only frees memory and storage: a dialogue past its deadline refuses late steps whether
/// or not it was swept, so the period is long (cheap for many idle agents over days).
const SWEEP: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(60);

/// Sweeps `book`'s dialogues on `agent` every [`SWEEP`]: open dialogues well past their
/// deadline expire, dialogues older than the rules' maximum age are forgotten.
fn sweep(agent: &mut Agent, book: &Book, role: &'static str) {
    let book = book.clone();
    agent.on_interval(SWEEP, move |ctx: Context| {
        let book = book.clone();
        async move {
            if let Ok(dialogues) = book.get(&ctx, role) {
                if let Err(e) = dialogues.expire_after(now_ms(), GRACE) {
                    tracing::warn!(error = %e, "sweeping contract-net dialogues failed");
                }
            }
        }
    });
}

/// Refuses `step`, which came outside the request it answers, naming what its dialogue
/// expects instead.
async fn refuse_stray(ctx: &Context, book: &Book, from: Address, step: &str) {
    let (Ok(dialogues), Some(id)) = (book.get(ctx, INITIATOR), ctx.session()) else { return };
    let refused = match dialogues.get(id) {
        None => DialogueError::Unknown { dialogue: id, message: step.into() },
        Some(d) if d.peer != from => DialogueError::NotAParty { dialogue: id, from, message: step.into() },
        // A proposal after the call's deadline, later than the call waited for its reply
        // (or after its dialogue expired): FIPA wants it answered, as late.
        Some(d) if step == "Propose" && is_past_its_call(&d, now_ms()) => {
            if d.state == EXPIRED {
                tracing::debug!(%from, "a proposal after its dialogue expired is rejected as late");
                // The peer may be gone; a rejected proposal has no claim either way.
                let _ = ctx.send_in(id, from, Reject { reason: RejectReason::Late }).await;
            } else {
                reject(ctx, dialogues, id, from, RejectReason::Late).await;
            }
            return;
        }
        Some(d) => DialogueError::OutOfOrder {
            dialogue: id,
            message: step.into(),
            sender: PARTICIPANT.into(),
            expected: dialogues
                .rules()
                .steps_from(&d.state)
                .map(|t| format!("{} from {}, as the reply to its request", t.message, t.sender))
                .collect(),
            state: d.state,
        },
    };
    tell(ctx, id, from, refused).await
}

/// Whether `dialogue` is a call whose deadline has passed with no answer from its
/// participant: still `called` after the deadline, or expired since.
fn is_past_its_call(dialogue: &Dialogue, now_ms: u64) -> bool {
    dialogue.state == EXPIRED || (dialogue.state == "called" && dialogue.deadline_ms.is_some_and(|d| now_ms > d))
}

/// Tells `to` why its message in dialogue `id` was refused.
async fn tell(ctx: &Context, id: u128, to: Address, refused: DialogueError) {
    tracing::debug!(%to, error = %refused, "contract-net message refused");
    if let Some(told) = refused.refusal() {
        // The peer may be gone; the refusal stands either way.
        let _ = ctx.send_in(id, to, told).await;
    }
}

/// Makes `agent` answer stray contract-net messages (answers and reports outside a
/// request, from misbehaving peers) with a [`Refused`] naming the dialogue and what was
/// expected; they never change an outcome. A proposal that comes after its call stopped
/// waiting (past the deadline and the wait for late replies, or once its dialogue expired)
/// is rejected as [`RejectReason::Late`] instead, as FIPA requires. It also sweeps the initiator's dialogues (as
/// [`serve`] does the participant's): open ones a minute past their deadline expire, and
/// old ones are forgotten.
pub fn refuse_strays(agent: &mut Agent, book: &Book) {
    sweep(agent, book, INITIATOR);
    let strays = book.clone();
    agent.on_message(move |ctx: Context, from: Address, answer: Answer| {
        let book = strays.clone();
        async move { refuse_stray(&ctx, &book, from, answer_step(&answer)).await }
    });
    let strays = book.clone();
    agent.on_message(move |ctx: Context, from: Address, report: Report| {
        let book = strays.clone();
        async move { refuse_stray(&ctx, &book, from, report_step(&report)).await }
    });
    agent.on_message(|_ctx: Context, from: Address, refused: Refused| async move {
        tracing::info!(%from, reason = %refused.reason, "a contract-net message of ours was refused");
    });
}
