//! The admin server: `/metrics` (Prometheus), `/healthz` (the process serves) and
//! `/readyz` (every source healthy and the sink connected). Apart from any webhook
//! listener, so probes and scrapes never compete with Telegram's requests.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
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

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let sink_ready = state.sink.is_ready();
    let sources = state.health.sources();
    let mut body = format!(
        "sink {}: {}\n",
        state.sink.name(),
        if sink_ready { "ready" } else { "not ready" }
    );
    for (bot, up) in &sources {
        body.push_str(&format!(
            "bot {bot}: {}\n",
            if *up { "ready" } else { "not ready" }
        ));
    }
    let ready = sink_ready && sources.values().all(|up| *up);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}
