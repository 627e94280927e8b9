//! The ledger as a libp2p service, and [`RemoteLedger`], its client.
//!
//! A node (the `ledger-node` example binary, or any process) hosts a
//! [`LocalLedger`](super::LocalLedger) with [`serve`]; agents in other processes use a
//! [`RemoteLedger`] as their [`Ledger`]. Signatures are checked by the hosting ledger, so
//! the connection needs no trust beyond noise's encryption.

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::tx::{Amount, Escrow, EscrowId, Receipt, Transaction};
use super::{Ledger, LedgerError};
use crate::identity::Address;
use crate::metrics;
use crate::net::rpc::{self, RpcError, ServerHandle, ServerLimits};
use crate::net::NetError;

/// The libp2p protocol name of the ledger service.
pub const PROTOCOL: &str = "/agora/ledger/1";

/// The most history entries one request returns.
pub const MAX_HISTORY: usize = 1000;

/// A request to the ledger service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Apply a transaction.
    Submit(Box<Transaction>),
    /// An account's balance.
    Balance(Address),
    /// An account's next nonce.
    NextNonce(Address),
    /// An account's history, newest first.
    History {
        /// The account.
        account: Address,
        /// At most this many (capped at [`MAX_HISTORY`]).
        limit: usize,
    },
    /// An open escrow.
    Escrow(EscrowId),
    /// The open escrows a payer locked, soonest deadline first.
    OpenEscrows {
        /// The payer.
        payer: Address,
        /// At most this many (capped at [`MAX_HISTORY`]).
        limit: usize,
    },
}

impl Request {
    /// The request's name, as metrics label it.
    fn name(&self) -> &'static str {
        match self {
            Request::Submit(_) => "submit",
            Request::Balance(_) => "balance",
            Request::NextNonce(_) => "next_nonce",
            Request::History { .. } => "history",
            Request::Escrow(_) => "escrow",
            Request::OpenEscrows { .. } => "open_escrows",
        }
    }
}

/// The ledger service's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// To `Submit`.
    Receipt(Result<Box<Receipt>, LedgerError>),
    /// To `Balance`.
    Balance(Result<Amount, LedgerError>),
    /// To `NextNonce`.
    NextNonce(Result<u64, LedgerError>),
    /// To `History`.
    History(Result<Vec<Receipt>, LedgerError>),
    /// To `Escrow`.
    Escrow(Result<Option<Escrow>, LedgerError>),
    /// To `OpenEscrows`.
    OpenEscrows(Result<Vec<(EscrowId, Escrow)>, LedgerError>),
}

/// Serves `ledger` on `listen` (for example `/ip4/127.0.0.1/tcp/0`).
pub async fn serve(
    ledger: Arc<dyn Ledger>,
    keypair: libp2p::identity::Keypair,
    listen: &[Multiaddr],
) -> Result<ServerHandle, NetError> {
    rpc::serve(PROTOCOL, keypair, listen, ServerLimits::default(), move |_peer, request: Request| {
        let ledger = Arc::clone(&ledger);
        async move {
            let (name, timer) = (request.name(), metrics::start_timer());
            let response = match request {
                Request::Submit(tx) => Response::Receipt(ledger.submit(*tx).await.map(Box::new)),
                Request::Balance(account) => Response::Balance(ledger.balance(account).await),
                Request::NextNonce(account) => Response::NextNonce(ledger.next_nonce(account).await),
                Request::History { account, limit } => {
                    Response::History(ledger.history(account, limit.min(MAX_HISTORY)).await)
                }
                Request::Escrow(id) => Response::Escrow(ledger.escrow(id).await),
                Request::OpenEscrows { payer, limit } => {
                    Response::OpenEscrows(ledger.open_escrows(payer, limit.min(MAX_HISTORY)).await)
                }
            };
            metrics::record_request(metrics::LEDGER_SERVER_SECONDS, timer, name, None);
            response
        }
    })
    .await
}

/// A [`Ledger`] served by another process.
#[derive(Clone)]
pub struct RemoteLedger {
    client: rpc::Client<Request, Response>,
}

impl RemoteLedger {
    /// A client of the ledger service `server` at `addresses`. Connects on first use, so
    /// creating it never fails because the ledger is down.
    pub fn new(server: PeerId, addresses: Vec<Multiaddr>) -> Result<RemoteLedger, NetError> {
        Ok(RemoteLedger { client: rpc::Client::new(PROTOCOL, server, addresses, Duration::from_secs(10))? })
    }

    async fn call(&self, request: Request) -> Result<Response, LedgerError> {
        let (name, timer) = (request.name(), metrics::start_timer());
        let response = self.client.call(request).await;
        metrics::record_request(metrics::LEDGER_CLIENT_SECONDS, timer, name, Some(response.is_ok()));
        response.map_err(|e: RpcError| LedgerError::Unavailable(e.to_string()))
    }
}

fn unexpected<T>(response: Response) -> Result<T, LedgerError> {
    Err(LedgerError::Unavailable(format!("unexpected response from the ledger service: {response:?}")))
}

#[async_trait::async_trait]
impl Ledger for RemoteLedger {
    async fn submit(&self, tx: Transaction) -> Result<Receipt, LedgerError> {
        match self.call(Request::Submit(Box::new(tx))).await? {
            Response::Receipt(result) => result.map(|receipt| *receipt),
            other => unexpected(other),
        }
    }

    async fn balance(&self, account: Address) -> Result<Amount, LedgerError> {
        match self.call(Request::Balance(account)).await? {
            Response::Balance(result) => result,
            other => unexpected(other),
        }
    }

    async fn next_nonce(&self, account: Address) -> Result<u64, LedgerError> {
        match self.call(Request::NextNonce(account)).await? {
            Response::NextNonce(result) => result,
            other => unexpected(other),
        }
    }

    async fn history(&self, account: Address, limit: usize) -> Result<Vec<Receipt>, LedgerError> {
        match self.call(Request::History { account, limit }).await? {
            Response::History(result) => result,
            other => unexpected(other),
        }
    }

    async fn escrow(&self, id: EscrowId) -> Result<Option<Escrow>, LedgerError> {
        match self.call(Request::Escrow(id)).await? {
            Response::Escrow(result) => result,
            other => unexpected(other),
        }
    }

    async fn open_escrows(&self, payer: Address, limit: usize) -> Result<Vec<(EscrowId, Escrow)>, LedgerError> {
        match self.call(Request::OpenEscrows { payer, limit }).await? {
            Response::OpenEscrows(result) => result,
            other => unexpected(other),
        }
    }
}

impl std::fmt::Debug for RemoteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLedger").field("server", &self.client.server()).finish()
    }
}
