//! The admin server: `/metrics` (Prometheus), `/healthz` (the process serves) and
//! `/readyz` (the pod can take traffic: the sink connected, the webhook listener bound
//! where there is one; `?verbose` adds each bot's state). Apart from any webhook
//! listener, so probes and scrapes never compete with Telegram's requests.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, ListenerState, SourceState};
use crate::metrics::Metrics;
use crate::sink::Sink;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub sink: Arc<dyn Sink>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) {
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The pod's readiness: the sink, and the webhook listener where one is bound. Each
/// bot's state is listed with `?verbose` (for people), and never changes the status.
async fn readyz(State(state): State<AdminState>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let verbose = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "verbose" || pair.starts_with("verbose="));
    let sink_ready = state.sink.is_ready();
    let mut body = format!("sink {}: {}\n", state.sink.name(), ready_word(sink_ready));
    let listener_ready = match state.health.listener() {
        None => true,
        Some(ListenerState::Binding) => {
            body.push_str("listener: not bound yet\n");
            false
        }
        Some(ListenerState::Bound(addr)) => {
            body.push_str(&format!("listener {addr}: ready\n"));
            true
        }
    };
    let sources = state.health.sources();
    let mut counts = [0usize; 3];
    for source in sources.values() {
        counts[*source as usize] += 1;
    }
    body.push_str(&format!(
        "bots: {} ready, {} not ready, {} failed\n",
        counts[SourceState::Ready as usize],
        counts[SourceState::NotReady as usize],
        counts[SourceState::Failed as usize]
    ));
    if verbose {
        for (bot, source) in &sources {
            body.push_str(&format!("bot {bot}: {}\n", source.label()));
        }
    }
    let status = if sink_ready && listener_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

fn ready_word(ready: bool) -> &'static str {
    if ready {
        "ready"
    } else {
        "not ready"
    }
}
