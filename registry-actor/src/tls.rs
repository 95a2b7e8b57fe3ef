//! Client-side TLS settings shared by every section that dials out over TLS
//! (`[registry.tls]`, `[client.tls]`), and the reading of certificate files.
//!
//! ```toml
//! [client.tls]
//! ca_file = "certs/ca.pem"        # the CA that signed the servers' certificates
//! cert_file = "certs/client.pem"  # with key_file: a client certificate (mTLS)
//! key_file = "certs/client.key"
//! domain = "echo.internal"        # the name the servers' certificates carry
//! ```
//!
//! Any key set turns TLS on, and then `ca_file` is required (no other roots
//! are trusted). The files are read when the settings are loaded
//! ([`TlsConfig::load`]), and a file that cannot be read fails with its key and
//! path.

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};
use serde::{Deserialize, Serialize};

use crate::config::InvalidValue;

/// TLS settings of a client: the CA to trust, an optional client certificate
/// and key (mutual TLS), and the name the server's certificate must carry. Each
/// setter states its default; every default is unset (no TLS).
///
/// # Examples
///
/// ```
/// use registry_actor::TlsConfig;
///
/// let tls = TlsConfig::default();
/// assert!(!tls.is_enabled());
/// let tls = tls.with_domain("echo.internal");
/// let err = tls.load("client.tls").unwrap_err().to_string();
/// assert!(err.contains("client.tls.ca_file"), "{err}");
/// let tls = tls.with_ca_file("/nonexistent/ca.pem");
/// let err = tls.load("client.tls").unwrap_err().to_string();
/// assert!(err.contains("client.tls.ca_file"), "{err}");
/// assert!(err.contains("/nonexistent/ca.pem"), "{err}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    domain: Option<String>,
}

impl TlsConfig {
    /// A PEM file of the CA certificates to trust (default: none; required when
    /// TLS is on: no other roots are trusted).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// PEM files of a client certificate and its private key, presented to
    /// servers that require client certificates (default: none).
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// The name the server's certificate must carry (default: the host of the
    /// address dialled).
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Whether any key is set: TLS is on.
    pub fn is_enabled(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.domain.is_some()
    }

    /// The CA file, when set.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The client certificate file, when set.
    pub fn cert_file(&self) -> Option<&Path> {
        self.cert_file.as_deref()
    }

    /// The client key file, when set.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// The server name override, when set.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Reads the files into tonic's client TLS settings; `None` when TLS is off.
    /// `section` is the key path of this table (`client.tls`), for errors.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn load(&self, section: &str) -> Result<Option<TlsOptions>, InvalidValue> {
        Ok(self.read(section)?.map(|files| files.options()))
    }

    /// Reads the files; `None` when TLS is off. `section` is the key path of
    /// this table (`client.tls`), for errors.
    ///
    /// # Errors
    ///
    /// [`InvalidValue`] naming the key and the path of a file that cannot be
    /// read, TLS on without a CA file, a certificate without its key (or the
    /// reverse), or an empty domain.
    pub fn read(&self, section: &str) -> Result<Option<TlsFiles>, InvalidValue> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let Some(ca_file) = &self.ca_file else {
            return Err(InvalidValue::new(
                format!("{section}.ca_file"),
                format!(
                    "required when [{section}] is set: no other CA is trusted, \
                     so no server certificate could be verified"
                ),
            ));
        };
        let ca = read_file(&format!("{section}.ca_file"), ca_file)?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((
                read_file(&format!("{section}.cert_file"), cert)?,
                read_file(&format!("{section}.key_file"), key)?,
            )),
            (Some(_), None) => {
                return Err(InvalidValue::new(
                    format!("{section}.key_file"),
                    format!("required with {section}.cert_file"),
                ))
            }
            (None, Some(_)) => {
                return Err(InvalidValue::new(
                    format!("{section}.cert_file"),
                    format!("required with {section}.key_file"),
                ))
            }
            (None, None) => None,
        };
        if let Some(domain) = &self.domain {
            if domain.is_empty() || domain.chars().any(char::is_whitespace) {
                return Err(InvalidValue::new(
                    format!("{section}.domain"),
                    format!("`{domain}` is not a host name"),
                ));
            }
        }
        Ok(Some(TlsFiles {
            ca,
            identity,
            domain: self.domain.clone(),
        }))
    }
}

/// The contents of a [`TlsConfig`]'s files, as [`TlsConfig::read`] found
/// them: PEM, not yet parsed. Its `Debug` leaves the private key out.
#[derive(Clone)]
pub struct TlsFiles {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl TlsFiles {
    /// The CA certificates to trust (PEM).
    pub fn ca(&self) -> &[u8] {
        &self.ca
    }

    /// The client certificate chain and its private key (PEM), when set.
    pub fn identity(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()))
    }

    /// The name the server's certificate must carry, when set.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// tonic's client TLS settings with these files.
    pub fn options(&self) -> TlsOptions {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &format_args!("{} bytes", self.ca.len()))
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

/// Reads a certificate or key file named by config key `key`.
///
/// # Errors
///
/// [`InvalidValue`] naming `key` and `path` when the file cannot be read or is
/// empty.
pub fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, InvalidValue> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => Err(InvalidValue::new(
            key,
            format!("{} is empty", path.display()),
        )),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(InvalidValue::new(
            key,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}
