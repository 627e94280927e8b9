//! The almanac as a libp2p service, and [`RemoteAlmanac`], its client.

use std::time::Duration;

use agent_core::metrics;
use agent_core::net::rpc::{self, ServerHandle, ServerLimits};
use agent_core::net::NetError;
use agent_core::{Address, Manifest, ProtocolDigest};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::query::{Page, Query};
use crate::record::Registration;
use crate::{Almanac, AlmanacError, Registered};

/// The libp2p protocol name of the almanac service.
pub const PROTOCOL: &str = "/agora/almanac/1";

/// A request to the almanac service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Store a registration.
    Register(Box<Registration>),
    /// One agent's registration.
    Lookup(Address),
    /// A page of registrations.
    Query(Query),
    /// Publish a manifest (JSON).
    PublishManifest(String),
    /// Fetch a manifest.
    Manifest(ProtocolDigest),
}

impl Request {
    /// The request's name, as metrics label it.
    fn name(&self) -> &'static str {
        match self {
            Request::Register(_) => "register",
            Request::Lookup(_) => "lookup",
            Request::Query(_) => "query",
            Request::PublishManifest(_) => "publish_manifest",
            Request::Manifest(_) => "manifest",
        }
    }
}

/// The almanac service's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// To `Register`.
    Registered(Result<Registered, AlmanacError>),
    /// To `Lookup`.
    Record(Result<Box<Registration>, AlmanacError>),
    /// To `Query`.
    Page(Page),
    /// To `PublishManifest`.
    Published(Result<ProtocolDigest, AlmanacError>),
    /// To `Manifest` (boxed: a manifest is large, the other answers small; the wire form
    /// is the same).
    Manifest(Option<Box<Manifest>>),
}

/// Serves `almanac` on `listen`.
pub async fn serve(
    almanac: Almanac,
    keypair: libp2p::identity::Keypair,
    listen: &[Multiaddr],
) -> Result<ServerHandle, NetError> {
    rpc::serve(PROTOCOL, keypair, listen, ServerLimits::default(), move |peer, request: Request| {
        let almanac = almanac.clone();
        async move {
            let (name, timer) = (request.name(), metrics::start_timer());
            let response = match request {
                Request::Register(record) => Response::Registered(almanac.register(*record).await),
                Request::Lookup(address) => Response::Record(almanac.lookup(&address).map(Box::new)),
                Request::Query(query) => Response::Page(almanac.query(&query)),
                Request::PublishManifest(json) => {
                    Response::Published(almanac.publish_manifest_from(&peer.to_string(), &json).await)
                }
                Request::Manifest(digest) => Response::Manifest(almanac.manifest(&digest).map(Box::new)),
            };
            metrics::record_request(metrics::ALMANAC_SERVER_SECONDS, timer, name, None);
            response
        }
    })
    .await
}

/// A client of an almanac server.
#[derive(Clone)]
pub struct RemoteAlmanac {
    client: rpc::Client<Request, Response>,
}

fn unexpected(response: Response) -> AlmanacError {
    AlmanacError::Unavailable(format!("unexpected response: {response:?}"))
}

impl RemoteAlmanac {
    /// A client of the almanac `server` at `addresses`; connects on first use.
    pub fn new(server: PeerId, addresses: Vec<Multiaddr>) -> Result<RemoteAlmanac, NetError> {
        Ok(RemoteAlmanac { client: rpc::Client::new(PROTOCOL, server, addresses, Duration::from_secs(5))? })
    }

    async fn call(&self, request: Request) -> Result<Response, AlmanacError> {
        let (name, timer) = (request.name(), metrics::start_timer());
        let response = self.client.call(request).await;
        metrics::record_request(metrics::ALMANAC_CLIENT_SECONDS, timer, name, Some(response.is_ok()));
        response.map_err(|e| AlmanacError::Unavailable(e.to_string()))
    }

    /// Stores a registration.
    pub async fn register(&self, record: Registration) -> Result<Registered, AlmanacError> {
        match self.call(Request::Register(Box::new(record))).await? {
            Response::Registered(result) => result,
            other => Err(unexpected(other)),
        }
    }

    /// One agent's registration.
    pub async fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        match self.call(Request::Lookup(*address)).await? {
            Response::Record(result) => result.map(|r| *r),
            other => Err(unexpected(other)),
        }
    }

    /// A page of registrations.
    pub async fn query(&self, query: Query) -> Result<Page, AlmanacError> {
        match self.call(Request::Query(query)).await? {
            Response::Page(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes a manifest.
    pub async fn publish_manifest(&self, json: &str) -> Result<ProtocolDigest, AlmanacError> {
        match self.call(Request::PublishManifest(json.to_owned())).await? {
            Response::Published(result) => result,
            other => Err(unexpected(other)),
        }
    }

    /// Fetches a manifest.
    pub async fn manifest(&self, digest: ProtocolDigest) -> Result<Option<Manifest>, AlmanacError> {
        match self.call(Request::Manifest(digest)).await? {
            Response::Manifest(manifest) => Ok(manifest.map(|m| *m)),
            other => Err(unexpected(other)),
        }
    }
}
