//! Awards paid through escrow: the glue between contract-net and [`crate::settlement`].

use super::*;

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
    /// Whether the escrow was released to the winner (by the winner, its arbiter, or by the
    /// initiator on its report of done). If not, it is refunded to the initiator once its
    /// deadline has passed ([`refund_when_due`] runs in the background), unless the winner
    /// releases it before then: a winner whose report of done was lost is still paid.
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
/// ([`deal_of`]), before the award is sent with its [`Payment`]. The winner's wallet is the
/// escrow's arbiter: the winner releases it to itself when it has done the task, before it
/// reports done (and the initiator releases it too on that report, in case the winner's
/// release failed), so the initiator cannot take back what was earned. On a failure, a
/// cancellation or no report it is refunded to the initiator after its deadline
/// (`perform_timeout` plus [`REFUND_GRACE`]), and neither side can refund it before. A
/// winner whose price cannot be locked (no wallet given, insufficient funds) is not
/// awarded, nor is one whose dialogue is past its proposal (awarded already, cancelled,
/// expired): nothing is locked for it. Every escrow locked is named in the returned
/// [`Settlement`]s. No path leaves the money locked past its deadline or pays it twice: the
/// ledger settles an escrow once.
///
/// Trust: the winner, as arbiter, could release the escrow to itself without doing the
/// task; the ledger cannot see the work. With the initiator as arbiter the initiator could
/// take back what was earned instead. Use it between parties that trust the winner's report.
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
            (true, Some(_)) if dialogues.get(id).is_none_or(|d| d.state != "proposed") => {
                // Awarded already (a second award of the same call), cancelled, rejected
                // or expired: nothing may be awarded, so nothing is locked.
                let state = dialogues.get(id).map_or_else(|| "unknown".to_owned(), |d| d.state);
                let result = Err(format!("not awarded: its dialogue is {state}, not proposed"));
                settlements.push(Settlement { winner: to, result, escrow: None, paid: false });
                continue;
            }
            (true, Some(pay_to)) => {
                let price = price_of(&proposal.proposal);
                // Each winner's own deadline, from its own lock: winners locked later get
                // their full time too.
                let deliver_by_ms = now_ms().saturating_add(perform_timeout.as_millis() as u64);
                let deadline_ms = deliver_by_ms.saturating_add(REFUND_GRACE.as_millis() as u64);
                // The winner is the arbiter: it releases the escrow once it has done the task.
                match wallet.lock(price, pay_to, deadline_ms, pay_to, Some(deal_of(id))).await {
                    Ok((escrow, _)) => {
                        // Scheduled now, whatever happens next (this future dropped, the
                        // award refused): a release before the deadline makes it a no-op.
                        refund_when_due(wallet.clone(), escrow, deadline_ms);
                        let payment = Payment { deal: deal_of(id), escrow, price, deliver_by_ms };
                        Some((payment, deadline_ms))
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
            Some((payment, deadline_ms)) if dialogues.outgoing_named("Accept", id, now_ms()).is_ok() => {
                let (ctx, book, wallet) = (ctx.clone(), book.clone(), wallet.clone());
                let escrow = payment.escrow;
                // Each winner is heard and paid on its own, side by side.
                reports.spawn(async move {
                    let accept = Accept { payment: Some(payment) };
                    let report = ctx.request_in::<Accept, Report>(id, to, accept, Some(perform_timeout)).await;
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
            Some((payment, _)) => {
                // The dialogue moved on while the price was being locked: the escrow is
                // refunded when due (scheduled at the lock), and the caller is told of it.
                let result = Err("not awarded: its dialogue moved on while the price was locked".to_owned());
                settlements.push(Settlement { winner: to, result, escrow: Some(payment.escrow), paid: false });
            }
            None => {
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
