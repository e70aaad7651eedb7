//! The NATS connection: servers, credentials and TLS as configured, and what to check
//! when the TLS handshake fails.

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

use super::{NatsSinkConfig, NatsSinkError};

/// A connection with the configured credentials and TLS.
pub(super) async fn client(config: &NatsSinkConfig) -> Result<async_nats::Client, NatsSinkError> {
    let client = connect_options(config)
        .await?
        .name(concat!("tgrelay/", env!("CARGO_PKG_VERSION")))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        })
        .connect(
            servers(&config.url).map_err(|message| NatsSinkError::Connect {
                url: config.url.clone(),
                message,
            })?,
        )
        .await
        .map_err(|e| NatsSinkError::Connect {
            url: config.url.clone(),
            message: format!("{e}{}", tls_hint(config, &e)),
        })?;
    Ok(client)
}

/// Authentication and TLS as configured.
async fn connect_options(config: &NatsSinkConfig) -> Result<ConnectOptions, NatsSinkError> {
    let mut options = match &config.credentials_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsSinkError::Connect {
                url: config.url.clone(),
                message: format!("credentials file {}: {e}", path.display()),
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options.require_tls(config.requires_tls()))
}

/// What to check when the TLS handshake failed: rustls's own words name the alert or
/// the verification error, not the setting behind it.
fn tls_hint(config: &NatsSinkConfig, error: &async_nats::ConnectError) -> &'static str {
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            let io = s.downcast_ref::<std::io::Error>()?;
            io.get_ref()?.downcast_ref::<rustls::Error>()
        });
        match tls {
            Some(rustls::Error::AlertReceived(_)) if config.tls_cert_file.is_none() => {
                return " (the server refused the TLS handshake: if it verifies clients, set \
                    sink.nats.tls_cert_file and tls_key_file to a certificate its CA signed)";
            }
            Some(rustls::Error::AlertReceived(_)) => {
                return " (the server refused the TLS handshake: is sink.nats.tls_cert_file \
                    signed by a CA it trusts?)";
            }
            Some(rustls::Error::InvalidCertificate(_)) => {
                return " (the server's certificate is not trusted: set sink.nats.tls_ca_file \
                    to the CA that signed it)";
            }
            _ => source = s.source(),
        }
    }
    ""
}

/// The servers of a comma-separated list (`nats://a:4222,nats://b:4222`): the client
/// tries them in turn at start and fails over between them.
pub(super) fn servers(urls: &str) -> Result<Vec<ServerAddr>, String> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| format!("{url:?} is not a server address: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("no server named".into());
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::servers;

    #[test]
    fn a_comma_separated_list_names_every_server() {
        let list = servers("nats://a:4222, nats://b:4223,tls://c:4224").unwrap();
        let hosts: Vec<(&str, u16)> = list.iter().map(|s| (s.host(), s.port())).collect();
        assert_eq!(hosts, [("a", 4222), ("b", 4223), ("c", 4224)]);
        assert!(servers("nats://a:4222,nats://b:port").is_err());
        assert!(servers(" , ").is_err());
    }
}
