//! Certificates made at test time with rcgen: a CA, a server certificate for
//! `127.0.0.1` and `localhost`, and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of one certificate and its key.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA able to sign leaves, with its certificate written to `ca.pem`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A fresh CA named `name`, its files under `dir`.
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

    /// A leaf for `sans` (names or IPs) with common name `cn`, written as
    /// `{ca}-{cn}.pem` and `.key`.
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
    pub fn server(&self) -> Pem {
        self.leaf("server", &["127.0.0.1", "localhost"])
    }
}
