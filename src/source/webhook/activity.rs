//! What one webhook connection is doing, and the deadline that follows from it.
//!
//! An HTTP/1.1 connection is always in one phase: waiting for a request (`Idle`, new or
//! after a response), receiving one (`Reading`, from its first byte until its body is
//! in) or handling one (`Handling`: publishing, which `publish_timeout` bounds). Waiting
//! and receiving each have a limit, which `Watched` enforces on the connection's stream.
//! `Activity` learns of the request side from the service (`request_started`,
//! `request_finished`) and from `TrackedBody` (`body_read`), of new bytes from `Watched`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// How long a connection may spend in each phase that has a limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub request_read: Duration,
    pub idle: Duration,
}

/// The limit a connection ran out of, named as the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    RequestRead,
    Idle,
}

impl Expiry {
    pub fn label(self) -> &'static str {
        match self {
            Expiry::RequestRead => "request_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle(Instant),
    Reading(Instant),
    Handling,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    expired: Option<Expiry>,
}

/// One connection's phase, shared by its stream, its service and its request bodies.
#[derive(Debug, Clone)]
pub(super) struct Activity(Arc<Mutex<State>>);

impl Activity {
    /// A new connection: waiting for its first request since `now`.
    pub fn new(now: Instant) -> Self {
        Activity(Arc::new(Mutex::new(State {
            phase: Phase::Idle(now),
            expired: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request has begun (its first bytes came, or hyper found it already buffered),
    /// unless one is under way.
    pub fn request_started(&self, now: Instant) {
        let mut state = self.state();
        if let Phase::Idle(_) = state.phase {
            state.phase = Phase::Reading(now);
        }
    }

    /// The request's body is in: handling it has no limit here.
    pub fn body_read(&self) {
        let mut state = self.state();
        if let Phase::Reading(_) = state.phase {
            state.phase = Phase::Handling;
        }
    }

    /// The response is on its way: the connection waits for its next request.
    pub fn request_finished(&self, now: Instant) {
        self.state().phase = Phase::Idle(now);
    }

    /// The limit that cut the connection, if one did.
    pub fn expired(&self) -> Option<Expiry> {
        self.state().expired
    }

    /// Records that `expiry` cut the connection.
    pub(super) fn expire(&self, expiry: Expiry) {
        self.state().expired = Some(expiry);
    }

    pub(super) fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        match self.state().phase {
            Phase::Idle(since) => Some((since + limits.idle, Expiry::Idle)),
            Phase::Reading(since) => Some((since + limits.request_read, Expiry::RequestRead)),
            Phase::Handling => None,
        }
    }
}

/// A request body that tells its connection when it has been read to the end.
pub(super) struct TrackedBody<B> {
    inner: B,
    activity: Activity,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, activity: Activity) -> Self {
        TrackedBody { inner, activity }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.activity.body_read();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_read: Duration::from_secs(10),
        idle: Duration::from_secs(90),
    };

    #[tokio::test]
    async fn each_phase_has_its_deadline() {
        let start = Instant::now();
        let activity = Activity::new(start);
        assert_eq!(
            activity.deadline(&LIMITS),
            Some((start + LIMITS.idle, Expiry::Idle))
        );
        let first_byte = start + Duration::from_secs(30);
        activity.request_started(first_byte);
        // hyper finding the request in its buffer does not restart the clock.
        activity.request_started(first_byte + Duration::from_secs(5));
        let reading = Some((first_byte + LIMITS.request_read, Expiry::RequestRead));
        assert_eq!(activity.deadline(&LIMITS), reading);
        let body = TrackedBody::new(axum::body::Body::from("{}"), activity.clone());
        let read = axum::body::to_bytes(axum::body::Body::new(body), 64).await;
        assert_eq!(&read.unwrap()[..], b"{}");
        assert_eq!(
            activity.deadline(&LIMITS),
            None,
            "handling has no limit here"
        );
        let done = first_byte + Duration::from_secs(1);
        activity.request_finished(done);
        assert_eq!(
            activity.deadline(&LIMITS),
            Some((done + LIMITS.idle, Expiry::Idle))
        );
        assert_eq!(activity.expired(), None);
    }
}
