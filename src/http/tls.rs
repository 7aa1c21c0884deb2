//! HTTPS for the routes: browsers allow the microphone only in a secure context,
//! so a phone on the same network needs the page over HTTPS.
//!
//! [`TlsListener`] is an axum listener: TCP connections are accepted and their
//! TLS handshakes run in their own tasks, so a slow or silent client never holds
//! up the others.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that has not finished in this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain and its key, ready to serve.
#[derive(Debug)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Reads PEM files: a certificate chain and its private key.
    pub fn from_pem_files(cert: &str, key: &str) -> io::Result<TlsIdentity> {
        let read = |path: &str, what: &str| {
            std::fs::read(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read the TLS {what} {path:?}: {e}"),
                )
            })
        };
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "key")?;
        let certs = rustls_pemfile_certs(&cert_pem)
            .map_err(|e| invalid(format!("{cert:?} holds no usable PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(format!("{cert:?} holds no PEM certificate")));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid(format!("{key:?} holds no usable PEM private key: {e}")))?;
        Ok(TlsIdentity { certs, key })
    }

    /// A fresh self-signed certificate for `names` (for a quick test from a
    /// phone: the browser warns once, then the page works).
    pub fn self_signed(names: &[String]) -> io::Result<TlsIdentity> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| io::Error::other(format!("cannot make a self-signed certificate: {e}")))?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| io::Error::other(format!("self-signed key: {e}")))?;
        Ok(TlsIdentity {
            certs: vec![certified.cert.der().clone()],
            key,
        })
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A TCP listener whose connections speak TLS.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Serves `identity` on `listener`.
    pub fn new(listener: TcpListener, identity: TlsIdentity) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.certs, identity.key)
        .map_err(|e| invalid(format!("the TLS certificate and key do not fit: {e}")))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!("TCP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
