//! `Watched`: a webhook connection's stream that fails its reads and writes once the
//! connection has overstayed its phase's limit (see `activity`), so hyper closes it.
//! The deadline is checked only where an operation would wait, so a connection that
//! keeps moving pays nothing for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::activity::{Activity, Limits};

/// A connection's stream that fails once the connection overstays its phase's limit.
pub(super) struct Watched<S> {
    inner: S,
    activity: Activity,
    limits: Limits,
    /// Set to the current phase's deadline whenever an operation has to wait.
    timer: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Activity, limits: Limits) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(Instant::now() + limits.idle));
        Watched {
            inner,
            activity,
            limits,
            timer,
        }
    }

    /// Called where the stream would wait: ready with an error once the deadline passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((at, expiry)) = self.activity.deadline(&self.limits) else {
            // Handling: the phase changes (and the stream is polled again) when it ends.
            return Poll::Pending;
        };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.activity.expire(expiry);
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, expiry.label()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.activity.request_started(Instant::now());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_expired(cx).map(Err),
            done => done,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_expired(cx).map(Err),
            done => done,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_expired(cx).map(Err),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_expired(cx).map(Err),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_expired(cx).map(Err),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::webhook::activity::Expiry;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Limits = Limits {
        request_read: Duration::from_secs(10),
        idle: Duration::from_secs(90),
    };

    /// A watched stream and the client's end of it.
    fn connection() -> (
        Watched<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Activity,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let activity = Activity::new(Instant::now());
        (
            Watched::new(server, activity.clone(), LIMITS),
            client,
            activity,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_cut_after_the_idle_limit() {
        let (mut server, _client, activity) = connection();
        let started = Instant::now();
        let error = server.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(activity.expired(), Some(Expiry::Idle));
        assert_eq!(started.elapsed(), LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_begun_must_arrive_within_the_request_limit() {
        let (mut server, mut client, activity) = connection();
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"POST / HT").await.unwrap();
        let first = Instant::now();
        assert_eq!(server.read(&mut [0; 16]).await.unwrap(), 9);
        let error = server.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(activity.expired(), Some(Expiry::RequestRead));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(first.elapsed(), LIMITS.request_read);
    }

    #[tokio::test(start_paused = true)]
    async fn handling_has_no_limit_and_the_next_wait_is_idle_again() {
        let (mut server, mut client, activity) = connection();
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        server.read_exact(&mut [0; 19]).await.unwrap();
        activity.body_read();
        // Publishing may take as long as publish_timeout allows.
        let waited = tokio::time::timeout(LIMITS.idle * 2, server.read(&mut [0; 16])).await;
        assert!(waited.is_err(), "still open while handling");
        activity.request_finished(Instant::now());
        let finished = Instant::now();
        let error = server.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(activity.expired(), Some(Expiry::Idle));
        assert_eq!(finished.elapsed(), LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_writer_is_cut_too() {
        let (mut server, _client, activity) = connection();
        // The client reads nothing: the pipe fills and the write waits.
        let error = server.write_all(&[b'x'; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(activity.expired(), Some(Expiry::Idle));
    }
}
