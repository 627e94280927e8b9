//! libp2p's in-memory transport with faults injected under noise and yamux, so the real
//! transport code (frames, acknowledgements, resends, session bindings, the replay guard)
//! runs in tests without sockets, over a link that breaks, goes silent and lags.
//!
//! A node built with [`NetworkConfig::over_memory`](crate::transport::NetworkConfig::over_memory)
//! listens on `/memory/N` addresses (`/memory/0` picks a free N) and dials only those. Every
//! connection it opens or accepts is wrapped: each write to the raw connection (a noise
//! frame) first waits the configured delay, then meets its fate, drawn from one generator
//! seeded by [`WireFaults::seeded`]:
//! - **lost with the connection** ([`WireFaults::loss`]): the write fails and the
//!   connection breaks, as a TCP connection reset after a lost segment does. A stream
//!   protocol cannot lose one frame and go on, so this is how a dropped frame looks to the
//!   layers above: whatever was in flight on the connection is gone.
//! - **swallowed** ([`WireFaults::silence`]): the write, and every later one on that
//!   connection, reports success and never arrives. The connection stays open but is
//!   silent in one direction, as behind a black-holing router: only heartbeats and
//!   deadlines notice.
//! - passed on.
//!
//! [`WireFaults::cut_all`], [`WireFaults::cut_next_write`] and
//! [`WireFaults::silence_next_write`] inject a fault at a chosen moment instead.
//! Draws are made in the order writes happen, so a run on a current-thread runtime with
//! the same seed meets the same faults at the same writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The faults every connection of one node meets. Cheap to clone; clones share the
/// schedule and the counts. See the module docs.
#[derive(Clone)]
pub struct WireFaults {
    state: Arc<Mutex<State>>,
}

struct State {
    rng: StdRng,
    delay: Duration,
    loss: f64,
    silence: f64,
    /// Raised by [`WireFaults::cut_all`]: connections opened before it break.
    generation: u64,
    cut_next: usize,
    silence_next: usize,
    cuts: u64,
    silenced: u64,
    writes: u64,
}

/// What becomes of one write.
enum Fate {
    Pass,
    Cut,
    Silence,
}

impl WireFaults {
    /// No faults: every write passes at once.
    pub fn none() -> WireFaults {
        WireFaults::seeded(0)
    }

    /// No faults yet; the random ones added later are drawn from `seed`.
    pub fn seeded(seed: u64) -> WireFaults {
        let state = State {
            rng: StdRng::seed_from_u64(seed),
            delay: Duration::ZERO,
            loss: 0.0,
            silence: 0.0,
            generation: 0,
            cut_next: 0,
            silence_next: 0,
            cuts: 0,
            silenced: 0,
            writes: 0,
        };
        WireFaults { state: Arc::new(Mutex::new(state)) }
    }

    /// Each write waits `delay` before it is passed on (writes on one connection queue
    /// behind each other).
    pub fn delay(self, delay: Duration) -> WireFaults {
        self.state.lock().delay = delay;
        self
    }

    /// Each write breaks its connection with this probability (and is lost with it).
    pub fn loss(self, probability: f64) -> WireFaults {
        self.set_loss(probability);
        self
    }

    /// Changes the loss probability from now on (zero stops it).
    pub fn set_loss(&self, probability: f64) {
        self.state.lock().loss = probability.clamp(0.0, 1.0);
    }

    /// Each write silences its connection with this probability: it and every later
    /// write on the connection are swallowed.
    pub fn silence(self, probability: f64) -> WireFaults {
        self.state.lock().silence = probability.clamp(0.0, 1.0);
        self
    }

    /// Breaks every connection open now, at its next read or write.
    pub fn cut_all(&self) {
        self.state.lock().generation += 1;
    }

    /// The next write, on any connection, breaks its connection.
    pub fn cut_next_write(&self) {
        self.state.lock().cut_next += 1;
    }

    /// The next write, on any connection, silences its connection.
    pub fn silence_next_write(&self) {
        self.state.lock().silence_next += 1;
    }

    /// Connections broken so far (by loss, [`cut_next_write`](Self::cut_next_write) or
    /// [`cut_all`](Self::cut_all)).
    pub fn cuts(&self) -> u64 {
        self.state.lock().cuts
    }

    /// Connections silenced so far.
    pub fn silenced(&self) -> u64 {
        self.state.lock().silenced
    }

    /// Writes that met their fate so far.
    pub fn writes(&self) -> u64 {
        self.state.lock().writes
    }

    fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    fn delay_of_writes(&self) -> Duration {
        self.state.lock().delay
    }

    fn fate(&self) -> Fate {
        let mut state = self.state.lock();
        state.writes += 1;
        let fate = if state.cut_next > 0 {
            state.cut_next -= 1;
            Fate::Cut
        } else if state.silence_next > 0 {
            state.silence_next -= 1;
            Fate::Silence
        } else {
            // Both drawn every time, so one kind of fault does not shift the other's draws.
            let (loss, silence) = (state.loss, state.silence);
            let lost = loss > 0.0 && state.rng.gen_bool(loss);
            let silenced = silence > 0.0 && state.rng.gen_bool(silence);
            if lost {
                Fate::Cut
            } else if silenced {
                Fate::Silence
            } else {
                Fate::Pass
            }
        };
        match fate {
            Fate::Cut => state.cuts += 1,
            Fate::Silence => state.silenced += 1,
            Fate::Pass => {}
        }
        fate
    }
}

impl Default for WireFaults {
    fn default() -> Self {
        WireFaults::none()
    }
}

impl std::fmt::Debug for WireFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("WireFaults")
            .field("delay", &state.delay)
            .field("loss", &state.loss)
            .field("silence", &state.silence)
            .field("cuts", &state.cuts)
            .field("silenced", &state.silenced)
            .finish_non_exhaustive()
    }
}

/// One raw connection under [`WireFaults`].
pub(crate) struct FaultyConnection<C> {
    inner: C,
    faults: WireFaults,
    generation: u64,
    broken: bool,
    silent: bool,
    /// The delay of the write being made, while it runs.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The write being made has waited and drawn "pass": it only waits for the inner
    /// connection now (a write returning `Pending` is retried with the same bytes).
    admitted: bool,
}

impl<C> FaultyConnection<C> {
    pub(crate) fn new(inner: C, faults: WireFaults) -> Self {
        let generation = faults.generation();
        FaultyConnection { inner, faults, generation, broken: false, silent: false, waiting: None, admitted: false }
    }

    /// Whether the connection is broken, marking it so if a [`WireFaults::cut_all`] came
    /// since it opened.
    fn check_broken(&mut self) -> bool {
        if !self.broken && self.faults.generation() != self.generation {
            self.broken = true;
            self.faults.state.lock().cuts += 1;
        }
        self.broken
    }
}

fn reset() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection broken by an injected fault")
}

impl<C: AsyncRead + Unpin> AsyncRead for FaultyConnection<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        if self.check_broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for FaultyConnection<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.check_broken() {
            return Poll::Ready(Err(reset()));
        }
        if self.silent {
            return Poll::Ready(Ok(buf.len()));
        }
        if !self.admitted {
            let delay = self.faults.delay_of_writes();
            if !delay.is_zero() {
                let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if waiting.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.waiting = None;
            }
            match self.faults.fate() {
                Fate::Pass => self.admitted = true,
                Fate::Cut => {
                    self.broken = true;
                    return Poll::Ready(Err(reset()));
                }
                Fate::Silence => {
                    self.silent = true;
                    return Poll::Ready(Ok(buf.len()));
                }
            }
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if written.is_ready() {
            self.admitted = false;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.check_broken() {
            return Poll::Ready(Err(reset()));
        }
        if self.silent {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
