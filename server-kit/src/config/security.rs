//! The `[server.tls]` and `[server.auth]` tables: TLS on the listener, and the
//! bearer tokens that name callers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use registry_actor::tls::read_file;
use registry_actor::Secret;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Identity};

use crate::Error;

/// The `[server.tls]` table: the server's certificate and key, and optionally
/// the CA whose client certificates it requires (mutual TLS).
///
/// ```toml
/// [server.tls]
/// cert_file = "certs/server.pem"
/// key_file = "certs/server.key"
/// client_ca_file = "certs/ca.pem"   # set: every client must present a certificate it signed
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

impl ServerTlsConfig {
    /// PEM files of the server's certificate (chain) and private key (default:
    /// none, plaintext).
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// A PEM file of the CA that signs client certificates; set, every client
    /// must present one (default: none, no client certificates asked).
    pub fn with_client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca_file = Some(path.into());
        self
    }

    /// Whether TLS is configured.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.client_ca_file.is_some()
    }

    /// The certificate file, when set.
    pub fn cert_file(&self) -> Option<&Path> {
        self.cert_file.as_deref()
    }

    /// The key file, when set.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// The client CA file, when set.
    pub fn client_ca_file(&self) -> Option<&Path> {
        self.client_ca_file.as_deref()
    }

    /// Reads the files into tonic's server TLS settings; `None` when TLS is off.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key and path of a file that cannot be read,
    /// or a missing certificate or key.
    pub fn load(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, Error> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            let missing = if self.cert_file.is_none() {
                "cert_file"
            } else {
                "key_file"
            };
            return Err(Error::invalid(
                format!("server.tls.{missing}"),
                "required for TLS (server.tls.cert_file and server.tls.key_file go together)",
            ));
        };
        let cert = read_file("server.tls.cert_file", cert)?;
        let key = read_file("server.tls.key_file", key)?;
        let mut tls =
            tonic::transport::ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca_file {
            let ca = read_file("server.tls.client_ca_file", ca)?;
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(Some(tls))
    }
}

/// The `[server.auth]` table: bearer tokens that authenticate callers by name.
///
/// ```toml
/// [server.auth.callers]
/// billing = "token-of-billing"    # a call with `authorization: Bearer token-of-billing` is `billing`
/// reports = "token-of-reports"
/// ```
///
/// With callers set, every call must carry one of their tokens (or
/// `server.token`); the name is the caller that per-caller limits count
/// against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    callers: BTreeMap<String, Secret>,
}

impl AuthConfig {
    /// Adds a caller `name` authenticated by `token` (default: none).
    pub fn with_caller(mut self, name: impl Into<String>, token: impl Into<String>) -> Self {
        self.callers.insert(name.into(), Secret::new(token));
        self
    }

    /// The callers and their tokens.
    pub fn callers(&self) -> &BTreeMap<String, Secret> {
        &self.callers
    }

    /// Checks every name and token; the error names the key
    /// (`server.auth.callers.NAME`), never the token.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a name or token that is empty or not visible ASCII,
    /// or a token given to two callers.
    pub fn validate(&self) -> Result<(), Error> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        for (name, token) in &self.callers {
            let key = format!("server.auth.callers.{name}");
            if !visible(name) {
                return Err(Error::invalid(key, "a caller name must be visible ASCII"));
            }
            if !visible(token.expose()) {
                return Err(Error::invalid(
                    key,
                    "the token must be non-empty visible ASCII",
                ));
            }
            if let Some((other, _)) = self.callers.iter().find(|(n, t)| *n != name && *t == token) {
                return Err(Error::invalid(
                    key,
                    format!("the same token as server.auth.callers.{other}"),
                ));
            }
        }
        Ok(())
    }
}
