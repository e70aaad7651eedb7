//! One webhook connection, from its accept to its close: the TLS handshake (within
//! `tls_handshake_timeout`), then HTTP/1.1 requests into the router, each phase within
//! its limit (see `activity`), and on shutdown a graceful close that lets the request
//! in flight finish until the drain deadline (`halt`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Limits, TrackedBody};
use super::watched::Watched;
use crate::metrics::Metrics;

/// The reason label of a connection whose TLS handshake took too long.
pub(super) const TLS_HANDSHAKE_TIMEOUT: &str = "tls_handshake_timeout";

/// What every connection of one listener shares.
pub(super) struct Listener {
    pub router: Router,
    pub http: http1::Builder,
    pub tls: Option<TlsAcceptor>,
    pub tls_handshake_timeout: Duration,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Shutdown: finish the request in flight, take no more.
    pub shutdown: CancellationToken,
    /// The drain deadline passed: close now.
    pub halt: CancellationToken,
}

/// A place among the listener's open connections, given back on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Slot {
    pub fn new(permit: OwnedSemaphorePermit, open: prometheus::IntGauge) -> Self {
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Serves one accepted connection until it closes.
pub(super) async fn serve(
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
) {
    let Some(tls) = &listener.tls else {
        return serve_http(&listener, stream, peer).await;
    };
    let handshake = tokio::time::timeout(listener.tls_handshake_timeout, tls.accept(stream));
    let stream = tokio::select! {
        done = handshake => done,
        _ = listener.halt.cancelled() => return,
    };
    match stream {
        Ok(Ok(stream)) => serve_http(&listener, stream, peer).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
        Err(_) => {
            let closed = &listener.metrics.webhook_connections_closed;
            closed.with_label_values(&[TLS_HANDSHAKE_TIMEOUT]).inc();
        }
    }
}

async fn serve_http<S>(listener: &Listener, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(Instant::now());
    let io = TokioIo::new(Watched::new(stream, activity.clone(), listener.limits));
    let service = Service {
        router: listener.router.clone(),
        peer,
        activity: activity.clone(),
    };
    let conn = listener.http.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        done = conn.as_mut() => done,
        _ = listener.shutdown.cancelled() => {
            // Closes an idle connection now, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                done = conn.as_mut() => done,
                _ = listener.halt.cancelled() => Ok(()),
            }
        }
    };
    if let Some(expiry) = activity.expired() {
        let closed = &listener.metrics.webhook_connections_closed;
        closed.with_label_values(&[expiry.label()]).inc();
    } else if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

/// The router, seen from one connection: each request carries the peer's address and
/// moves the connection's phase.
#[derive(Clone)]
struct Service {
    router: Router,
    peer: SocketAddr,
    activity: Activity,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // hyper may parse a request it read earlier, with no new bytes to start the phase.
        self.activity.request_started(Instant::now());
        let mut request = request
            .map(|body| axum::body::Body::new(TrackedBody::new(body, self.activity.clone())));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        // A Router is always ready, so it may be called without poll_ready.
        let response = tower_service::Service::call(&mut self.router.clone(), request);
        let finished = Finished(self.activity.clone());
        Box::pin(async move {
            let response = response.await;
            drop(finished);
            response
        })
    }
}

/// Ends a request's phase however its response future ends (done, or dropped).
struct Finished(Activity);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}
