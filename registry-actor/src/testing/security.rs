//! [`EtcdSecurity`]: a test etcd served over TLS (optionally requiring client
//! certificates) and with user/password authentication on.

use std::path::Path;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::certs::{Pem, TestCa};
use crate::{RegistryConfig, TlsConfig};

/// The user the fixture creates when authentication is on: etcd's `root`.
pub const ROOT_USER: &str = "root";

/// How a test etcd is secured (default: plaintext, no authentication). Each
/// setter states its default.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use registry_actor::testing::{EtcdSecurity, EtcdServer};
///
/// let security = EtcdSecurity::default()
///     .with_tls()
///     .with_client_cert_auth()
///     .with_root_password("pw");
/// let etcd = EtcdServer::start_secured(security).await?;
/// // TLS with the fixture's CA and client certificate, user `root`, password `pw`.
/// let config = etcd.registry_config();
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    tls: bool,
    client_cert_auth: bool,
    root_password: Option<String>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.tls)
            .field("client_cert_auth", &self.client_cert_auth)
            .field("auth", &self.root_password.is_some())
            .finish()
    }
}

impl EtcdSecurity {
    /// Serve clients over TLS with a server certificate for `127.0.0.1`
    /// signed by the fixture's own CA (default off).
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Require a client certificate signed by the fixture's CA
    /// (`--client-cert-auth`; implies TLS; default off).
    pub fn with_client_cert_auth(mut self) -> Self {
        self.tls = true;
        self.client_cert_auth = true;
        self
    }

    /// Turn authentication on with user `root` and this password (default
    /// off).
    pub fn with_root_password(mut self, password: impl Into<String>) -> Self {
        self.root_password = Some(password.into());
        self
    }

    /// The TLS files under `dir` when TLS is on: a CA named `etcd-ca`, the
    /// server's certificate and a client certificate (common name `client`,
    /// which is no etcd user).
    pub(super) fn tls_files(&self, dir: &Path) -> Option<TlsFiles> {
        self.tls.then(|| {
            let ca = TestCa::new(&dir.join("certs"), "etcd-ca");
            TlsFiles {
                server: ca.server(),
                client: ca.leaf("client", &["client.test"]),
                client_cert_auth: self.client_cert_auth,
                ca,
            }
        })
    }

    pub(super) fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }
}

/// The certificates of a TLS test etcd.
#[derive(Debug)]
pub(super) struct TlsFiles {
    pub(super) ca: TestCa,
    pub(super) server: Pem,
    pub(super) client: Pem,
    pub(super) client_cert_auth: bool,
}

impl TlsFiles {
    /// The etcd flags serving these files.
    pub(super) fn etcd_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--cert-file".into(),
            self.server.cert.clone().into(),
            "--key-file".into(),
            self.server.key.clone().into(),
            "--trusted-ca-file".into(),
            self.ca.ca_file.clone().into(),
        ];
        if self.client_cert_auth {
            args.push("--client-cert-auth".into());
        }
        args
    }

    /// Client TLS trusting the CA and presenting the client certificate.
    pub(super) fn client_options(&self) -> std::io::Result<TlsOptions> {
        let read = |path: &Path| std::fs::read(path);
        Ok(TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca.ca_file)?))
            .identity(Identity::from_pem(
                read(&self.client.cert)?,
                read(&self.client.key)?,
            )))
    }

    /// `[registry.tls]` for these files: the CA, and the client certificate
    /// when etcd requires one.
    pub(super) fn registry_tls(&self) -> TlsConfig {
        let tls = TlsConfig::default().with_ca_file(&self.ca.ca_file);
        if self.client_cert_auth {
            tls.with_identity(&self.client.cert, &self.client.key)
        } else {
            tls
        }
    }
}

/// How a member's own client reaches it: TLS files and, once authentication is
/// on, the root user.
#[derive(Debug, Default)]
pub(super) struct Access {
    pub(super) tls: Option<TlsFiles>,
    pub(super) user: Option<(String, String)>,
}

impl Access {
    pub(super) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Connect options of a client of this member: as the root user when
    /// `as_user` and authentication is on, else anonymous.
    pub(super) fn connect_options(&self, as_user: bool) -> std::io::Result<Option<ConnectOptions>> {
        let user = self.user.as_ref().filter(|_| as_user);
        if self.tls.is_none() && user.is_none() {
            return Ok(None);
        }
        let mut options = ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.client_options()?);
        }
        if let Some((user, password)) = user {
            options = options.with_user(user.clone(), password.clone());
        }
        Ok(Some(options))
    }

    /// `config` with this member's TLS and user.
    pub(super) fn secure(&self, mut config: RegistryConfig) -> RegistryConfig {
        if let Some(tls) = &self.tls {
            config = config.with_tls(tls.registry_tls());
        }
        if let Some((user, password)) = &self.user {
            config = config.with_user(user.clone(), password.clone());
        }
        config
    }
}

/// Turns authentication on the way `etcdctl user add root` and
/// `etcdctl auth enable` do: role `root`, user `root` with that role, then
/// auth enable.
pub(super) async fn enable_auth(client: &mut Client, password: &str) -> std::io::Result<()> {
    let failed = |what: &str, e: etcd_client::Error| {
        std::io::Error::other(format!("cannot turn etcd auth on ({what}): {e}"))
    };
    client
        .role_add(ROOT_USER)
        .await
        .map_err(|e| failed("role add root", e))?;
    client
        .user_add(ROOT_USER, password, None)
        .await
        .map_err(|e| failed("user add root", e))?;
    client
        .user_grant_role(ROOT_USER, ROOT_USER)
        .await
        .map_err(|e| failed("grant role root", e))?;
    client
        .auth_enable()
        .await
        .map_err(|e| failed("auth enable", e))?;
    Ok(())
}
