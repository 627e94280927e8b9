//! Type erasure for handlers: plain async functions stored in one table per agent kind.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use std::task::{Context, Poll};

use crate::context::Context as AgentContext;
use crate::delivery::Body;
use crate::identity::Address;
use crate::message::Message;

/// What a handler may return: nothing, or a `Result` whose error is logged (and sent to a
/// waiting requester) without stopping the agent.
pub trait HandlerOutput: Send + 'static {
    /// `Err` carries the error's display text.
    fn into_outcome(self) -> Result<(), String>;
}

impl HandlerOutput for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display + Send + 'static> HandlerOutput for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A started handler, boxed with its output type erased.
pub(crate) struct HandlerFuture(Pin<Box<dyn PollOutcome + Send>>);

impl HandlerFuture {
    /// Boxes `future` as it is: no wrapper to convert its output, so the future is moved
    /// into its box once (a wrapper such as `map` took it by value, one more copy of the
    /// whole future for every message).
    pub(crate) fn new<F: Future<Output: HandlerOutput> + Send + 'static>(future: F) -> Self {
        HandlerFuture(Box::pin(future))
    }
}

impl Future for HandlerFuture {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll_outcome(cx)
    }
}

/// A handler's future, polled for its output as an outcome.
trait PollOutcome {
    fn poll_outcome(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>>;
}

impl<F: Future<Output: HandlerOutput>> PollOutcome for F {
    fn poll_outcome(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.poll(cx).map(HandlerOutput::into_outcome)
    }
}

/// A message handler with its message type erased.
pub(crate) trait MessageHandler: Send + Sync {
    /// Decodes `body` and starts the handler. `Err` is a decoding failure.
    fn call(&self, ctx: AgentContext, from: Address, body: Body) -> Result<HandlerFuture, String>;

    /// `body` decoded, without calling the handler: for a check that must see a message
    /// that decodes before the handler (or anything of it) runs. `Err` is a decoding
    /// failure.
    fn decode(&self, body: Body) -> Result<Body, String>;
}

pub(crate) struct MessageFn<M, F> {
    f: F,
    _message: PhantomData<fn(M)>,
}

impl<M, F> MessageFn<M, F> {
    pub(crate) fn new(f: F) -> Self {
        MessageFn { f, _message: PhantomData }
    }
}

impl<M, F, Fut, O> MessageHandler for MessageFn<M, F>
where
    M: Message,
    F: Fn(AgentContext, Address, M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    fn call(&self, ctx: AgentContext, from: Address, body: Body) -> Result<HandlerFuture, String> {
        let message: M = match body {
            Body::Typed(value) => {
                *value.downcast::<M>().map_err(|_| format!("internal: value routed as {} has another type", M::NAME))?
            }
            Body::Json(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("payload does not decode as {}: {e}", M::NAME))?
            }
        };
        // Not an `async` block: a block awaiting the future it captured holds it twice
        // (captured and awaited), which doubled the boxed handler's size.
        Ok(HandlerFuture::new((self.f)(ctx, from, message)))
    }

    fn decode(&self, body: Body) -> Result<Body, String> {
        match body {
            Body::Typed(value) => Ok(Body::Typed(value)),
            Body::Json(bytes) => serde_json::from_slice::<M>(&bytes)
                .map(|message| Body::Typed(Box::new(message)))
                .map_err(|e| format!("payload does not decode as {}: {e}", M::NAME)),
        }
    }
}

/// A startup, shutdown or interval handler.
pub(crate) trait TaskHandler: Send + Sync {
    fn call(&self, ctx: AgentContext) -> HandlerFuture;
}

pub(crate) struct TaskFn<F>(pub(crate) F);

impl<F, Fut, O> TaskHandler for TaskFn<F>
where
    F: Fn(AgentContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    fn call(&self, ctx: AgentContext) -> HandlerFuture {
        // Not an `async` block, for the same reason as in `MessageFn::call`.
        HandlerFuture::new((self.0)(ctx))
    }
}
