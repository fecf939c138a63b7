//! TLS for the edge proxy's HTTPS listener.
//!
//! The API and every box URL (`NAME.DOMAIN`, `NAME--ORG.DOMAIN`) share one
//! listener, so the certificate is chosen per handshake from the SNI name.
//! Certificates either come from files the operator provides, or from a
//! small CA bothy makes once and keeps under its data directory, which then
//! issues a leaf for each served name the first time a client asks for it.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration as StdDuration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::{CryptoProvider, KeyProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

/// Protocols offered to clients, best first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Issued leaves kept in memory. Every served name costs one entry, so the
/// bound only matters against a client cycling through box names; dropping
/// the whole cache then is simpler than LRU and just costs re-issuing.
const LEAF_CACHE_MAX: usize = 4096;

/// Certificates start a day early so a client with a slow clock accepts them.
const BACKDATE: Duration = Duration::days(1);
const CA_LIFETIME: Duration = Duration::days(3652);
/// Browsers reject leaves valid for more than 398 days.
const LEAF_LIFETIME: Duration = Duration::days(397);
/// A long-running daemon replaces a cached leaf well before it expires.
const LEAF_RENEW_AFTER: StdDuration = StdDuration::from_secs(300 * 24 * 60 * 60);

/// Where the edge's certificates come from.
pub enum TlsSource {
    /// Certificate chain + key files, in pairs, first match by SNI wins.
    Provided(Vec<(PathBuf, PathBuf)>),
    /// bothy's own CA under this directory (made on first use).
    LocalCa(PathBuf),
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("no certificate given: pass --tls-cert and --tls-key in pairs")]
    NoCertificateGiven,
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("certificate {} cannot be used: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no private key in {}", path.display())]
    NoKey { path: PathBuf },
    #[error(
        "key {} cannot be used: {reason} (PKCS#8, PKCS#1 RSA or SEC1 EC keys are accepted)",
        path.display()
    )]
    BadKey { path: PathBuf, reason: String },
    #[error("key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error(
        "{} is missing from the local CA in {}; remove that directory to make a new CA",
        missing.display(),
        dir.display()
    )]
    CaIncomplete { dir: PathBuf, missing: PathBuf },
    #[error(
        "the local CA in {} cannot be used ({reason}); remove that directory to make a new CA \
         (clients will then need to trust the new {CA_CERT_FILE})",
        dir.display()
    )]
    CaInvalid { dir: PathBuf, reason: String },
    #[error("{name:?} is not a valid host name for a certificate")]
    BadName { name: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls configuration for the HTTPS listener. `domain` is the box
/// domain (`--domain`), `api_names` extra host names the API answers to,
/// `ips` addresses put in the default certificate.
pub fn server_config(
    source: &TlsSource,
    domain: &str,
    api_names: &[String],
    ips: &[IpAddr],
) -> Result<Arc<ServerConfig>, TlsError> {
    // An explicit provider: nothing here depends on which provider, if any,
    // the rest of the process installed as its default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver: Arc<dyn ResolvesServerCert> = match source {
        TlsSource::Provided(pairs) => Arc::new(ProvidedCerts::load(pairs, &provider)?),
        TlsSource::LocalCa(dir) => Arc::new(LocalCa::open(dir, domain, api_names, ips, &provider)?),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The CA certificate's path for `dir` (what `curl --cacert` needs), for messages and docs.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join(CA_CERT_FILE)
}

/// Lower case without a trailing dot: the form names are compared in.
fn normalise_host(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// Provided certificates
// ---------------------------------------------------------------------------

/// The operator's certificates, in the order given.
#[derive(Debug)]
struct ProvidedCerts {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ProvidedCerts {
    fn load(pairs: &[(PathBuf, PathBuf)], provider: &CryptoProvider) -> Result<Self, TlsError> {
        if pairs.is_empty() {
            return Err(TlsError::NoCertificateGiven);
        }
        let certs = pairs
            .iter()
            .map(|(cert, key)| load_pair(cert, key, provider.key_provider))
            .collect::<Result<_, _>>()?;
        Ok(Self { certs })
    }

    /// The first certificate valid for `sni`, else the first one: a client
    /// that sent no or an unknown name still gets a certificate, and its own
    /// verification decides.
    fn pick(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let name = sni.and_then(|sni| ServerName::try_from(normalise_host(sni)).ok());
        name.and_then(|name| self.certs.iter().find(|ck| covers(ck, &name)))
            .or_else(|| self.certs.first())
    }
}

impl ResolvesServerCert for ProvidedCerts {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name()).cloned()
    }
}

/// Whether the end-entity certificate of `ck` names `name` (wildcards included).
fn covers(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
    ck.cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    key_provider: &dyn KeyProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert_path)?;
    // Parsed here so a broken certificate fails at start rather than by
    // silently never matching an SNI name.
    if let Some(end_entity) = chain.first() {
        webpki::EndEntityCert::try_from(end_entity).map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let key = key_provider
        .load_private_key(read_key(key_path)?)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public half; the
        // handshake will show whether it fits.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })
        }
    }
    Ok(Arc::new(certified))
}

/// All certificates in a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        pem::Error::NoItemsFound => TlsError::NoCertificate {
            path: path.to_owned(),
        },
        e => TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        },
    }
}

// ---------------------------------------------------------------------------
// Local CA
// ---------------------------------------------------------------------------

/// A leaf certificate and when to replace it.
struct Leaf {
    key: Arc<CertifiedKey>,
    renew_after: SystemTime,
}

impl Leaf {
    fn is_fresh(&self) -> bool {
        SystemTime::now() < self.renew_after
    }
}

/// Issues leaves for the names bothy serves, signed by its local CA.
struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    ca_cert: CertificateDer<'static>,
    key_provider: &'static dyn KeyProvider,
    domain: String,
    api_names: Vec<String>,
    /// SANs of the certificate for clients that send no SNI.
    default_sans: Vec<SanType>,
    default: Mutex<Leaf>,
    leaves: Mutex<HashMap<String, Leaf>>,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The leaves are omitted: thousands of entries say nothing useful.
        f.debug_struct("LocalCa")
            .field("issuer", &self.issuer)
            .field("domain", &self.domain)
            .field("api_names", &self.api_names)
            .field("default_sans", &self.default_sans)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    fn open(
        dir: &Path,
        domain: &str,
        api_names: &[String],
        ips: &[IpAddr],
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let domain = normalise_host(domain);
        let mut default_sans = vec![san_for(&domain)?];
        let mut names = Vec::new();
        for name in api_names.iter().map(|n| normalise_host(n)) {
            if name != domain && !names.contains(&name) {
                default_sans.push(san_for(&name)?);
                names.push(name);
            }
        }
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        for ip in loopback.iter().chain(ips) {
            let san = SanType::IpAddress(*ip);
            if !default_sans.contains(&san) {
                default_sans.push(san);
            }
        }

        let (ca_cert, issuer) = load_or_make_ca(dir, provider.key_provider)?;
        let default = issue_leaf(&issuer, &ca_cert, provider.key_provider, &default_sans)?;
        // Catches a CA that has expired or cannot sign verifiable leaves
        // before clients see confusing handshake failures.
        check_chain(&default.key, &ca_cert, provider).map_err(|reason| TlsError::CaInvalid {
            dir: dir.to_owned(),
            reason,
        })?;
        Ok(Self {
            issuer,
            ca_cert,
            key_provider: provider.key_provider,
            domain,
            api_names: names,
            default_sans,
            default: Mutex::new(default),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `name` (normalised) is one bothy answers to: only these get a
    /// certificate of their own, so a client cannot make the CA sign
    /// arbitrary names.
    fn serves(&self, name: &str) -> bool {
        if name == self.domain || self.api_names.iter().any(|n| n == name) {
            return true;
        }
        name.strip_suffix(self.domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(is_box_label)
    }

    fn default_cert(&self) -> Arc<CertifiedKey> {
        let mut default = self.default.lock().unwrap_or_else(PoisonError::into_inner);
        if !default.is_fresh() {
            match self.issue(&self.default_sans) {
                Ok(leaf) => *default = leaf,
                Err(e) => tracing::warn!(error = %e, "cannot renew the default TLS certificate"),
            }
        }
        default.key.clone()
    }

    /// The leaf for `name`, issuing it on first use; `None` for names
    /// bothy does not serve.
    fn leaf_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if !self.serves(name) {
            return None;
        }
        if let Some(leaf) = self.lock_leaves().get(name).filter(|l| l.is_fresh()) {
            return Some(leaf.key.clone());
        }
        // Issued without the lock so one handshake does not stall the rest;
        // two racing handshakes for the same new name just issue twice.
        let san = match san_for(name) {
            Ok(san) => san,
            Err(e) => {
                tracing::debug!(error = %e, "no certificate for SNI name");
                return None;
            }
        };
        let leaf = match self.issue(&[san]) {
            Ok(leaf) => leaf,
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot issue a TLS certificate");
                return None;
            }
        };
        let key = leaf.key.clone();
        let mut leaves = self.lock_leaves();
        if leaves.len() >= LEAF_CACHE_MAX {
            leaves.clear();
        }
        leaves.insert(name.to_owned(), leaf);
        Some(key)
    }

    fn lock_leaves(&self) -> std::sync::MutexGuard<'_, HashMap<String, Leaf>> {
        // A panic elsewhere cannot leave the cache inconsistent: every entry
        // is a complete certificate.
        self.leaves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(&self, sans: &[SanType]) -> Result<Leaf, TlsError> {
        issue_leaf(&self.issuer, &self.ca_cert, self.key_provider, sans)
    }
}

impl ResolvesServerCert for LocalCa {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        client_hello
            .server_name()
            .and_then(|sni| self.leaf_for(&normalise_host(sni)))
            .or_else(|| Some(self.default_cert()))
    }
}

/// One DNS label of a box URL: `NAME` or `NAME--ORG`.
fn is_box_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The SAN for a host name or address, refusing anything a client could not
/// verify against.
fn san_for(name: &str) -> Result<SanType, TlsError> {
    let bad = || TlsError::BadName {
        name: name.to_owned(),
    };
    match ServerName::try_from(name).map_err(|_| bad())? {
        ServerName::IpAddress(ip) => Ok(SanType::IpAddress(IpAddr::from(ip))),
        ServerName::DnsName(_) => Ok(SanType::DnsName(name.try_into().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}

fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    ca_cert: &CertificateDer<'static>,
    key_provider: &dyn KeyProvider,
    sans: &[SanType],
) -> Result<Leaf, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    // The name lives in the SAN only (which rcgen then marks critical): a
    // subject CN is limited to 64 characters, box host names are not.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans.to_vec();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = OffsetDateTime::now_utc() - BACKDATE;
    params.not_after = params.not_before + LEAF_LIFETIME;
    let cert = params.signed_by(&key, issuer)?;
    let signing_key = key_provider.load_private_key(PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    ))?;
    Ok(Leaf {
        key: Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), ca_cert.clone()],
            signing_key,
        )),
        renew_after: SystemTime::now() + LEAF_RENEW_AFTER,
    })
}

/// Verifies `leaf` against `ca_cert` as a client would, for its first SAN.
fn check_chain(
    leaf: &CertifiedKey,
    ca_cert: &CertificateDer<'_>,
    provider: &CryptoProvider,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca_cert).map_err(|e| e.to_string())?;
    let end_entity = leaf.end_entity_cert().map_err(|e| e.to_string())?;
    webpki::EndEntityCert::try_from(end_entity)
        .and_then(|ee| {
            ee.verify_for_usage(
                provider.signature_verification_algorithms.all,
                &[anchor],
                &[],
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map(|_| ())
        })
        .map_err(|e| format!("a certificate it issued does not verify: {e}"))
}

/// The CA's parameters. Only the subject, key usages and key identifier
/// method matter when reloading it as an issuer; they must be exactly what
/// the certificate holds so leaves chain to it.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - BACKDATE;
    params.not_after = params.not_before + CA_LIFETIME;
    params
}

fn load_or_make_ca(
    dir: &Path,
    key_provider: &dyn KeyProvider,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), TlsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let exists = |path: &Path| {
        path.try_exists().map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => load_ca(dir, &cert_path, &key_path, key_provider),
        (false, false) => make_ca(dir, &cert_path, &key_path),
        (true, false) => Err(TlsError::CaIncomplete {
            dir: dir.to_owned(),
            missing: key_path,
        }),
        (false, true) => Err(TlsError::CaIncomplete {
            dir: dir.to_owned(),
            missing: cert_path,
        }),
    }
}

fn load_ca(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    key_provider: &dyn KeyProvider,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), TlsError> {
    // Unreadable files keep their I/O error (a permission problem is not
    // fixed by a new CA); anything else means the files are not a CA bothy
    // made, and the fix is a new one.
    let invalid = |e: TlsError| match e {
        e @ TlsError::Read { .. } => e,
        e => TlsError::CaInvalid {
            dir: dir.to_owned(),
            reason: e.to_string(),
        },
    };
    let mut certs = read_certs(cert_path).map_err(invalid)?;
    if certs.len() != 1 {
        return Err(invalid(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: format!("expected one certificate, found {}", certs.len()),
        }));
    }
    let cert = certs.remove(0);
    let key_der = read_key(key_path).map_err(invalid)?;

    let key = KeyPair::try_from(&key_der).map_err(|e| {
        invalid(TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })
    })?;
    let signing_key = key_provider.load_private_key(key_der).map_err(|e| {
        invalid(TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })
    })?;
    if CertifiedKey::new(vec![cert.clone()], signing_key)
        .keys_match()
        .is_err()
    {
        return Err(invalid(TlsError::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert_path.to_owned(),
        }));
    }

    // The CA's own certificate is read back rather than rebuilt from the
    // host name, so a renamed machine still issues leaves that chain to it.
    let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| TlsError::CaInvalid {
        dir: dir.to_owned(),
        reason: format!("{}: {e}", cert_path.display()),
    })?;
    warn_if_exposed(key_path);
    Ok((cert, issuer))
}

fn make_ca(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), TlsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(&format!("bothy local CA ({})", host_name()));
    let cert = params.self_signed(&key)?;

    // Key first: a crash in between leaves a key without a certificate,
    // which is reported, never a certificate whose key is lost.
    write_atomically(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(cert_path, cert.pem().as_bytes(), 0o644)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
    tracing::info!(
        ca = %cert_path.display(),
        "made a local TLS certificate authority; clients must trust it to reach boxes over HTTPS",
    );
    Ok((cert.der().clone(), Issuer::new(params, key)))
}

/// Replaces `path` with `contents` so readers see the old file or the whole
/// new one, never part of it, and the data has reached the disk.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .expect("CA file paths are built by joining a file name");
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);

    // Left over from an interrupted run, and in the way of create_new.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    let result = (|| {
        // The mode is set at creation so the key is never readable by
        // others, even briefly.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; ca.pem must be readable.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

fn warn_if_exposed(key_path: &Path) {
    if let Ok(meta) = fs::metadata(key_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                key = %key_path.display(),
                "the local CA key is readable by other users; chmod 600 it",
            );
        }
    }
}

/// For the CA's name, so a user trusting several bothy CAs can tell them apart.
fn host_name() -> String {
    fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bothy".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tempfile::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Verifies like a normal client but remembers the certificate the
    /// server sent, so tests can see it even when verification fails.
    #[derive(Debug)]
    struct Recording {
        inner: Arc<WebPkiServerVerifier>,
        seen: Mutex<Option<CertificateDer<'static>>>,
    }

    impl ServerCertVerifier for Recording {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    struct Outcome {
        /// The end-entity certificate the server sent.
        served: CertificateDer<'static>,
        /// Whether the client accepted it and the connection works.
        result: Result<Option<Vec<u8>>, io::Error>,
    }

    /// A full handshake over an in-memory pipe, connecting to `name` and
    /// trusting only `root`; then a byte each way to prove the session works.
    async fn handshake(
        server: Arc<ServerConfig>,
        root: &CertificateDer<'_>,
        name: &str,
    ) -> Outcome {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = RootCertStore::empty();
        store.add(root.clone().into_owned()).unwrap();
        let verifier = Arc::new(Recording {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .unwrap(),
            seen: Mutex::new(None),
        });
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server_task = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            tls.write_all(&byte).await?;
            tls.flush().await?;
            io::Result::Ok(())
        });
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let result = async {
            let mut tls = TlsConnector::from(Arc::new(client))
                .connect(server_name, client_io)
                .await?;
            tls.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            assert_eq!(&byte, b"x");
            io::Result::Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        }
        .await;
        let server_result = server_task.await.unwrap();
        if result.is_ok() {
            server_result.unwrap();
        }
        let served = verifier
            .seen
            .lock()
            .unwrap()
            .take()
            .expect("server sent a certificate");
        Outcome { served, result }
    }

    fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
        webpki::EndEntityCert::try_from(cert)
            .unwrap()
            .valid_dns_names()
            .map(str::to_owned)
            .collect()
    }

    fn read_ca(dir: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(ca_path(dir)).unwrap()
    }

    fn local(dir: &Path) -> Arc<ServerConfig> {
        server_config(
            &TlsSource::LocalCa(dir.to_owned()),
            "localhost",
            &["api.bothy.test".to_owned()],
            &[],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn box_name_gets_its_own_leaf_from_the_local_ca() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("tls");
        let config = local(&dir);
        let ca = read_ca(&dir);

        let outcome = handshake(config.clone(), &ca, "dev.localhost").await;
        assert_eq!(outcome.result.unwrap().as_deref(), Some(&b"h2"[..]));
        assert_eq!(dns_names(&outcome.served), ["dev.localhost"]);

        // Other organisations' boxes, upper case, and the extra API name.
        let outcome = handshake(config.clone(), &ca, "dev--acme.localhost").await;
        assert_eq!(dns_names(&outcome.served), ["dev--acme.localhost"]);
        outcome.result.unwrap();
        let outcome = handshake(config.clone(), &ca, "API.bothy.test").await;
        assert_eq!(dns_names(&outcome.served), ["api.bothy.test"]);
        outcome.result.unwrap();

        // No SNI (connecting to an address): the default certificate.
        let outcome = handshake(config, &ca, "127.0.0.1").await;
        outcome.result.unwrap();
        assert_eq!(dns_names(&outcome.served), ["localhost", "api.bothy.test"]);
    }

    #[tokio::test]
    async fn local_ca_is_made_once_and_reused() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("tls");
        let first = local(&dir);
        let ca_pem = fs::read(ca_path(&dir)).unwrap();
        let key_pem = fs::read(dir.join(CA_KEY_FILE)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&ca_path(&dir)), 0o644);

        let second = local(&dir);
        assert_eq!(fs::read(ca_path(&dir)).unwrap(), ca_pem);
        assert_eq!(fs::read(dir.join(CA_KEY_FILE)).unwrap(), key_pem);

        // Leaves from the reloaded CA chain to the original certificate.
        let ca = CertificateDer::from_pem_slice(&ca_pem).unwrap();
        for config in [first, second] {
            handshake(config, &ca, "dev.localhost")
                .await
                .result
                .unwrap();
        }
    }

    #[tokio::test]
    async fn names_outside_the_domain_get_no_certificate() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("tls");
        let config = local(&dir);
        let ca = read_ca(&dir);
        for name in ["evil.example", "a.b.localhost", "localhost.evil.example"] {
            let outcome = handshake(config.clone(), &ca, name).await;
            assert!(outcome.result.is_err(), "{name} verified");
            assert_eq!(dns_names(&outcome.served), ["localhost", "api.bothy.test"]);
        }
    }

    #[test]
    fn served_names() {
        let tmp = TempDir::new().unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let ca = LocalCa::open(
            &tmp.path().join("tls"),
            "Example.COM.",
            &["api.other.test".to_owned()],
            &["192.0.2.1".parse().unwrap()],
            &provider,
        )
        .unwrap();
        let serves = |sni: &str| ca.serves(&normalise_host(sni));
        assert!(serves("example.com"));
        assert!(serves("EXAMPLE.com."));
        assert!(serves("box.example.com"));
        assert!(serves("box--org.example.com"));
        assert!(serves(&format!("{}.example.com", "a".repeat(63))));
        assert!(serves("api.other.test"));
        assert!(!serves(&format!("{}.example.com", "a".repeat(64))));
        assert!(!serves("a.b.example.com"));
        assert!(!serves("xexample.com"));
        assert!(!serves(".example.com"));
        assert!(!serves("a_b.example.com"));
        assert!(!serves("other.test"));
        assert!(ca
            .default_sans
            .contains(&SanType::IpAddress("192.0.2.1".parse().unwrap())));
        assert!(ca
            .default_sans
            .contains(&SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST))));
    }

    /// A test CA and a leaf it signs for `name`, written as PEM files.
    struct TestPki {
        ca: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestPki {
        fn new() -> Self {
            let key = KeyPair::generate().unwrap();
            let params = ca_params("test CA");
            let ca = params.self_signed(&key).unwrap().der().clone();
            Self {
                ca,
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let file = name.replace('*', "star");
            let cert_path = dir.join(format!("{file}.pem"));
            let key_path = dir.join(format!("{file}-key.pem"));
            fs::write(&cert_path, cert.pem()).unwrap();
            fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        }
    }

    #[tokio::test]
    async fn provided_certificates_are_chosen_by_sni() {
        let tmp = TempDir::new().unwrap();
        let pki = TestPki::new();
        let wildcard = pki.leaf(tmp.path(), "*.example.test");
        let single = pki.leaf(tmp.path(), "b.example.test");
        let provided = |pairs: Vec<(PathBuf, PathBuf)>| {
            server_config(&TlsSource::Provided(pairs), "example.test", &[], &[]).unwrap()
        };

        let config = provided(vec![single.clone(), wildcard.clone()]);
        let outcome = handshake(config.clone(), &pki.ca, "a.example.test").await;
        assert_eq!(outcome.result.unwrap().as_deref(), Some(&b"h2"[..]));
        assert_eq!(dns_names(&outcome.served), ["*.example.test"]);
        let outcome = handshake(config, &pki.ca, "b.example.test").await;
        outcome.result.unwrap();
        assert_eq!(dns_names(&outcome.served), ["b.example.test"]);

        // First match wins: listed first, the wildcard covers b too.
        let config = provided(vec![wildcard, single]);
        let outcome = handshake(config.clone(), &pki.ca, "b.example.test").await;
        outcome.result.unwrap();
        assert_eq!(dns_names(&outcome.served), ["*.example.test"]);

        // Nothing matches: the first certificate, which the client rejects.
        let outcome = handshake(config, &pki.ca, "elsewhere.test").await;
        assert!(outcome.result.is_err());
        assert_eq!(dns_names(&outcome.served), ["*.example.test"]);
    }

    #[test]
    fn bad_provided_files_are_named() {
        let tmp = TempDir::new().unwrap();
        let pki = TestPki::new();
        let (cert, key) = pki.leaf(tmp.path(), "a.example.test");
        let (_, other_key) = pki.leaf(tmp.path(), "b.example.test");
        let garbage = tmp.path().join("garbage.pem");
        fs::write(&garbage, "not a key\n").unwrap();
        let missing = tmp.path().join("missing.pem");
        let config = |cert: &Path, key: &Path| {
            let pairs = vec![(cert.to_owned(), key.to_owned())];
            server_config(&TlsSource::Provided(pairs), "example.test", &[], &[])
                .unwrap_err()
                .to_string()
        };

        let err = config(&cert, &other_key);
        assert!(err.contains(&other_key.display().to_string()), "{err}");
        assert!(err.contains("does not match"), "{err}");
        let err = config(&cert, &garbage);
        assert_eq!(err, format!("no private key in {}", garbage.display()));
        let err = config(&garbage, &key);
        assert_eq!(err, format!("no certificate in {}", garbage.display()));
        // A key file given as the certificate has no certificate in it.
        let err = config(&key, &key);
        assert_eq!(err, format!("no certificate in {}", key.display()));
        let pairs = vec![(missing.clone(), key)];
        let err = server_config(&TlsSource::Provided(pairs), "example.test", &[], &[]).unwrap_err();
        match &err {
            TlsError::Read { path, source } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(matches!(
            server_config(&TlsSource::Provided(vec![]), "example.test", &[], &[]),
            Err(TlsError::NoCertificateGiven)
        ));
    }

    #[test]
    fn half_a_local_ca_is_an_error() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("tls");
        local(&dir);
        let key = fs::read(dir.join(CA_KEY_FILE)).unwrap();
        fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
        let source = TlsSource::LocalCa(dir.clone());
        let err = server_config(&source, "localhost", &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::CaIncomplete { .. }), "{err:?}");
        assert!(err.to_string().contains("remove that directory"), "{err}");

        fs::write(dir.join(CA_KEY_FILE), key).unwrap();
        fs::remove_file(ca_path(&dir)).unwrap();
        let err = server_config(&source, "localhost", &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::CaIncomplete { .. }), "{err:?}");

        // Both present but not a CA.
        fs::write(ca_path(&dir), "junk\n").unwrap();
        let err = server_config(&source, "localhost", &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::CaInvalid { .. }), "{err:?}");
        assert!(err.to_string().contains("remove that directory"), "{err}");
    }
}
