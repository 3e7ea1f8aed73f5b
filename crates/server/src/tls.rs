//! HTTPS with rustls: the server's certificate (reloaded on SIGHUP or when its files change,
//! without dropping connections) and, optionally, client certificates checked against a CA
//! (mutual TLS).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Where the certificate and key live, and whom to ask for client certificates.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A CA (PEM): when given, every client must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

fn read_key(cfg: &TlsConfig) -> std::io::Result<Arc<CertifiedKey>> {
    let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| bad("cannot read the certificate", &cfg.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("cannot parse the certificate", &cfg.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", &cfg.cert, &"the file holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| bad("cannot read the private key", &cfg.key, &e))?;
    let provider = rustls::crypto::ring::default_provider();
    // Checks the key belongs to the certificate: a renewal caught between writing the two files
    // must not install a pair that fails every handshake.
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| bad("unusable certificate and key", &cfg.key, &e))?;
    Ok(Arc::new(certified))
}

/// Hands rustls the certificate loaded last; a reload swaps it for new handshakes, while
/// established connections keep theirs.
#[derive(Debug)]
struct Reloading(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// Accepts TLS connections with the current certificate.
#[derive(Clone)]
pub(crate) struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl TlsAcceptor {
    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.inner.accept(tcp).await
    }
}

/// Builds the acceptor and starts watching the certificate files (and SIGHUP) until `shutdown`.
pub(crate) fn acceptor(cfg: &TlsConfig, shutdown: CancellationToken) -> std::io::Result<TlsAcceptor> {
    let resolver = Arc::new(Reloading(RwLock::new(read_key(cfg)?)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| std::io::Error::other(format!("cannot read the client CA {}: {e}", path.display())))?
            {
                roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| std::io::Error::other(format!("the client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(watch(cfg.clone(), resolver, shutdown));
    Ok(TlsAcceptor { inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
}

fn modified(cfg: &TlsConfig) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&cfg.cert)?, m(&cfg.key)?))
}

/// Reloads the certificate on SIGHUP, or when either file's modification time changes (checked
/// every second). A certificate that does not load is logged and the old one kept.
async fn watch(cfg: TlsConfig, resolver: Arc<Reloading>, shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = modified(&cfg);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup => "SIGHUP",
            _ = ticks.tick() => {
                if modified(&cfg) == seen { continue }
                "the files changed"
            }
        };
        // Looked at before the files are read, so a write that lands while they are read is
        // seen at the next tick; and remembered only once they load, so a half-written pair is
        // tried again.
        let now = modified(&cfg);
        match read_key(&cfg) {
            Ok(key) => {
                seen = now;
                *resolver.0.write().expect("certificate lock") = key;
                tracing::info!(cert = %cfg.cert.display(), reason, "reloaded the TLS certificate");
            }
            Err(e) => tracing::error!(error = %e, reason, "cannot reload the TLS certificate; keeping the old one"),
        }
    }
}
