//! TLS for tests: certificates made with the openssl command (one self-signed, or a
//! private CA with a server and a client certificate), and an HTTPS front for a plain
//! HTTP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A self-signed certificate and key for 127.0.0.1, made with the openssl command.
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    (cert, key)
}

/// A private certificate authority and what it signed, as PEM files: a server
/// certificate for 127.0.0.1 and localhost, and a client certificate (mutual TLS).
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        let ca = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tgrelay test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path(&ca_key),
            "-out",
            path(&ca),
        ]);
        let sign = |name: &str, usage: &str, san: &str| {
            let (cert, key, csr) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
                dir.join(format!("{name}.csr")),
            );
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(
                &ext,
                format!(
                    "basicConstraints=critical,CA:FALSE\nextendedKeyUsage={usage}\n\
                     subjectAltName={san}\n"
                ),
            )
            .unwrap();
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                path(&key),
                "-out",
                path(&csr),
            ]);
            let serial = format!("0x{:016x}", rand::random::<u64>());
            openssl(&[
                "x509",
                "-req",
                "-in",
                path(&csr),
                "-CA",
                path(&ca),
                "-CAkey",
                path(&ca_key),
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                path(&ext),
                "-out",
                path(&cert),
            ]);
            (cert, key)
        };
        let (server_cert, server_key) = sign("server", "serverAuth", "IP:127.0.0.1,DNS:localhost");
        let (client_cert, client_key) = sign("client", "clientAuth", "DNS:tgrelay");
        Pki {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTPS front for a plain HTTP server at `upstream` (a local Bot API server behind a
/// TLS-terminating proxy, or a TLS-inspecting egress proxy): it serves `cert` and pipes
/// every connection's bytes to `upstream`. Runs until the test's runtime ends.
pub async fn https_front(cert: &Path, key: &Path, upstream: SocketAddr) -> SocketAddr {
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: fine.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}
