//! Mutual TLS for peer connections and client ports (feature `tls`), with rustls.
//!
//! Every member of a cluster holds a certificate signed by the cluster's CA, and its private
//! key; the CA's certificate is the only root any member trusts. A certificate names the member
//! it belongs to with the DNS subject alternative name [`node_name`]`(id)` (`node-3` for node 3;
//! it may carry other names too). A connection between peers is accepted only when both sides
//! prove a certificate of the cluster's CA, valid now:
//!
//! - the connecting side checks that the certificate of the peer it dials is for that peer's
//!   id;
//! - the accepting side checks, when the hello comes, that the connecting side's certificate
//!   is for the node id the hello announces, and refuses the connection otherwise (before any
//!   of its messages reaches the node).
//!
//! Clients of an application's port (such as `raft-kv`'s) present a certificate of the same
//! CA, for any name; they accept any member's certificate of the CA
//! ([`TlsConfig::client_config_for_any_member`]).
//!
//! Only TLS 1.3 is spoken, with the `ring` provider given explicitly (no process-wide
//! provider is installed or needed), and without session tickets or resumption: a connection
//! is long-lived, and each one proves its certificates afresh.
//!
//! The transports drive TLS without I/O of their own here ([`TlsSession`], used by the
//! [`PeerReader`](crate::PeerReader) and the [`PeerLink`](crate::net::PeerLink) every TCP
//! transport shares), so all of them speak it the same way.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "cert-gen")] {
//! use adapter_common::tls::{generate::ClusterCa, TlsConfig};
//!
//! let ca = ClusterCa::new("example cluster").unwrap();
//! let node = ca.node(1).unwrap();
//! let tls = TlsConfig::from_pem(node.cert_pem.as_bytes(), node.key_pem.as_bytes(), ca.cert_pem().as_bytes())
//!     .unwrap();
//! assert!(tls.certifies(1));
//! assert!(!tls.certifies(2));
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_proto::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The DNS name a certificate carries to stand for member `id`: `node-{id}`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The PEM text holds no certificate, no private key, or a malformed section.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input (a path, or "certificate", "key", "CA").
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the certificate, a CA
    /// certificate it cannot parse...).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifiers could not be built from the CA.
    #[error("TLS setup: {0}")]
    Verifier(String),
}

/// A member's TLS identity and the cluster's CA, ready to make connections on either side.
/// Cheap to clone (shared); two values are equal when they are clones of one another.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    /// For the accepting side: a client certificate of the CA is required.
    server: Arc<ServerConfig>,
    /// For connecting to a peer, whose certificate must be for the name dialled.
    peer_client: Arc<ClientConfig>,
    /// For connecting to any member (an application's client).
    any_member_client: Arc<ClientConfig>,
    /// This side's own certificate chain (its own certificate first).
    own: Vec<CertificateDer<'static>>,
    /// The CA's certificates.
    roots: Arc<RootCertStore>,
    /// What the accepting side checks of a connecting side's certificate.
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificates", &self.inner.own.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for TlsConfig {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what: what.to_string(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_string(),
            reason: "no certificate in it".to_string(),
        });
    }
    Ok(certificates)
}

impl TlsConfig {
    /// Loads this member's certificate chain (`cert`, PEM, its own certificate first), its
    /// private key (`key`, PEM: PKCS#8, PKCS#1 or SEC1) and the cluster CA's certificates
    /// (`ca`, PEM).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let name = |path: &Path| path.display().to_string();
        Self::from_pem_named(
            (&read_file(cert)?, &name(cert)),
            (&read_file(key)?, &name(key)),
            (&read_file(ca)?, &name(ca)),
        )
    }

    /// Like [`from_pem_files`](Self::from_pem_files), from the PEM texts themselves.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_named((cert, "certificate"), (key, "key"), (ca, "CA"))
    }

    fn from_pem_named(
        (cert, cert_name): (&[u8], &str),
        (key, key_name): (&[u8], &str),
        (ca, ca_name): (&[u8], &str),
    ) -> Result<Self, TlsError> {
        let chain = certificates(cert, cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| TlsError::Pem {
            what: key_name.to_string(),
            reason: error.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for certificate in certificates(ca, ca_name)? {
            roots.add(certificate)?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let versions = &[&rustls::version::TLS13];

        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(Arc::clone(&client_verifier))
            .with_single_cert(chain.clone(), key.clone_key())?;
        // Connections are long-lived and one-way after the handshake: no tickets to send back.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});

        let peer_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|error| TlsError::Verifier(error.to_string()))?;
        let client = |verifier: Arc<dyn ServerCertVerifier>| -> Result<ClientConfig, TlsError> {
            let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(versions)?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            config.resumption = rustls::client::Resumption::disabled();
            config.enable_sni = false;
            Ok(config)
        };
        let peer_client = client(peer_verifier)?;
        let any_member_client = client(Arc::new(AnyMember {
            roots: Arc::clone(&roots),
            provider: Arc::clone(&provider),
        }))?;
        Ok(Self {
            inner: Arc::new(Inner {
                server: Arc::new(server),
                peer_client: Arc::new(peer_client),
                any_member_client: Arc::new(any_member_client),
                own: chain,
                roots,
                client_verifier,
                provider,
            }),
        })
    }

    /// Whether this side's own certificate is for member `id` (names [`node_name`]`(id)`).
    pub fn certifies(&self, id: NodeId) -> bool {
        certificate_names(&self.inner.own[0], id)
    }

    /// Checks this side's own certificate as its peers will, now: signed by the CA, valid now,
    /// allowed for both server and client authentication, naming member `id`. A node whose
    /// certificate fails this would be refused by every peer; its transport does not start.
    pub fn check_member(&self, id: NodeId) -> Result<(), String> {
        let (own, intermediates) = self.inner.own.split_first().ok_or("no certificate")?;
        if !certificate_names(own, id) {
            return Err(format!(
                "this node's TLS certificate does not name node {id} (it needs the DNS name {})",
                node_name(id)
            ));
        }
        self.member_chain(own, intermediates)
            .and_then(|()| {
                self.inner
                    .client_verifier
                    .verify_client_cert(own, intermediates, UnixTime::now())
                    .map(|_| ())
            })
            .map_err(|e| format!("this node's TLS certificate would be refused by its peers: {e}"))
    }

    /// Whether `certificate` (with `intermediates`) is a member's certificate of the CA, valid
    /// now: chained to the CA and allowed for server authentication (client certificates
    /// made by [`generate`] are not).
    fn member_chain(
        &self,
        certificate: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        let parsed = ParsedCertificate::try_from(certificate)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.inner.roots,
            intermediates,
            UnixTime::now(),
            self.inner.provider.signature_verification_algorithms.all,
        )
    }

    /// The rustls configuration of the accepting side: TLS 1.3, a client certificate of the
    /// CA required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.server)
    }

    /// The rustls configuration for connecting to a peer: its certificate must be of the CA
    /// and for the name dialled (give [`node_name`] of the peer as the server name).
    pub fn peer_client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.inner.peer_client)
    }

    /// The rustls configuration of an application's client: the server's certificate must be
    /// of the CA, valid now and allowed for server authentication (a member's: the client
    /// certificates [`generate`] makes are not), whatever member it names (the client dials an
    /// address, not a member). The server name given to rustls is then only a placeholder.
    pub fn client_config_for_any_member(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.inner.any_member_client)
    }
}

/// Whether `certificate` names member `id`.
fn certificate_names(certificate: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    ParsedCertificate::try_from(certificate)
        .and_then(|parsed| rustls::client::verify_server_name(&parsed, &name))
        .is_ok()
}

/// A server verifier that accepts any certificate chained to the CA and allowed for server
/// authentication, whatever it names.
#[derive(Debug)]
struct AnyMember {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyMember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a TLS session failed: the handshake was refused (a certificate of another CA, expired,
/// for another name), the peer sent an alert, or the bytes were not TLS at all (plaintext to
/// a TLS port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SessionError(String);

impl SessionError {
    fn from_rustls(error: &rustls::Error) -> Self {
        Self(match error {
            rustls::Error::InvalidMessage(_) => {
                format!("not TLS, or corrupted ({error}): plaintext to a TLS port?")
            }
            rustls::Error::AlertReceived(alert) => {
                format!("the peer refused the session with the alert {alert:?}")
            }
            _ => error.to_string(),
        })
    }
}

/// One TLS connection, without I/O: bytes received go in through
/// [`receive`](Self::receive), plaintext to send goes out sealed through
/// [`seal`](Self::seal), and [`take_output`](Self::take_output) yields what TLS itself needs
/// sent (the handshake, alerts).
pub struct TlsSession {
    connection: rustls::Connection,
    config: TlsConfig,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.connection.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// The accepting side of a connection.
    pub fn server(config: &TlsConfig) -> Result<Self, SessionError> {
        let connection = rustls::ServerConnection::new(config.server_config())
            .map_err(|e| SessionError::from_rustls(&e))?;
        Ok(Self::new(connection.into(), config))
    }

    /// The connecting side of a connection to member `peer`, whose certificate must name it.
    pub fn client(config: &TlsConfig, peer: NodeId) -> Result<Self, SessionError> {
        let name = ServerName::try_from(node_name(peer))
            .map_err(|e| SessionError(format!("bad server name: {e}")))?;
        let connection = rustls::ClientConnection::new(config.peer_client_config(), name)
            .map_err(|e| SessionError::from_rustls(&e))?;
        Ok(Self::new(connection.into(), config))
    }

    fn new(mut connection: rustls::Connection, config: &TlsConfig) -> Self {
        // Everything buffered is taken out at once by the caller: no limit needed.
        connection.set_buffer_limit(None);
        Self {
            connection,
            config: config.clone(),
        }
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.connection.is_handshaking()
    }

    /// Appends to `out` what TLS needs sent now (handshake messages, alerts).
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        while self.connection.wants_write() {
            match self.connection.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Takes bytes received from the peer; appends the plaintext they complete to `plain`.
    /// After an error the session is dead; [`take_output`](Self::take_output) then yields the
    /// alert to send the peer, if any.
    pub fn receive(&mut self, mut bytes: &[u8], plain: &mut Vec<u8>) -> Result<(), SessionError> {
        while !bytes.is_empty() {
            match self.connection.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => return Err(SessionError(error.to_string())),
            }
            let state = self
                .connection
                .process_new_packets()
                .map_err(|e| SessionError::from_rustls(&e))?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                if let Err(error) = self.connection.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    return Err(SessionError(error.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Appends `plain`, sealed into TLS records, to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        // With no buffer limit, the writer takes everything.
        let _ = self.connection.writer().write_all(plain);
        self.take_output(out);
    }

    /// Whether the peer proved a member's certificate naming member `id` (false before the
    /// handshake ends): one that names it, chained to the CA, valid now, and allowed for server
    /// authentication as well (a client's certificate of the same CA is not a member's).
    pub fn peer_is(&self, id: NodeId) -> bool {
        let Some((certificate, intermediates)) = self
            .connection
            .peer_certificates()
            .and_then(<[_]>::split_first)
        else {
            return false;
        };
        certificate_names(certificate, id)
            && self.config.member_chain(certificate, intermediates).is_ok()
    }
}

/// Certificates made at run time, for tests and for `raft-kv certs` (feature `cert-gen`, with
/// rcgen): a cluster CA, and certificates it signs for members and clients.
#[cfg(feature = "cert-gen")]
pub mod generate {
    use std::path::Path;

    use raft_proto::NodeId;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    pub use rcgen::Error;

    /// A certificate and its private key, both PEM.
    #[derive(Clone)]
    #[non_exhaustive]
    pub struct Issued {
        /// The certificate, PEM.
        pub cert_pem: String,
        /// Its private key, PEM (PKCS#8).
        pub key_pem: String,
    }

    impl std::fmt::Debug for Issued {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Issued").finish_non_exhaustive()
        }
    }

    /// A certificate authority made now: ECDSA P-256, valid from the start of last year for
    /// ten years.
    pub struct ClusterCa {
        issuer: Issuer<'static, KeyPair>,
        cert_pem: String,
    }

    impl std::fmt::Debug for ClusterCa {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ClusterCa").finish_non_exhaustive()
        }
    }

    impl ClusterCa {
        /// A new CA whose common name is `name`.
        pub fn new(name: &str) -> Result<Self, Error> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let year = this_year();
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            Ok(Self {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            })
        }

        /// The CA's certificate, PEM (what every member and client is given as `--tls-ca`).
        pub fn cert_pem(&self) -> String {
            self.cert_pem.clone()
        }

        /// A certificate for member `id` (named [`node_name`](super::node_name)`(id)`,
        /// also `localhost` and 127.0.0.1), for both server and client authentication (a
        /// member is both), valid from the start of last year for ten years.
        pub fn node(&self, id: NodeId) -> Result<Issued, Error> {
            self.issue(
                &super::node_name(id),
                vec![super::node_name(id), "localhost".into(), "127.0.0.1".into()],
                Kind::Member,
            )
        }

        /// A client certificate with the common name and DNS name `name`, for client
        /// authentication only: it cannot stand for a member, whatever its name.
        pub fn client(&self, name: &str) -> Result<Issued, Error> {
            self.issue(name, vec![name.to_string()], Kind::Client)
        }

        /// A certificate for member `id` that expired a year ago (for tests).
        pub fn expired_node(&self, id: NodeId) -> Result<Issued, Error> {
            self.issue(
                &super::node_name(id),
                vec![super::node_name(id)],
                Kind::Expired,
            )
        }

        fn issue(
            &self,
            common_name: &str,
            names: Vec<String>,
            kind: Kind,
        ) -> Result<Issued, Error> {
            let mut params = CertificateParams::new(names)?;
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.extended_key_usages = match kind {
                Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
                Kind::Member | Kind::Expired => vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            };
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let year = this_year();
            let (from, to) = match kind {
                Kind::Expired => (year - 2, year - 1),
                Kind::Member | Kind::Client => (year - 1, year + 10),
            };
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &self.issuer)?;
            Ok(Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }

        /// Writes into `dir` the CA's certificate (`ca.pem`, not its key), `node-ID.pem` and
        /// `node-ID-key.pem` for each of `nodes`, and `client.pem` and `client-key.pem` for
        /// a client. Keys are written readable by their owner only (on Unix).
        pub fn write_cluster(&self, dir: &Path, nodes: &[NodeId]) -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let other = |e: Error| std::io::Error::other(e.to_string());
            std::fs::write(dir.join("ca.pem"), self.cert_pem())?;
            for &id in nodes {
                let issued = self.node(id).map_err(other)?;
                write_pair(dir, &super::node_name(id), &issued)?;
            }
            write_pair(dir, "client", &self.client("client").map_err(other)?)
        }
    }

    /// What a certificate is for.
    #[derive(Clone, Copy)]
    enum Kind {
        Member,
        Client,
        Expired,
    }

    /// The current year (UTC, to within a day: certificates start at the beginning of the
    /// year before).
    fn this_year() -> i32 {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0)
    }

    fn write_pair(dir: &Path, name: &str, issued: &Issued) -> std::io::Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut key = options.open(dir.join(format!("{name}-key.pem")))?;
        std::io::Write::write_all(&mut key, issued.key_pem.as_bytes())
    }
}
