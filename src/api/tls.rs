//! HTTPS for the HTTP listener: the certificate chain and private key from PEM files
//! (`SLUICE_TLS_CERT`, `SLUICE_TLS_KEY`), served through rustls and reloaded without a restart,
//! on SIGHUP or when either file changes. A reload that fails keeps the pair being served and
//! says why in the log; a pair that fails at start stops Sluice with the reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::keys::FileStamp;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Why a certificate and key could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{path} holds no usable private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The served pair, swapped in place on reload; handshakes read the current one.
#[derive(Debug)]
struct Current {
    cert_path: PathBuf,
    key_path: PathBuf,
    key: RwLock<Arc<CertifiedKey>>,
    /// The certificate's and the key's files as last read.
    stamp: Mutex<[FileStamp; 2]>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().map(|k| k.clone())
    }
}

/// HTTPS settings in effect: hand [`Tls::acceptor`] to the server loop.
#[derive(Clone)]
pub struct Tls {
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Loads the pair, checking that the key signs for the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, TlsError> {
        let stamp = [FileStamp::of(cert_path), FileStamp::of(key_path)];
        let key = read_pair(cert_path, key_path)?;
        let current = Arc::new(Current {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            key: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Key {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            current,
            config: Arc::new(config),
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Reads the files again and serves them from the next handshake on. `force` reloads even
    /// when the files look unchanged (SIGHUP). Answers whether a new pair is served.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let c = &self.current;
        let stamp = [FileStamp::of(&c.cert_path), FileStamp::of(&c.key_path)];
        {
            let seen = c.stamp.lock().map_err(|_| TlsError::Read {
                path: c.cert_path.clone(),
                reason: "lock poisoned".into(),
            })?;
            if !force && *seen == stamp {
                return Ok(false);
            }
        }
        let key = read_pair(&c.cert_path, &c.key_path);
        if let Ok(mut seen) = c.stamp.lock() {
            // A pair that fails is not tried again until the files change once more.
            *seen = stamp;
        }
        let key = key?;
        if let Ok(mut k) = c.key.write() {
            *k = Arc::new(key);
        }
        Ok(true)
    }

    /// Reloads on SIGHUP and whenever the files change, until `stop`.
    pub fn watch(self, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; TLS files are still reloaded when they change");
                    None
                }
            };
            loop {
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(WATCH_EVERY) => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                match self.reload(forced) {
                    Ok(true) => tracing::info!(
                        cert = %self.current.cert_path.display(),
                        "TLS certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        });
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| read(cert_path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(cert_path, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::Read {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}
