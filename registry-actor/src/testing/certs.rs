//! [`TestCa`]: certificates made at test time with rcgen (a CA, server and
//! client certificates), written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of one certificate and its private key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A CA able to sign leaves, its certificate written to `{dir}/{name}.pem`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): what clients and servers are told to trust.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA named `name` (its common name), its files under `dir`.
    ///
    /// # Panics
    ///
    /// When a key cannot be made or a file cannot be written.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("cert dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// A leaf for `sans` (host names or IPs) with common name `cn`, written as
    /// `{ca}-{cn}.pem` and `{ca}-{cn}.key`.
    ///
    /// # Panics
    ///
    /// When a name is not a valid SAN or a file cannot be written.
    pub fn leaf(&self, cn: &str, sans: &[&str]) -> Pem {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let base = self.dir.join(format!("{}-{cn}", self.name));
        let pem = Pem {
            cert: base.with_extension("pem"),
            key: base.with_extension("key"),
        };
        std::fs::write(&pem.cert, cert.pem()).expect("write cert");
        std::fs::write(&pem.key, key.serialize_pem()).expect("write key");
        pem
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    ///
    /// # Panics
    ///
    /// As [`leaf`](Self::leaf).
    pub fn server(&self) -> Pem {
        self.leaf("server", &["127.0.0.1", "localhost"])
    }
}
