//! [`ClientTls`]: TLS to the nodes, made from `[client.tls]`'s files.
//!
//! A node's channel does its TLS handshake itself (rustls, through
//! `tokio-rustls`), inside the connect timeout, and reads the server's HTTP/2
//! frames above it as it does in cleartext. Under TLS 1.3 the client sends
//! its HTTP/2 connection preface and the connection is made once the
//! server's first bytes arrive: a server refusing the client's certificate
//! (which TLS 1.3 does after the handshake) then fails the connection, with
//! an error that says what to set in `[client.tls]`.
//!
//! tonic's own TLS settings, made from the same files, serve the channels
//! tonic connects: a short connection's and its health watch's, and the
//! probe of a node whose server closed its connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use registry_actor::config::InvalidValue;
use registry_actor::TlsFiles;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::ClientTlsConfig;

/// TLS to the nodes: the CA certificates to trust, an optional client
/// certificate (mutual TLS), and the name the servers' certificates must
/// carry (default: the host of the node's address). Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// use cluster_client::{ClientTls, ConnectionSettings};
/// use registry_actor::TlsConfig;
///
/// let files = TlsConfig::default()
///     .with_ca_file("certs/ca.pem")
///     .read("client.tls")?
///     .expect("TLS is on");
/// let tls = ClientTls::from_files(&files, "client.tls")?;
/// let settings = ConnectionSettings::default().with_tls(Some(tls));
/// # Ok::<(), registry_actor::config::InvalidValue>(())
/// ```
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    domain: Option<ServerName<'static>>,
    tonic: ClientTlsConfig,
}

impl std::fmt::Debug for ClientTls {
    // Not the key: only what is public.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// TLS with the PEM `files` read from the table at key path `section`
    /// (named in errors).
    ///
    /// # Errors
    ///
    /// [`InvalidValue`] naming the file's key when the CA file holds no
    /// usable certificate, or the client certificate or key cannot be read
    /// or do not go together, or naming `{section}.domain` when the domain
    /// is not a server name.
    pub fn from_files(files: &TlsFiles, section: &str) -> Result<Self, InvalidValue> {
        let key = |name: &str| format!("{section}.{name}");
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(files.ca()) {
            let cert = cert.map_err(invalid(key("ca_file")))?;
            roots.add(cert).map_err(invalid(key("ca_file")))?;
        }
        if roots.is_empty() {
            return Err(InvalidValue::new(
                key("ca_file"),
                "holds no PEM certificate".to_owned(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid(section.to_owned()))?
            .with_root_certificates(roots);
        let mut config = match files.identity() {
            None => builder.with_no_client_auth(),
            Some((cert, private)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid(key("cert_file")))?;
                if chain.is_empty() {
                    return Err(InvalidValue::new(
                        key("cert_file"),
                        "holds no PEM certificate".to_owned(),
                    ));
                }
                let private =
                    PrivateKeyDer::from_pem_slice(private).map_err(invalid(key("key_file")))?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(invalid(key("key_file")))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let domain = match files.domain() {
            None => None,
            Some(domain) => Some(ServerName::try_from(domain.to_owned()).map_err(|e| {
                InvalidValue::new(
                    key("domain"),
                    format!("`{domain}` is not a server name: {e}"),
                )
            })?),
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            domain,
            tonic: files.options(),
        })
    }

    /// The handshake on `stream`, a connection to the node at `uri`.
    /// Its failure is a [`HandshakeFailed`].
    ///
    /// Under TLS 1.3 the server judges the client's certificate (or its
    /// absence) after the handshake, and refuses with an alert in answer to
    /// the client's last handshake message. So the client sends the HTTP/2
    /// connection preface (a server may wait for it before it sends
    /// anything), the connection is made once the server's first bytes
    /// arrive (its SETTINGS), and a refusal fails the handshake, naming what
    /// to change. The HTTP/2 client's own writing of the preface is then
    /// skipped (see [`TlsIo::poll_write`]).
    pub(crate) async fn handshake(&self, uri: &http::Uri, stream: TcpStream) -> io::Result<TlsIo> {
        let host = uri.host().unwrap_or_default();
        let failed = |error: io::Error| {
            io::Error::other(HandshakeFailed {
                host: host.to_owned(),
                error: explained(error),
            })
        };
        let name = match &self.domain {
            Some(domain) => domain.clone(),
            // An IPv6 address comes bracketed in a URI's host.
            None => ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
                .map_err(|e| failed(io::Error::new(io::ErrorKind::InvalidInput, e)))?
                .to_owned(),
        };
        let mut stream = self.connector.connect(name, stream).await.map_err(failed)?;
        let mut early = Early::default();
        let mut preface = Preface::default();
        if stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let sent = async {
                stream.write_all(PREFACE).await?;
                stream.flush().await
            }
            .await;
            // Read even when the preface could not be sent: a server that
            // refused the certificate and closed has sent its alert first.
            early.bytes = vec![0; EARLY_READ];
            quick_ack(stream.get_ref().0);
            let read = stream.read(&mut early.bytes).await;
            let n = match (sent, read) {
                (_, Err(error)) | (Err(error), Ok(_)) => return Err(failed(error)),
                (Ok(()), Ok(0)) => {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the node closed the connection after the handshake",
                    )))
                }
                (Ok(()), Ok(n)) => n,
            };
            early.bytes.truncate(n);
            preface = Preface::sent();
        }
        Ok(TlsIo {
            stream,
            early,
            preface,
        })
    }

    /// Connects to `addr` (`host:port`) and makes the TLS handshake a node's
    /// channel makes (under TLS 1.3: the HTTP/2 connection preface sent and
    /// the server's first bytes read), then closes the connection: for tools
    /// that report on a server. Not bounded in time: bound it by the
    /// caller's timeout.
    ///
    /// # Errors
    ///
    /// The io error of the TCP connect or of the handshake. A server that
    /// refuses this client's certificate, or its absence, is named as such,
    /// with the `[client.tls]` keys to set.
    pub async fn check_server(&self, addr: &str) -> io::Result<()> {
        let uri = http::Uri::try_from(format!("https://{addr}"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = TcpStream::connect(addr).await?;
        self.handshake(&uri, stream).await.map(drop)
    }

    /// tonic's settings with the same files.
    pub(crate) fn tonic(&self) -> &ClientTlsConfig {
        &self.tonic
    }
}

/// Has the kernel acknowledge what `stream` receives at once, not after
/// its delayed-acknowledgement timer (about 40 ms on Linux): a server that
/// leaves Nagle's algorithm on holds its SETTINGS back until its session
/// tickets, sent just before, are acknowledged. Where the option does not
/// exist, nothing.
fn quick_ack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // Only a delay is at stake: a failure leaves the default.
        let _ = stream.set_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// Makes an error of a TLS file or setting into an [`InvalidValue`] naming
/// its key.
fn invalid<E: std::fmt::Display>(key: String) -> impl FnOnce(E) -> InvalidValue {
    move |error| InvalidValue::new(key, error.to_string())
}

/// `error` with what to change in `[client.tls]` when it is a TLS alert by
/// which the server refused this client's certificate, or its absence (see
/// [`refusal`]); any other error as it is.
fn explained(error: io::Error) -> io::Error {
    refusal(&error).unwrap_or(error)
}

/// When `error` is a TLS alert by which the server refused this client's
/// certificate, or its absence: an io error of the same kind whose message
/// names the alert and what to change in `[client.tls]`.
fn refusal(error: &io::Error) -> Option<io::Error> {
    use rustls::AlertDescription as Alert;
    let alert = match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => *alert,
        _ => return None,
    };
    let hint = match alert {
        Alert::CertificateRequired => {
            "the node requires a client certificate: set client.tls.cert_file and \
             client.tls.key_file"
        }
        Alert::BadCertificate
        | Alert::UnsupportedCertificate
        | Alert::CertificateRevoked
        | Alert::CertificateExpired
        | Alert::CertificateUnknown
        | Alert::UnknownCA
        | Alert::AccessDenied => {
            "the node refused this client's certificate (client.tls.cert_file): is it \
             signed by a CA the node trusts, and valid?"
        }
        _ => return None,
    };
    Some(io::Error::new(
        error.kind(),
        format!("the node sent the TLS alert {alert:?}: {hint}"),
    ))
}

/// The size of the first read after a TLS 1.3 handshake: room for the
/// server's SETTINGS frame and more.
const EARLY_READ: usize = 1024;

/// The HTTP/2 client connection preface's fixed part, the first bytes an
/// HTTP/2 client sends.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A node's TLS connection, made by [`ClientTls::handshake`]: reads get the
/// bytes read while it was made first, then the stream's (a TLS alert by
/// which the server refuses this client's certificate says so, see
/// [`explained`]); writes go to the stream, but for the connection preface
/// when the handshake sent it.
#[derive(Debug)]
pub(crate) struct TlsIo {
    pub(super) stream: TlsStream<TcpStream>,
    early: Early,
    preface: Preface,
}

/// The connection preface the handshake sent, which the HTTP/2 client
/// writes again.
#[derive(Debug, Default)]
struct Preface {
    /// How many of its bytes the HTTP/2 client has yet to write.
    left: usize,
}

impl Preface {
    /// Sent in full by the handshake.
    fn sent() -> Self {
        Self {
            left: PREFACE.len(),
        }
    }

    /// While some of the preface is left, takes `buf`'s first bytes as its
    /// next ones: how many, or `InvalidData` when they are not the
    /// preface's (an HTTP/2 client writes nothing before it). `None` once
    /// all of it was taken, or for an empty `buf`: the bytes go to the
    /// stream.
    fn take(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        if self.left == 0 || buf.is_empty() {
            return None;
        }
        let sent = &PREFACE[PREFACE.len() - self.left..];
        let n = sent.len().min(buf.len());
        if buf[..n] != sent[..n] {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the HTTP/2 client's first bytes are not its connection preface",
            )));
        }
        self.left -= n;
        Some(Ok(n))
    }
}

/// Bytes read while a connection was made, for its first reads.
#[derive(Debug, Default)]
struct Early {
    bytes: Vec<u8>,
    /// How many of them were given to reads.
    given: usize,
}

impl Early {
    /// Fills `buf` with what is left; whether anything was.
    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let left = &self.bytes[self.given..];
        if left.is_empty() {
            return false;
        }
        let n = buf.remaining().min(left.len());
        buf.put_slice(&left[..n]);
        self.given += n;
        if self.given == self.bytes.len() {
            *self = Self::default();
        }
        true
    }
}

impl TlsIo {
    /// Reads what was read while connecting, then from the stream.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.early.give(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream)
            .poll_read(cx, buf)
            .map_err(explained)
    }

    /// Writes `buf` to the stream, but for the bytes of the preface the
    /// handshake sent (see [`Preface::take`]).
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.preface.take(buf) {
            Some(taken) => Poll::Ready(taken),
            None => Pin::new(&mut self.stream).poll_write(cx, buf),
        }
    }

    /// Writes `bufs` to the stream, as [`TlsIo::poll_write`] does.
    pub(super) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.preface.left == 0 {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.poll_write(cx, first)
    }
}

/// A TLS handshake with a node that failed (the certificate is not trusted
/// or names another host, the server wants a client certificate, ...): the
/// node cannot be reached as configured, a failure of its connection.
#[derive(Debug)]
pub(crate) struct HandshakeFailed {
    host: String,
    error: io::Error,
}

impl std::fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake with {} failed: {}", self.host, self.error)
    }
}

impl std::error::Error for HandshakeFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use registry_actor::testing::TestCa;
    use registry_actor::TlsConfig;

    use super::*;

    #[test]
    fn an_alert_refusing_the_client_certificate_names_what_to_set_and_others_stay() {
        let alert = |a| io::Error::new(io::ErrorKind::InvalidData, rustls::Error::AlertReceived(a));
        let required = explained(alert(rustls::AlertDescription::CertificateRequired));
        assert_eq!(required.kind(), io::ErrorKind::InvalidData);
        assert!(
            required.to_string().contains("client.tls.cert_file"),
            "{required}"
        );
        let unknown_ca = explained(alert(rustls::AlertDescription::UnknownCA)).to_string();
        assert!(
            unknown_ca.contains("refused this client's certificate"),
            "{unknown_ca}"
        );
        let other = explained(alert(rustls::AlertDescription::HandshakeFailure));
        assert!(
            other.get_ref().is_some_and(|e| e.is::<rustls::Error>()),
            "{other}"
        );
        let plain = explained(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(plain.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn bytes_read_while_connecting_are_given_in_order_to_reads_of_any_size() {
        let mut early = Early {
            bytes: (0..10).collect(),
            given: 0,
        };
        let mut got = Vec::new();
        let mut storage = [0u8; 4];
        loop {
            let mut buf = ReadBuf::new(&mut storage);
            if !early.give(&mut buf) {
                break;
            }
            assert!(!buf.filled().is_empty());
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert!(early.bytes.is_empty(), "freed once given");
    }

    #[test]
    fn the_preface_sent_is_taken_from_the_first_writes_and_then_bytes_pass() {
        let mut preface = Preface::sent();
        let (head, tail) = PREFACE.split_at(10);
        assert_eq!(preface.take(head).expect("taken").expect("the preface"), 10);
        let mut more = tail.to_vec();
        more.extend_from_slice(b"SETTINGS");
        let n = preface.take(&more).expect("taken").expect("the preface");
        assert_eq!(n, tail.len(), "only the preface's bytes");
        assert!(preface.take(b"SETTINGS").is_none(), "then bytes pass");

        let mut other = Preface::sent();
        let error = other.take(b"GET / HTTP/1.1").expect("refused");
        assert_eq!(
            error.expect_err("not the preface").kind(),
            io::ErrorKind::InvalidData
        );
        assert!(Preface::default().take(PREFACE).is_none(), "none was sent");
    }

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("gc-client-tls-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            Self(dir)
        }

        fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn made(config: TlsConfig) -> Result<ClientTls, InvalidValue> {
        let files = config.read("client.tls").expect("readable").expect("on");
        ClientTls::from_files(&files, "client.tls")
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_its_key() {
        let dir = Dir::new("no-ca");
        let ca = dir.file("ca.pem", "not a certificate");
        let err = made(TlsConfig::default().with_ca_file(ca)).expect_err("no CA");
        assert!(err.to_string().contains("client.tls.ca_file"), "{err}");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused_naming_its_key() {
        let dir = Dir::new("no-key");
        let ca = TestCa::new(&dir.0, "ca");
        let leaf = ca.leaf("client", &["client.test"]);
        let key = dir.file("client.key", "not a key");
        let err = made(
            TlsConfig::default()
                .with_ca_file(&ca.ca_file)
                .with_identity(&leaf.cert, key),
        )
        .expect_err("no key");
        assert!(err.to_string().contains("client.tls.key_file"), "{err}");
    }

    #[test]
    fn a_domain_that_is_not_a_server_name_is_refused_naming_its_key() {
        let dir = Dir::new("domain");
        let ca = TestCa::new(&dir.0, "ca");
        let err = made(
            TlsConfig::default()
                .with_ca_file(&ca.ca_file)
                .with_domain("bad..name"),
        )
        .expect_err("not a name");
        assert!(err.to_string().contains("client.tls.domain"), "{err}");
    }

    #[test]
    fn a_ca_and_a_client_certificate_make_tls_whose_debug_shows_no_key() {
        let dir = Dir::new("ok");
        let ca = TestCa::new(&dir.0, "ca");
        let leaf = ca.leaf("client", &["client.test"]);
        let tls = made(
            TlsConfig::default()
                .with_ca_file(&ca.ca_file)
                .with_identity(&leaf.cert, &leaf.key),
        )
        .expect("usable");
        let key = std::fs::read_to_string(&leaf.key).expect("key");
        let line = key.lines().nth(1).expect("a body line");
        assert!(!format!("{tls:?}").contains(line));
    }
}
