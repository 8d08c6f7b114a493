//! TLS (rustls) on every port, when a node is given a certificate, its key and the cluster's
//! CA (`--tls-cert`, `--tls-key`, `--tls-ca`):
//!
//! - **Peer and client port.** Peers authenticate each other: a node presents its certificate
//!   when it connects to a peer, and a connection that says it carries Raft messages
//!   (`Hello::Peer`) is refused unless it presented a certificate signed by the cluster's CA.
//!   Clients need no certificate (they may present one); their connections are encrypted and
//!   they check the node's certificate against the CA.
//! - **Redis port.** TLS without client certificates, as `redis-cli --tls --cacert ca.pem`
//!   expects; a password (`--requirepass`) can be required on top.
//!
//! A certificate is checked against the address the other side was reached at, so a node's
//! certificate must name the addresses its peers and clients use (IP addresses as IP SANs),
//! unless a common name is given with `--tls-server-name`.
//!
//! [`generate_local`] makes a throwaway CA and node certificates for `raftkv cluster --tls`.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub type Stream = Box<dyn Io>;

/// Where a node's or a client's TLS material is.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain (a node's; optional for a client).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM certificates of the CA that signs the cluster's certificates.
    pub ca: PathBuf,
    /// Check certificates against this name instead of the address reached.
    pub server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad certificate in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The TLS a node speaks.
#[derive(Clone)]
pub struct NodeTls {
    /// The peer and client port: client certificates optional, but verified when given.
    pub rpc: TlsAcceptor,
    /// The Redis port: no client certificates.
    pub resp: TlsAcceptor,
    /// Connecting to peers (with our certificate) and to nodes as a client.
    pub connector: ClientTls,
}

impl NodeTls {
    pub fn load(files: &TlsFiles) -> anyhow::Result<NodeTls> {
        let (Some(cert), Some(key_path)) = (&files.cert, &files.key) else {
            anyhow::bail!("TLS needs --tls-cert and --tls-key as well as --tls-ca");
        };
        let chain = certs(cert)?;
        let roots = roots(&files.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .context("cannot build the client certificate verifier")?;
        let rpc = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key(key_path)?)
            .with_context(|| format!("{} does not match {}", key_path.display(), cert.display()))?;
        let resp = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key(key_path)?)?;
        Ok(NodeTls {
            rpc: TlsAcceptor::from(Arc::new(rpc)),
            resp: TlsAcceptor::from(Arc::new(resp)),
            connector: ClientTls::load(files)?,
        })
    }
}

/// The TLS a client (or a node, connecting out) speaks.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: Option<String>,
}

impl ClientTls {
    /// Trusts the CA; presents `cert` if given.
    pub fn load(files: &TlsFiles) -> anyhow::Result<ClientTls> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(&files.ca)?);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key_path)) => builder
                .with_client_auth_cert(certs(cert)?, key(key_path)?)
                .with_context(|| {
                    format!("{} does not match {}", key_path.display(), cert.display())
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: files.server_name.clone(),
        })
    }

    /// Wraps a connection to `addr` in TLS (the handshake included).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<Stream> {
        let name = match &self.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        Ok(Box::new(self.connector.connect(name, stream).await?))
    }
}

/// The files `raftkv cluster --tls` makes in `dir`: a CA, and a certificate per node (with
/// 127.0.0.1 and localhost as names) that it also uses as a client.
pub struct LocalTls {
    pub ca: PathBuf,
    pub node_cert: Vec<PathBuf>,
    pub node_key: Vec<PathBuf>,
}

/// Makes (or, if present, reuses) a throwaway CA and certificates for `nodes` nodes in `dir`.
pub fn generate_local(dir: &Path, nodes: u64) -> anyhow::Result<LocalTls> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let paths = LocalTls {
        ca: dir.join("ca.pem"),
        node_cert: (1..=nodes)
            .map(|i| dir.join(format!("node{i}.pem")))
            .collect(),
        node_key: (1..=nodes)
            .map(|i| dir.join(format!("node{i}-key.pem")))
            .collect(),
    };
    let complete = paths.ca.exists()
        && paths.node_cert.iter().all(|p| p.exists())
        && paths.node_key.iter().all(|p| p.exists());
    if complete {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "raftkv local cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    std::fs::write(&paths.ca, ca.as_ref().pem())?;
    for i in 0..nodes as usize {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raftkv node {}", i + 1));
        let cert = params.signed_by(&key, &ca)?;
        std::fs::write(&paths.node_cert[i], cert.pem())?;
        write_private(&paths.node_key[i], key.serialize_pem().as_bytes())?;
    }
    Ok(paths)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
