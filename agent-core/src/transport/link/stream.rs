//! One stream of a link: writes queued envelopes in batches, reads acknowledgements and
//! replies, sends heartbeats, and reports each envelope at its own deadline.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::busy_poll::BusyPoll;
use super::super::frame::{self, Frame};
use super::super::{Endpoint, Network, Outbound};
use super::replies::reply_verdict;
use super::window::{acknowledge, encode, expire, Sent};
use super::{IDLE, SILENT};
use crate::identity::Address;

/// Drives one stream until it breaks. Unacknowledged envelopes stay in `unacked`.
pub(super) async fn serve(
    net: &Network,
    endpoint: &Endpoint,
    reader: ReadHalf<libp2p::Stream>,
    mut writer: WriteHalf<libp2p::Stream>,
    unacked: &mut VecDeque<Sent>,
    queue: &mut mpsc::Receiver<Outbound>,
    queue_open: &mut bool,
) -> String {
    let mut frames = frame::FrameReader::new(reader, net.config.max_frame);
    let mut bound: HashMap<Address, u64> = HashMap::new();
    // Bindings of the agents replying to us on this stream.
    let mut replier_bindings: HashMap<Address, u64> = HashMap::new();
    let mut next_seq = 0u64;
    let mut buf = Vec::new();
    let mut resent = 0u64;
    for sent in unacked.iter_mut() {
        sent.seq = next_seq;
        next_seq += 1;
        sent.attempts += 1;
        // Written to an earlier stream that broke before its acknowledgement.
        resent += u64::from(sent.attempts > 1);
        encode(&mut buf, sent, &mut bound);
    }
    crate::metrics::resends(&endpoint.peer_id, resent);
    let heartbeat_period = net.config.heartbeat;
    // A write waits for the peer at most until the oldest envelope's deadline, and never
    // longer than a silent peer is given.
    let write_deadline = |oldest: Instant| oldest.min(Instant::now() + heartbeat_period * 3);
    let oldest = unacked.iter().map(|s| s.out.deadline).min().unwrap_or_else(Instant::now);
    if let Err(err) = frame::write(&mut writer, &buf, write_deadline(oldest)).await {
        return format!("write failed: {err}");
    }
    let window = net.config.window;
    // Ticks for heartbeats and for noticing idleness, whichever needs it more often.
    let idle_after = net.config.idle_timeout;
    let tick = heartbeat_period.min(idle_after / 2).max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + tick, tick);
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    // When the last envelope was queued or acknowledged.
    let mut last_active = Instant::now();
    // One timer for all deadlines, armed for the soonest one (each envelope has its own),
    // moved earlier when a sooner one is queued and re-armed when it fires: no timer is
    // registered per envelope.
    let far = || Instant::now() + Duration::from_secs(3600);
    let soonest = |unacked: &VecDeque<Sent>| unacked.iter().map(|s| s.out.deadline).min();
    let expiry = tokio::time::sleep_until(soonest(unacked).unwrap_or_else(far));
    tokio::pin!(expiry);
    let mut busy = BusyPoll::new(net.config.busy_poll);
    busy.wrote();
    loop {
        let polling = !unacked.is_empty() && busy.polling();
        tokio::select! {
            () = tokio::task::yield_now(), if polling => {}
            item = queue.recv(), if *queue_open && unacked.len() < window => {
                last_active = Instant::now();
                let Some(out) = item else {
                    *queue_open = false;
                    if unacked.is_empty() {
                        return "queue closed".into();
                    }
                    continue;
                };
                buf.clear();
                let mut push = |out: Outbound, unacked: &mut VecDeque<Sent>, buf: &mut Vec<u8>| {
                    let mut sent = Sent { out, seq: next_seq, attempts: 1 };
                    next_seq += 1;
                    encode(buf, &mut sent, &mut bound);
                    unacked.push_back(sent);
                };
                let mut soonest = out.deadline;
                push(out, unacked, &mut buf);
                // Batch what is already queued into one write.
                while unacked.len() < window {
                    match queue.try_recv() {
                        Ok(out) => {
                            soonest = soonest.min(out.deadline);
                            push(out, unacked, &mut buf);
                        }
                        Err(_) => break,
                    }
                }
                if soonest < expiry.deadline() {
                    expiry.as_mut().reset(soonest);
                }
                if let Err(err) = frame::write(&mut writer, &buf, write_deadline(expiry.deadline())).await {
                    return format!("write failed: {err}");
                }
                busy.wrote();
            }
            frame = frames.next() => {
                last_heard = Instant::now();
                busy.heard();
                // This frame and every one that has already arrived: acks of what we sent,
                // and replies (with their bindings) to our requests, which we ack in one write.
                let mut acks = Vec::new();
                let mut next = frame.map(Some);
                loop {
                    match next {
                        Ok(Some(Frame::Ack { seq, verdict })) => {
                            last_active = last_heard;
                            acknowledge(unacked, seq, verdict)
                        }
                        Ok(Some(Frame::Pong(_))) => {}
                        Ok(Some(Frame::Bind(binding))) => match binding.verify(&endpoint.peer_id, crate::envelope::unix_now_ms()) {
                            Ok(()) if replier_bindings.len() < 10_000 || replier_bindings.contains_key(&binding.agent) => {
                                replier_bindings.insert(binding.agent, binding.expires_ms);
                            }
                            Ok(()) => {}
                            Err(err) => tracing::warn!(peer = %endpoint.peer_id, error = %err, "refused a reply binding"),
                        },
                        Ok(Some(Frame::Envelope { seq, auth, bytes })) => {
                            let verdict = reply_verdict(net, endpoint, auth, &bytes, &replier_bindings);
                            Frame::Ack { seq, verdict }.encode(&mut acks);
                        }
                        Ok(Some(Frame::Ping(_))) => return "unexpected ping from the receiver".into(),
                        Ok(None) => break,
                        Err(err) => return err.to_string(),
                    }
                    next = frames.try_next();
                }
                if !acks.is_empty() {
                    // Let the requesters just answered run first: the next request they
                    // send then leaves in the same packet as these acks.
                    tokio::task::yield_now().await;
                    while *queue_open && unacked.len() < window {
                        match queue.try_recv() {
                            Ok(out) => {
                                if out.deadline < expiry.deadline() {
                                    expiry.as_mut().reset(out.deadline);
                                }
                                let mut sent = Sent { out, seq: next_seq, attempts: 1 };
                                next_seq += 1;
                                encode(&mut acks, &mut sent, &mut bound);
                                unacked.push_back(sent);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(err) = frame::write(&mut writer, &acks, write_deadline(expiry.deadline())).await {
                        return format!("write failed: {err}");
                    }
                    busy.wrote();
                }
                if !*queue_open && unacked.is_empty() {
                    return "done".into();
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > heartbeat_period * 3 {
                    return SILENT.into();
                }
                if unacked.is_empty() && last_active.elapsed() >= idle_after {
                    return IDLE.into();
                }
                if last_ping.elapsed() < heartbeat_period {
                    continue;
                }
                last_ping = Instant::now();
                buf.clear();
                Frame::Ping(0).encode(&mut buf);
                if let Err(err) = frame::write(&mut writer, &buf, write_deadline(expiry.deadline())).await {
                    return format!("write failed: {err}");
                }
            }
            () = &mut expiry => {
                // Everything here was written to this stream: none can be unreachable.
                expire(unacked, endpoint, "");
                expiry.as_mut().reset(soonest(unacked).unwrap_or_else(far));
            }
        }
    }
}
