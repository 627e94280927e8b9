//! The sending half of the link to one peer: a bounded queue, one stream, a window of
//! unacknowledged envelopes, reconnection with backoff, and a final outcome for each.
//!
//! `mod.rs` keeps the link alive across streams (connect, back off, retire when idle);
//! `stream` drives one stream; `window` is the envelopes written and not yet
//! acknowledged; `replies` checks the replies that come back on the stream.

mod replies;
mod stream;
mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Endpoint, Network, Outbound};
use window::{expire, Sent};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);

/// Why [`stream::serve`] returns when the link had nothing to do for the idle period.
pub(super) const IDLE: &str = "idle";
/// How a stream ends whose peer stopped answering heartbeats.
pub(super) const SILENT: &str = "peer silent for three heartbeats";

/// Runs the link to `endpoint` until its queue closes and every envelope has its outcome,
/// or until the node stops: then what is still unacknowledged ends so at once (its
/// senders are told the link closed) rather than at its deadline, and the link lets go of
/// the node, so a shutdown does not wait for a peer that may never answer.
pub(crate) async fn run(net: Arc<Network>, endpoint: Endpoint, queue: mpsc::Receiver<Outbound>) {
    let mut stop = net.stop.subscribe();
    let peer = endpoint.peer_id;
    tokio::select! {
        () = serve(net, endpoint, queue) => {}
        _ = stop.wait_for(|stopped| *stopped) => {
            tracing::debug!(%peer, "the node stopped: the link's envelopes end unacknowledged");
        }
    }
}

async fn serve(net: Arc<Network>, endpoint: Endpoint, mut queue: mpsc::Receiver<Outbound>) {
    let mut unacked: VecDeque<Sent> = VecDeque::new();
    let mut backoff = MIN_BACKOFF;
    let mut queue_open = true;
    // Why the peer could not be reached last, for envelopes that never left.
    let mut last_failure = String::from("not connected yet");
    loop {
        expire(&mut unacked, &endpoint, &last_failure);
        if unacked.is_empty() {
            if !queue_open {
                return;
            }
            match tokio::time::timeout(net.config.idle_timeout, queue.recv()).await {
                Ok(Some(out)) => unacked.push_back(Sent { out, seq: 0, attempts: 0 }),
                Ok(None) => return,
                Err(_) => retire(&mut queue, &mut unacked, &mut queue_open),
            }
            continue;
        }
        // Everything queued counts while connecting: the soonest deadline is the one
        // connecting may take, whichever envelope has it.
        while queue_open && unacked.len() < net.config.window {
            match queue.try_recv() {
                Ok(out) => unacked.push_back(Sent { out, seq: 0, attempts: 0 }),
                Err(_) => break,
            }
        }
        let deadline = unacked.iter().map(|s| s.out.deadline).min().unwrap_or_else(Instant::now);
        // One attempt waits at most a second, so that an envelope queued meanwhile with a
        // sooner deadline is reported about on time even if the peer is a black hole.
        let attempt_until = deadline.min(Instant::now() + CONNECT_ATTEMPT);
        let stream = match super::node::connect(&net, &endpoint, attempt_until).await {
            Ok(stream) => stream,
            Err(reason) => {
                tracing::debug!(peer = %endpoint.peer_id, %reason, "cannot reach peer; will retry");
                last_failure = reason;
                tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        let (reader, writer) = stream.split();
        let ended = stream::serve(&net, &endpoint, reader, writer, &mut unacked, &mut queue, &mut queue_open).await;
        tracing::debug!(reason = %ended, "stream ended");
        if ended == IDLE {
            // Dropping the stream lets the connection close once idle, so that a peer
            // talked to once does not hold a place in its connection limits forever.
            retire(&mut queue, &mut unacked, &mut queue_open);
        }
        if ended == SILENT {
            // Nothing came back on the connection, so it is likely dead one way (a
            // half-open TCP connection, a path black-holing it). A new stream on it would
            // be as silent; close it so that the next attempt dials a fresh one. (If the node
            // has stopped, its connections are gone with it: nothing is left to close.)
            let _ = net.commands.send(super::node::Command::Disconnect(endpoint.peer_id)).await;
        }
        last_failure = ended;
    }
}

/// Ends an idle link: closes its queue (the node then starts a new link for the next
/// send) and takes on what was queued before the close, to finish it.
fn retire(queue: &mut mpsc::Receiver<Outbound>, unacked: &mut VecDeque<Sent>, queue_open: &mut bool) {
    queue.close();
    *queue_open = false;
    while let Ok(out) = queue.try_recv() {
        unacked.push_back(Sent { out, seq: 0, attempts: 0 });
    }
}
