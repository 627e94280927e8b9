//! One request's trace id, followed through `tracing` spans across two network nodes:
//! the requester's span, its transport, the receiver's delivery and handler, the reply,
//! and the reply's arrival back at the requester.

use std::sync::Arc;
use std::time::Duration;

use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Address, Agent, Bureau, Context, Message, Protocol, ReplyError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Ask(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Message)]
struct Answer(u64);

/// Every span opened with a trace id: its name, trace id and protocol fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String, String)>>>);

#[derive(Default)]
struct Fields {
    trace_id: Option<String>,
    protocol: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "trace_id" => self.trace_id = Some(format!("{value:?}")),
            "protocol" => self.protocol = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(trace_id) = fields.trace_id {
            self.0.lock().push((attrs.metadata().name().to_owned(), trace_id, fields.protocol));
        }
    }
}

#[tokio::test]
async fn a_requests_trace_id_follows_it_through_both_nodes_and_back() {
    let spans = Spans::default();
    let subscriber =
        tracing_subscriber::registry().with(spans.clone().with_filter(tracing::level_filters::LevelFilter::DEBUG));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let resolver = Arc::new(StaticResolver::new());
    let server = Bureau::new().unwrap();
    let mut answerer = Agent::builder("answerer").seed("trace answerer").build().unwrap();
    let asking = Protocol::new("asking", "1.0")
        .on_message(|ctx: Context, _from: Address, Ask(n): Ask| async move {
            ctx.reply(Answer(n)).await?;
            Ok::<(), ReplyError>(())
        })
        .message::<Answer>()
        .replies::<Ask, Answer>();
    let digest = asking.digest();
    answerer.include(asking);
    let server_agent = server.add(answerer).unwrap();
    let listen = || vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let info = server.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    resolver.insert(server_agent, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs });
    let client = Bureau::new().unwrap();
    let mut asker = Agent::builder("asker").seed("trace asker").build().unwrap();
    // The asker speaks the protocol too, without handling its requests.
    asker.include(Protocol::new("asking", "1.0").message::<Ask>().message::<Answer>().replies::<Ask, Answer>());
    let me = client.add(asker).unwrap();
    client.listen(NetworkConfig::new(listen(), resolver.clone())).await.unwrap();
    let ctx = client.context(me).unwrap();

    let answer: Answer = ctx.request(server_agent, Ask(7), Duration::from_secs(10)).await.unwrap();
    assert_eq!(answer, Answer(7));
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();

    let spans = spans.0.lock().clone();
    let (_, trace_id, _) =
        spans.iter().find(|(name, _, _)| name == "message").expect("the request opened a span").clone();
    let followed: Vec<&str> =
        spans.iter().filter(|(_, id, _)| *id == trace_id).map(|(name, _, _)| name.as_str()).collect();
    for step in ["message", "transport", "deliver", "handle", "reply", "response"] {
        assert!(followed.contains(&step), "no {step} span carries the trace id; saw {followed:?}");
    }
    // The request's envelope carried its protocol's digest.
    let delivered: Vec<&str> = spans
        .iter()
        .filter(|(name, id, _)| name == "deliver" && *id == trace_id)
        .map(|(_, _, protocol)| protocol.as_str())
        .collect();
    assert_eq!(delivered, vec![digest.to_string()], "the request's envelope names its protocol");
}
