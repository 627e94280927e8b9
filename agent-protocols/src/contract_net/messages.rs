//! Contract-net's messages, the roles that send them and the rules their dialogues follow.

use super::*;

/// The role that calls for proposals.
pub const INITIATOR: &str = "initiator";
/// The role that proposes and performs.
pub const PARTICIPANT: &str = "participant";

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
        /// Why: what a program acts on.
        cause: Declined,
        /// More about it, for people (an encoder's words): never acted on.
        #[serde(default)]
        detail: Option<String>,
    },
}

/// The initiator's decision on a proposal: accepted, and paid through escrow if `payment`
/// is given ([`award_and_pay`]). The escrow names the winner's wallet as its beneficiary
/// and its arbiter: the winner releases it to itself once it has done the task (its
/// inform-done) or refunds it if it does not do it, and the initiator may take it back
/// only after its deadline. A winner
/// served by [`serve`] reads the escrow on the ledger before it performs, and refuses a
/// payment that does not hold ([`PaymentRefused`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.cnp.Accept")]
pub struct Accept {
    /// The escrow holding the price, if the award is paid through one.
    #[serde(default)]
    pub payment: Option<Payment>,
    /// The initiator's wallet, which locked the escrow: the winner checks the escrow's
    /// payer against it (an agent's wallet address cannot be derived from its address).
    #[serde(default)]
    pub payer: Option<Address>,
}

/// Why a proposal was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
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
        /// Why: what a program acts on (the participant's own words only in
        /// [`Failure::Failed`]).
        cause: Failure,
    },
    /// The participant withdrew from the award (the FIPA cancel, from the participant's
    /// side): the task will not be done, and the dialogue is over.
    Cancelled {
        /// Why: what a program acts on.
        cause: Withdrawal,
        /// More about it, in the participant's words.
        #[serde(default)]
        detail: Option<String>,
    },
}

/// Why a winner did not do an awarded task, as it reports it ([`Report::Failure`]). Its
/// serde name is its wire code; only a participant's own failure carries free text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// It tried, and failed ([`Unperformed::Failed`]): the participant's own words.
    Failed {
        /// Why, in the participant's words.
        detail: String,
    },
    /// It refused the award's payment (or an unpaid award of a priced proposal) and did not
    /// perform: which check failed.
    PaymentRefused {
        /// The check that failed.
        refused: PaymentRefused,
    },
    /// The proposal's hold had ended before the award came: what it held may be gone.
    HoldEnded,
    /// It performed, but its result could not be encoded.
    Unencodable {
        /// The encoder's words.
        detail: String,
    },
}

/// Why an award gave the initiator no result: what the winner reported, or what the
/// initiator saw (no report, an unreadable result) or could not do (pay). A program tells
/// them apart by variant (and a withdrawal by its cause); free text is only detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwardFailure {
    /// The winner tried, and failed, in its own words ([`Failure::Failed`]).
    #[error("failed: {0}")]
    Failed(String),
    /// The winner withdrew from the award ([`Report::Cancelled`]).
    #[error("withdrawn by the participant, {cause}{}", Detail(detail))]
    Withdrawn {
        /// Why.
        cause: Withdrawal,
        /// More about it, in the participant's words.
        detail: Option<String>,
    },
    /// The winner refused the award's payment and did not perform ([`Failure::PaymentRefused`]).
    #[error("the winner refused the payment: {0}")]
    PaymentRefused(PaymentRefused),
    /// The winner's hold on its proposal had ended ([`Failure::HoldEnded`]).
    #[error("the proposal was no longer held (its hold ended)")]
    HoldEnded,
    /// The winner could not encode its result ([`Failure::Unencodable`]).
    #[error("the winner could not encode its result: {0}")]
    Unencodable(String),
    /// The winner's result is not a result this initiator can read.
    #[error("an unreadable result: {0}")]
    UnreadableResult(String),
    /// No report came in time: the award was withdrawn ([`Cancel`] sent).
    #[error("no report in time: {0}")]
    NoReport(String),
    /// The initiator cancelled the award while it was performed ([`cancel`]): the winner
    /// reported nothing, and gave back what it was paid when its work in hand ended.
    #[error("cancelled by the initiator while it was performed")]
    Cancelled,
    /// The report broke the dialogue's rules, and was refused.
    #[error("the report was refused: {0}")]
    ReportRefused(DialogueError),
    /// Not awarded ([`award_and_pay`]): the proposal names no wallet to pay.
    #[error("not awarded: the proposal names no wallet to pay")]
    NoWalletToPay,
    /// Not awarded ([`award_and_pay`]): the price could not be locked in escrow.
    #[error("not awarded: the price could not be locked: {0}")]
    NotLocked(String),
    /// Not awarded: the initiator's storage could not record the award, or
    /// ([`award_and_pay`]) the escrow locked for it (which is refunded at its deadline).
    /// The winner is sent a rejection.
    #[error("not awarded: the award could not be recorded: {0}")]
    NotRecorded(String),
    /// Not awarded ([`award_and_pay`]): the proposal's dialogue is past it (awarded
    /// already, rejected, cancelled, expired) or moved on while the price was locked.
    #[error("not awarded: its dialogue is {state}, not proposed")]
    NotAwardable {
        /// The dialogue's state.
        state: String,
    },
}

impl From<Failure> for AwardFailure {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Failed { detail } => AwardFailure::Failed(detail),
            Failure::PaymentRefused { refused } => AwardFailure::PaymentRefused(refused),
            Failure::HoldEnded => AwardFailure::HoldEnded,
            Failure::Unencodable { detail } => AwardFailure::Unencodable(detail),
        }
    }
}

/// Why a called participant gave no proposal the initiator can weigh ([`Called::refused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoProposal {
    /// It refused ([`Answer::Refuse`]).
    #[error("refused, {cause}{}", Detail(detail))]
    Refused {
        /// Why.
        cause: Declined,
        /// More about it, in the participant's words.
        detail: Option<String>,
    },
    /// It proposed something this initiator cannot read as its proposal type: the
    /// proposal was rejected, so its hold ends.
    #[error("an unreadable proposal: {0}")]
    Unreadable(String),
}

/// Why an awarded task was not done: it failed, or the participant withdrew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unperformed {
    /// Tried, and failed: reported as [`Report::Failure`].
    #[error("failed: {0}")]
    Failed(String),
    /// Withdrawn by the participant: reported as [`Report::Cancelled`].
    #[error("cancelled, {cause}{}", Detail(detail))]
    Cancelled {
        /// Why.
        cause: Withdrawal,
        /// More about it, in the participant's words.
        detail: Option<String>,
    },
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
    /// Why: what a program acts on.
    pub cause: CancelCause,
    /// More about it, for people (the initiator's words): never acted on.
    #[serde(default)]
    pub detail: Option<String>,
}

/// The contract-net protocol as agents publish it, for tasks `T`, proposals `P` and results
/// `R`: its messages, which reply answers which request, the schemas of the three payload
/// types, and its digest, by which participants are found in the almanac. [`serve`]
/// includes it (with the participant's handlers) in an agent.
///
/// The messages carry the payloads as JSON, so the payload schemas are what tell an
/// airline's contract-net from a warehouse's: participants that serve different types
/// advertise different digests, and [`find_participants`] finds only those an initiator
/// can talk to.
pub fn protocol<T: WireSchema, P: WireSchema, R: WireSchema>() -> agent_core::Protocol {
    // 2.0.0: an award carries its payment, released by the winner (1.0.0's Accept had none).
    // 2.1.0: an award names its payer's wallet, checked by the winner before it performs.
    // 3.0.0: a failure report and a refusal carry a typed cause, the text only detailing it.
    // 4.0.0: so do a participant's refusal and withdrawal, and the initiator's cancel.
    // 4.1.0: the manifest publishes the dialogue's rules (`rules`), so the digest covers them.
    // 5.0.0: a refusal says where its dialogue stands (typed), and for a late message the
    //        deadline that passed.
    // 5.1.0: a participant evaluating all the calls it takes at once refuses as busy.
    agent_core::Protocol::new("agora.contract-net", "5.1.0")
        .message::<Cfp>()
        .message::<Answer>()
        .message::<Accept>()
        .message::<Reject>()
        .message::<Report>()
        .message::<Cancel>()
        .message::<Refused>()
        .replies::<Cfp, Answer>()
        .replies::<Accept, Report>()
        .payload::<T>("task")
        .payload::<P>("proposal")
        .payload::<R>("result")
        .state_machine(rules().state_machine())
}

/// The contract-net protocol a [`Participant`] of type `P` speaks: [`protocol`] for its
/// task, proposal and result types.
pub fn protocol_of<P: Participant>() -> agent_core::Protocol {
    protocol::<P::Task, P::Proposal, P::Result>()
}

/// How long after a call's deadline a proposal is held when its participant gives it no
/// hold of its own: time for the initiator to weigh the proposals and award, after which
/// what the proposal held is released ([`Participant::release`]) and a later award fails.
/// A participant that must hold longer (a decision taking hours) sets its own hold.
pub const DEFAULT_HOLD_AFTER_DEADLINE: Duration = Duration::from_secs(60);

/// The longest a proposal given no hold of its own is held from when it is made, however
/// far away the call's deadline: the initiator chooses that deadline, and a call that ends
/// in ten years must not hold a participant's seat for ten years.
pub const MAX_DEFAULT_HOLD: Duration = Duration::from_secs(3600);

/// How long a contract-net dialogue is kept from its call: the longest a task may take.
pub const MAX_AWARD_AGE: Duration = Duration::from_secs(31 * 24 * 3600);

/// The contract-net dialogue rules (both roles).
pub fn rules() -> Rules {
    Rules::builder("contract-net")
        .initial("start")
        .step::<Cfp>("start", INITIATOR, "called")
        .variant_step::<Answer>("Propose", "called", PARTICIPANT, "proposed", false)
        .variant_step::<Answer>("Refuse", "called", PARTICIPANT, "refused", false)
        .variant_step::<Reject>("Reject", "called", INITIATOR, "rejected", true)
        .variant_step::<Cancel>("Cancel", "called", INITIATOR, "cancelled", true)
        .variant_step::<Accept>("Accept", "proposed", INITIATOR, "awarded", false)
        .variant_step::<Reject>("Reject", "proposed", INITIATOR, "rejected", true)
        .variant_step::<Cancel>("Cancel", "proposed", INITIATOR, "cancelled", true)
        .step::<Cfp>("proposed", INITIATOR, "called")
        .variant_step::<Report>("Done", "awarded", PARTICIPANT, "done", false)
        .variant_step::<Report>("Failure", "awarded", PARTICIPANT, "failed", false)
        .variant_step::<Cancel>("Cancel", "awarded", INITIATOR, "cancelled", true)
        .variant_step::<Report>("Cancel", "awarded", PARTICIPANT, "cancelled", true)
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

pub(super) fn answer_step(answer: &Answer) -> &'static str {
    match answer {
        Answer::Propose { .. } => "Propose",
        Answer::Refuse { .. } => "Refuse",
    }
}

pub(super) fn report_step(report: &Report) -> &'static str {
    match report {
        Report::Done { .. } => "Done",
        Report::Failure { .. } => "Failure",
        Report::Cancelled { .. } => "Cancel",
    }
}
