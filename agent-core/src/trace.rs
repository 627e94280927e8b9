//! Spans on the message path that cost nothing when no one listens: without a subscriber
//! for DEBUG, no span is created, no field formatted, and no future wrapped.

/// `Some(debug_span!(…))` if DEBUG spans are listened to, else `None`.
macro_rules! message_span {
    ($($fields:tt)*) => {
        if tracing::enabled!(tracing::Level::DEBUG) {
            Some(tracing::debug_span!($($fields)*))
        } else {
            None
        }
    };
}

/// Awaits `$future` inside the span `$span` (an `Option<Span>`), or plainly without one.
/// Both arms are in the caller's future, so no extra layer is moved around.
macro_rules! traced {
    ($span:expr, $future:expr) => {
        match $span {
            Some(span) => tracing::Instrument::instrument($future, span).await,
            None => $future.await,
        }
    };
}

pub(crate) use {message_span, traced};
