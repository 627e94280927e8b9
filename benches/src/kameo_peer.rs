//! kameo 0.22 measured in the same run as Agora: the same ping-pong, one `ask` per round
//! trip from a requester spawned on the runtime under test, so the ratio the report prints
//! compares two figures taken on the same machine at the same moment.

use std::time::Instant;

use kameo::actor::Spawn;
use kameo::message::{Context, Message};
use kameo::Actor;

use crate::{pipelined, Figures};

/// The far end: answers `Ping(n)` with `n`.
#[derive(Actor)]
struct Ponger;

struct Ping(u64);

impl Message<Ping> for Ponger {
    type Reply = u64;

    async fn handle(&mut self, Ping(n): Ping, _ctx: &mut Context<Self, Self::Reply>) -> u64 {
        n
    }
}

/// `round_trips` asks to a kameo actor with at most `in_flight` outstanding, from a task
/// spawned on the current runtime (as Agora's requester is an agent on it). Call inside the
/// runtime under test.
pub async fn ping_pong(round_trips: u64, in_flight: u64) -> Result<Figures, Box<dyn std::error::Error>> {
    let ponger = Ponger::spawn(Ponger);
    let requester = ponger.clone();
    let figures = tokio::spawn(async move {
        let started = Instant::now();
        let latencies = if in_flight <= 1 {
            let mut latencies = Vec::with_capacity(round_trips as usize);
            for n in 0..round_trips {
                let sent = Instant::now();
                let echoed = requester.ask(Ping(n)).await.map_err(|e| e.to_string())?;
                if echoed != n {
                    return Err(format!("kameo answered {echoed} to ping {n}"));
                }
                latencies.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
            }
            latencies
        } else {
            pipelined(round_trips, in_flight, |n| {
                let requester = requester.clone();
                async move {
                    match requester.ask(Ping(n)).await {
                        Ok(echoed) if echoed == n => Ok(()),
                        Ok(echoed) => Err(format!("kameo answered {echoed} to ping {n}")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?
        };
        Ok::<_, String>(Figures::from_latencies(latencies, started.elapsed()))
    })
    .await??;
    ponger.kill();
    ponger.wait_for_shutdown().await;
    Ok(figures)
}
