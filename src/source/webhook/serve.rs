//! Serving the webhook listener, plain HTTP or HTTPS, with a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use tokio_util::sync::CancellationToken;

use super::{WebhookServer, WebhookServerConfig};

/// Binds now (so a taken port is a startup error), then serves in the background until
/// `shutdown`, giving in-flight requests `drain` to finish. Returns the bound address
/// and the serving task.
pub async fn serve(
    config: &WebhookServerConfig,
    server: WebhookServer,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("binding the webhook listener to {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = server
        .router(config.max_body_bytes)
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(drain));
    });
    let task = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            // The process-wide rustls provider; an error means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
            tokio::spawn(async move { report(server.serve(app).await) })
        }
        _ => {
            let server = axum_server::from_tcp(listener)?.handle(handle);
            tokio::spawn(async move { report(server.serve(app).await) })
        }
    };
    Ok((addr, task))
}

fn report(result: std::io::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "the webhook listener failed");
    }
}
