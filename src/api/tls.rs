//! The HTTPS server certificate: loaded from the operator's files, or generated on first start.
//!
//! # Generated certificate
//!
//! Without `HTTPS_CERT_PATH` and `HTTPS_KEY_PATH`, the first start creates a private CA
//! ("pg-to-mysql-sync local CA", path length 0) and a server certificate signed by it, both
//! ECDSA P-256. The server certificate names `localhost`, `127.0.0.1`, `::1`, the machine's
//! host name and every extra name the caller passes. `DATA_DIR/tls/` then contains:
//!
//! - `ca.pem` (mode 0644): the CA certificate, the file clients trust;
//! - `server.pem` (mode 0644): the server certificate, then the CA certificate;
//! - `server-key.pem` (mode 0600): the server's private key.
//!
//! The CA's private key is dropped right after it signs the server certificate and never
//! written, so a copy of the data directory cannot mint certificates that clients trust.
//!
//! # Lifetime and renewal
//!
//! Both certificates are valid for [`GENERATED_VALIDITY_DAYS`] (825) days, backdated by one
//! day for clock skew. 825 days is the longest validity that iOS 13 and macOS 10.15 accept for
//! any TLS server certificate issued after 1 July 2019, private CAs included (Apple support
//! article 103769).
//!
//! Because the CA key is gone, renewal means a new CA. When the certificate has expired, the
//! next start generates a new pair, logs a warning and then the new fingerprint, and clients
//! must trust the new `ca.pem`. During the last [`RENEWAL_WARNING_DAYS`] days each start logs
//! a warning. To renew earlier, or to add a name, delete `DATA_DIR/tls` and restart.
//!
//! Later starts reuse the files. A generation writes all three files into `DATA_DIR/tls.tmp`
//! and renames that directory into place, so a crash never leaves part of a set behind.

use std::fs::{self, DirBuilder};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::keys::write_durably;

/// Lifetime of the generated CA and server certificates, in days.
pub const GENERATED_VALIDITY_DAYS: u64 = 825;

/// Days before expiry from which each start warns about the generated certificate.
pub const RENEWAL_WARNING_DAYS: u64 = 30;

/// Directory inside `DATA_DIR` that contains the generated files.
pub const TLS_DIR_NAME: &str = "tls";
/// The generated CA certificate, the one clients trust.
pub const CA_FILE_NAME: &str = "ca.pem";
/// The generated server certificate chain.
pub const CERT_FILE_NAME: &str = "server.pem";
/// The generated server private key.
pub const KEY_FILE_NAME: &str = "server-key.pem";

const CA_COMMON_NAME: &str = "pg-to-mysql-sync local CA";
const SERVER_COMMON_NAME: &str = "pg-to-mysql-sync";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Errors of loading or generating the server certificate. None contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two path settings is set.
    #[error(
        "{set_key} is set but {missing_key} is not; set both HTTPS_CERT_PATH and HTTPS_KEY_PATH to \
         use your own certificate, or neither to use a generated one"
    )]
    OnlyOnePath {
        /// The key that is set.
        set_key: &'static str,
        /// The key that is missing.
        missing_key: &'static str,
    },
    /// A configured or generated file does not exist.
    #[error("{role} file {path} not found; check the path{hint}")]
    FileMissing {
        /// Role of the file, for example "certificate".
        role: &'static str,
        /// The path.
        path: PathBuf,
        /// Suffix naming the source of the path, starting with a separator, or empty.
        hint: &'static str,
    },
    /// A file exists but cannot be read.
    #[error("failed to {action} {path}")]
    Io {
        /// Action that failed.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path} is not a valid PEM file")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// The PEM parser's error.
        #[source]
        source: pem::Error,
    },
    /// A certificate file contains no certificate.
    #[error(
        "no certificate found in {path}: it must contain PEM blocks `-----BEGIN CERTIFICATE-----`, \
         the server certificate first, then its intermediates"
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file contains no private key.
    #[error(
        "no private key found in {path}: it must contain one PEM private key (PKCS#8 \
         `-----BEGIN PRIVATE KEY-----`, PKCS#1 or SEC1)"
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error(
        "the private key in {key_path} does not match the first certificate in {cert_path}; \
         check that HTTPS_KEY_PATH and HTTPS_CERT_PATH name files of the same pair, with the \
         server certificate first"
    )]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// rustls rejects the certificate or the key for another reason.
    #[error("cannot use the certificate in {cert_path} with the key in {key_path}")]
    Unusable {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
        /// The cause from rustls.
        #[source]
        source: rustls::Error,
    },
    /// Some but not all generated files exist.
    #[error(
        "the TLS directory {dir} is incomplete ({missing} missing); delete the directory so \
         that the next start generates a new certificate, then give clients the new ca.pem"
    )]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// The missing file names, comma-separated.
        missing: String,
    },
    /// The generated certificate fails verification against `ca.pem` for a reason other than
    /// expiry, for example because an extra name was added after generation.
    #[error(
        "the generated certificate in {dir} is not valid for `{name}`; delete the directory so \
         that the next start generates a new certificate, then give clients the new ca.pem"
    )]
    GeneratedMismatch {
        /// The directory.
        dir: PathBuf,
        /// The name that failed.
        name: String,
        /// The cause from rustls.
        #[source]
        source: rustls::Error,
    },
    /// An extra certificate name is neither an IP address nor a DNS name.
    #[error(
        "invalid certificate name `{name}`: use an IP address or a DNS name such as \
         `sync.example.com`"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A certificate generated just now does not verify as valid at the current time.
    #[error(
        "the certificate generated in {dir} is not valid at the current time; check the \
         system clock"
    )]
    GeneratedExpired {
        /// The directory.
        dir: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("failed to read random bytes from the operating system")]
    Random(#[source] rand::rngs::SysError),
    /// rcgen failed to build a key or a certificate.
    #[error("failed to generate the TLS certificate")]
    Generate(#[source] rcgen::Error),
    /// The CA file given to [`client_root_certificates`] cannot be used by reqwest.
    #[error("cannot use the CA certificate in {path}")]
    ClientCertificate {
        /// The CA file.
        path: PathBuf,
        /// The cause from reqwest.
        #[source]
        source: reqwest::Error,
    },
}

/// The server's TLS setup, ready for axum-server.
#[derive(Clone)]
pub struct ServerTls {
    rustls_config: RustlsConfig,
    fingerprint: String,
    generated: bool,
    ca_path: Option<PathBuf>,
}

impl ServerTls {
    /// Returns the configuration for `axum_server::tls_rustls::bind_rustls`. ALPN offers
    /// HTTP/2 and HTTP/1.1.
    pub fn rustls_config(&self) -> RustlsConfig {
        self.rustls_config.clone()
    }

    /// SHA-256 fingerprint of the server certificate, uppercase hex pairs joined by colons,
    /// as `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint_sha256(&self) -> &str {
        &self.fingerprint
    }

    /// Returns true when the certificate was generated, now or on an earlier start.
    pub fn is_generated(&self) -> bool {
        self.generated
    }

    /// Path of the CA certificate clients should trust: `Some(DATA_DIR/tls/ca.pem)` for a
    /// generated certificate, `None` for the operator's own.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("generated", &self.generated)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// Loads the operator's certificate and key, or reuses or generates a certificate under
/// `data_dir/tls`.
///
/// `cert_path` and `key_path` are the values of `HTTPS_CERT_PATH` and `HTTPS_KEY_PATH`: both or
/// neither must be set. `extra_names` (IP addresses or DNS names) go into a generated
/// certificate next to the default names, and a reused one must already cover them.
pub fn load_or_generate(
    data_dir: &Path,
    cert_path: Option<&Path>,
    key_path: Option<&Path>,
    extra_names: &[String],
) -> Result<ServerTls, TlsError> {
    match (cert_path, key_path) {
        (Some(cert_path), Some(key_path)) => {
            let hints = (
                "; it comes from HTTPS_CERT_PATH",
                "; it comes from HTTPS_KEY_PATH",
            );
            let (chain, key) = read_pair(cert_path, key_path, hints)?;
            build_server_tls(chain, key, cert_path, key_path, None)
        }
        (Some(_), None) => Err(TlsError::OnlyOnePath {
            set_key: "HTTPS_CERT_PATH",
            missing_key: "HTTPS_KEY_PATH",
        }),
        (None, Some(_)) => Err(TlsError::OnlyOnePath {
            set_key: "HTTPS_KEY_PATH",
            missing_key: "HTTPS_CERT_PATH",
        }),
        (None, None) => load_or_generate_at(data_dir, extra_names, SystemTime::now()),
    }
}

/// Reads the CA certificates in `ca_pem_path` for a reqwest client, typically
/// `DATA_DIR/tls/ca.pem`. Pass them to `ClientBuilder::tls_certs_only` so the client trusts
/// these CAs and nothing else.
pub fn client_root_certificates(ca_pem_path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let ders = read_certificates(ca_pem_path, "CA certificate", "")?;

    ders.iter()
        .map(|der| {
            reqwest::Certificate::from_der(der).map_err(|source| TlsError::ClientCertificate {
                path: ca_pem_path.to_path_buf(),
                source,
            })
        })
        .collect()
}

/// Returns the SHA-256 fingerprint of a DER certificate as uppercase hex pairs joined by
/// colons.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// [`load_or_generate`] without paths, with the clock passed in for tests.
fn load_or_generate_at(
    data_dir: &Path,
    extra_names: &[String],
    now: SystemTime,
) -> Result<ServerTls, TlsError> {
    let mut names = vec![
        CertName::Dns("localhost".to_owned()),
        CertName::Ip(IpAddr::from([127, 0, 0, 1])),
        CertName::Ip("::1".parse().expect("::1 is an IPv6 address")),
    ];
    for name in extra_names {
        push_unique(&mut names, parse_name(name)?);
    }
    // Names that a reused certificate must cover. The host name is left out because it
    // may change after generation.
    let required_names = names.clone();
    if let Some(host_name) = host_name() {
        push_unique(&mut names, CertName::Dns(host_name));
    }

    let dir = data_dir.join(TLS_DIR_NAME);
    let files = [CA_FILE_NAME, CERT_FILE_NAME, KEY_FILE_NAME];
    let missing: Vec<&str> = files
        .into_iter()
        .filter(|file| !dir.join(file).exists())
        .collect();

    if missing.is_empty() {
        match reuse_generated(&dir, &required_names, now)? {
            Some(tls) => return Ok(tls),
            None => {
                tracing::warn!(
                    dir = %dir.display(),
                    "generated TLS certificate has expired; generating a new CA and \
                     certificate, clients must trust the new ca.pem"
                );
            }
        }
    } else if missing.len() < files.len() {
        return Err(TlsError::Incomplete {
            dir,
            missing: missing.join(", "),
        });
    }

    generate(data_dir, &names, now)?;
    let tls = reuse_generated(&dir, &required_names, now)?
        .ok_or(TlsError::GeneratedExpired { dir: dir.clone() })?;
    tracing::info!(
        ca_path = %dir.join(CA_FILE_NAME).display(),
        fingerprint = %tls.fingerprint,
        "generated TLS certificate; clients must trust ca.pem"
    );

    Ok(tls)
}

/// Loads the generated files and checks them against `ca.pem` for every required name.
/// Returns `None` when the certificate has expired.
fn reuse_generated(
    dir: &Path,
    required_names: &[CertName],
    now: SystemTime,
) -> Result<Option<ServerTls>, TlsError> {
    let cert_path = dir.join(CERT_FILE_NAME);
    let key_path = dir.join(KEY_FILE_NAME);
    let ca_path = dir.join(CA_FILE_NAME);
    let hint = "; delete the TLS directory to generate a new certificate";
    let (chain, key) = read_pair(&cert_path, &key_path, (hint, hint))?;
    let ca_chain = read_certificates(&ca_path, "CA certificate", hint)?;

    let verify_at = |time: SystemTime, name: &CertName| {
        verify_chain(&chain, &ca_chain, name, time).map_err(|source| (name.to_string(), source))
    };
    for name in required_names {
        match verify_at(now, name) {
            Ok(()) => {}
            Err((_, error)) if is_expired(&error) => return Ok(None),
            Err((name, source)) => {
                return Err(TlsError::GeneratedMismatch {
                    dir: dir.to_path_buf(),
                    name,
                    source,
                });
            }
        }
    }
    let soon = now + DAY * RENEWAL_WARNING_DAYS as u32;
    if let Err((_, error)) = verify_at(soon, &required_names[0])
        && is_expired(&error)
    {
        tracing::warn!(
            dir = %dir.display(),
            days = RENEWAL_WARNING_DAYS,
            "generated TLS certificate expires within the given days; delete the directory \
             and restart to renew it now, then give clients the new ca.pem"
        );
    }

    build_server_tls(chain, key, &cert_path, &key_path, Some(ca_path)).map(Some)
}

fn is_expired(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    )
}

/// Verifies `chain` against the roots in `ca_chain` for `name` at `time`, as a client would.
fn verify_chain(
    chain: &[CertificateDer<'static>],
    ca_chain: &[CertificateDer<'static>],
    name: &CertName,
    time: SystemTime,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for ca in ca_chain {
        roots.add(ca.clone())?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
    let server_name = match name {
        CertName::Ip(ip) => ServerName::IpAddress((*ip).into()),
        CertName::Dns(dns) => ServerName::try_from(dns.clone())
            .map_err(|error| rustls::Error::General(error.to_string()))?,
    };
    let unix_time = UnixTime::since_unix_epoch(
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    );

    verifier
        .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], unix_time)
        .map(|_| ())
}

/// Generates the CA and the server certificate into `data_dir/tls.tmp`, then renames that
/// directory to `data_dir/tls`, replacing an expired set.
fn generate(data_dir: &Path, names: &[CertName], now: SystemTime) -> Result<(), TlsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io_error("create directory", data_dir))?;
    let tmp_dir = data_dir.join(format!("{TLS_DIR_NAME}.tmp"));
    let old_dir = data_dir.join(format!("{TLS_DIR_NAME}.old"));
    let dir = data_dir.join(TLS_DIR_NAME);
    remove_dir_if_present(&tmp_dir)?;
    remove_dir_if_present(&old_dir)?;
    DirBuilder::new()
        .mode(0o755)
        .create(&tmp_dir)
        .map_err(io_error("create directory", &tmp_dir))?;

    let pair = generate_pair(names, now)?;
    let write = |name: &str, content: &str, mode: u32| {
        write_durably(&tmp_dir, &tmp_dir.join(name), content.as_bytes(), mode).map_err(
            |(action, path, source)| TlsError::Io {
                action,
                path,
                source,
            },
        )
    };
    write(KEY_FILE_NAME, &pair.server_key_pem, 0o600)?;
    write(
        CERT_FILE_NAME,
        &format!("{}{}", pair.server_pem, pair.ca_pem),
        0o644,
    )?;
    write(CA_FILE_NAME, &pair.ca_pem, 0o644)?;

    if dir.exists() {
        fs::rename(&dir, &old_dir).map_err(io_error("rename", &dir))?;
    }
    fs::rename(&tmp_dir, &dir).map_err(io_error("rename", &tmp_dir))?;
    fs::File::open(data_dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", data_dir))?;
    remove_dir_if_present(&old_dir)
}

/// PEM texts of a freshly generated CA and server certificate.
struct GeneratedPair {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn generate_pair(names: &[CertName], now: SystemTime) -> Result<GeneratedPair, TlsError> {
    generate_pair_with_rcgen(names, now, random_serial()?, random_serial()?)
        .map_err(TlsError::Generate)
}

fn generate_pair_with_rcgen(
    names: &[CertName],
    now: SystemTime,
    ca_serial: SerialNumber,
    server_serial: SerialNumber,
) -> Result<GeneratedPair, rcgen::Error> {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch - DAY;
    let not_after = not_before + DAY * GENERATED_VALIDITY_DAYS as u32;

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.serial_number = Some(ca_serial);
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    // The issuer takes ownership of the CA key, which is dropped with it at the end of this
    // function and never serialized.
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = distinguished_name(SERVER_COMMON_NAME);
    server_params.subject_alt_names = names
        .iter()
        .map(|name| match name {
            CertName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            CertName::Dns(dns) => Ok(SanType::DnsName(dns.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.serial_number = Some(server_serial);
    server_params.not_before = not_before;
    server_params.not_after = not_after;
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    Ok(GeneratedPair {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Generates a random positive 128-bit serial number. Firefox rejects a certificate whose
/// issuer name and serial match one it has seen (SEC_ERROR_REUSED_ISSUER_AND_SERIAL), and every
/// regenerated CA has the same name.
fn random_serial() -> Result<SerialNumber, TlsError> {
    use rand::TryRng;

    let mut bytes = [0u8; 16];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(TlsError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;

    Ok(SerialNumber::from_slice(&bytes))
}

/// A subject alternative name of the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertName {
    Ip(IpAddr),
    /// Lowercase DNS name.
    Dns(String),
}

impl std::fmt::Display for CertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertName::Ip(ip) => write!(f, "{ip}"),
            CertName::Dns(dns) => f.write_str(dns),
        }
    }
}

fn push_unique(names: &mut Vec<CertName>, name: CertName) {
    if !names.contains(&name) {
        names.push(name);
    }
}

fn parse_name(name: &str) -> Result<CertName, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(CertName::Ip(ip));
    }
    if is_dns_name(name) {
        return Ok(CertName::Dns(name.to_ascii_lowercase()));
    }

    Err(TlsError::InvalidName {
        name: name.escape_default().to_string(),
    })
}

/// Checks the preferred DNS name syntax: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen, at most 253 characters in all.
fn is_dns_name(name: &str) -> bool {
    let label_is_valid = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };

    (1..=253).contains(&name.len()) && name.split('.').all(label_is_valid)
}

/// Returns the machine's host name if the kernel reports a valid DNS name.
fn host_name() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim();

    if is_dns_name(name) {
        Some(name.to_ascii_lowercase())
    } else {
        tracing::debug!(
            host_name = %name.escape_default(),
            "host name is not a valid DNS name; leaving it out of the TLS certificate"
        );
        None
    }
}

/// Reads a certificate chain and its private key. `hints` are appended to a not-found error
/// for the certificate and the key file, each starting with a separator.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    (cert_hint, key_hint): (&'static str, &'static str),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certificates(cert_path, "certificate", cert_hint)?;
    let bytes = read_file(key_path, "private key", key_hint)?;
    let key = match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(TlsError::InvalidPem {
                path: key_path.to_path_buf(),
                source,
            });
        }
    };

    Ok((chain, key))
}

fn read_certificates(
    path: &Path,
    role: &'static str,
    hint: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path, role, hint)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::InvalidPem {
            path: path.to_path_buf(),
            source,
        })?;

    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }

    Ok(chain)
}

fn read_file(path: &Path, role: &'static str, hint: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::FileMissing {
            role,
            path: path.to_path_buf(),
            hint,
        },
        _ => TlsError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        },
    })
}

fn build_server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    ca_path: Option<PathBuf>,
) -> Result<ServerTls, TlsError> {
    let fingerprint = fingerprint_sha256(&chain[0]);
    let unusable = |source| TlsError::Unusable {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        source,
    };

    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert_path: cert_path.to_path_buf(),
                    key_path: key_path.to_path_buf(),
                }
            }
            other => unusable(other),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(ServerTls {
        rustls_config: RustlsConfig::from_config(Arc::new(config)),
        fingerprint,
        generated: ca_path.is_some(),
        ca_path,
    })
}

/// Returns the aws-lc-rs provider, named explicitly so that building a configuration does not
/// depend on the process-wide default having been installed.
fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn remove_dir_if_present(dir: &Path) -> Result<(), TlsError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TlsError::Io {
            action: "remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use axum::Router;
    use axum::routing::get;

    use super::*;

    fn install_crypto_provider() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn verify_generated(data_dir: &Path, name: &str) -> Result<(), rustls::Error> {
        let dir = data_dir.join(TLS_DIR_NAME);
        let chain = read_certificates(&dir.join(CERT_FILE_NAME), "certificate", "").unwrap();
        let ca = read_certificates(&dir.join(CA_FILE_NAME), "CA certificate", "").unwrap();

        verify_chain(&chain, &ca, &parse_name(name).unwrap(), SystemTime::now())
    }

    #[test]
    fn generates_ca_and_server_files() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");

        let tls = load_or_generate(&data_dir, None, None, &[]).unwrap();

        let dir = data_dir.join(TLS_DIR_NAME);
        assert!(tls.is_generated());
        assert_eq!(tls.ca_path(), Some(dir.join(CA_FILE_NAME).as_path()));
        assert_eq!(mode(&dir.join(CA_FILE_NAME)), 0o644);
        assert_eq!(mode(&dir.join(CERT_FILE_NAME)), 0o644);
        assert_eq!(mode(&dir.join(KEY_FILE_NAME)), 0o600);
        assert_eq!(mode(&data_dir), 0o700);
        let mut entries: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, [CA_FILE_NAME, KEY_FILE_NAME, CERT_FILE_NAME]);
        assert!(!data_dir.join("tls.tmp").exists());
    }

    #[test]
    fn ca_private_key_is_never_written() {
        let dir = tempfile::tempdir().unwrap();

        load_or_generate(dir.path(), None, None, &[]).unwrap();

        let tls_dir = dir.path().join(TLS_DIR_NAME);
        let ca = fs::read_to_string(tls_dir.join(CA_FILE_NAME)).unwrap();
        let chain = fs::read_to_string(tls_dir.join(CERT_FILE_NAME)).unwrap();
        let key = fs::read_to_string(tls_dir.join(KEY_FILE_NAME)).unwrap();
        assert!(!ca.contains("PRIVATE KEY"));
        assert!(!chain.contains("PRIVATE KEY"));
        assert_eq!(key.matches("BEGIN PRIVATE KEY").count(), 1);
    }

    #[test]
    fn server_pem_is_leaf_then_ca() {
        let dir = tempfile::tempdir().unwrap();

        let tls = load_or_generate(dir.path(), None, None, &[]).unwrap();

        let tls_dir = dir.path().join(TLS_DIR_NAME);
        let chain = read_certificates(&tls_dir.join(CERT_FILE_NAME), "certificate", "").unwrap();
        let ca = read_certificates(&tls_dir.join(CA_FILE_NAME), "CA certificate", "").unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca[0]);
        assert_eq!(tls.fingerprint_sha256(), fingerprint_sha256(&chain[0]));
    }

    #[test]
    fn generated_certificate_covers_default_and_extra_names() {
        let dir = tempfile::tempdir().unwrap();
        let extra = ["sync.example.internal".to_owned(), "10.1.2.3".to_owned()];

        load_or_generate(dir.path(), None, None, &extra).unwrap();

        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "sync.example.internal",
            "10.1.2.3",
        ] {
            let result = verify_generated(dir.path(), name);
            assert!(result.is_ok(), "{name}: {result:?}");
        }
        let other = verify_generated(dir.path(), "other.example.internal");
        assert!(other.is_err(), "certificate accepted an unlisted name");
    }

    #[test]
    fn generated_certificate_covers_host_name() {
        let dir = tempfile::tempdir().unwrap();
        let Some(host) = host_name() else {
            // Without a valid host name there is nothing to check; the other tests still run.
            return;
        };

        load_or_generate(dir.path(), None, None, &[]).unwrap();

        let result = verify_generated(dir.path(), &host);
        assert!(result.is_ok(), "{host}: {result:?}");
    }

    #[test]
    fn second_start_reuses_files() {
        let dir = tempfile::tempdir().unwrap();

        let first = load_or_generate(dir.path(), None, None, &[]).unwrap();
        let second = load_or_generate(dir.path(), None, None, &[]).unwrap();

        assert_eq!(first.fingerprint_sha256(), second.fingerprint_sha256());
        assert!(second.is_generated());
    }

    #[test]
    fn fingerprint_is_uppercase_colon_hex() {
        let fingerprint = fingerprint_sha256(b"certificate");

        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(fingerprint.split(':').all(|pair| {
            pair.len() == 2
                && pair
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        }));
    }

    #[test]
    fn expired_certificate_is_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let long_ago = SystemTime::now() - DAY * (GENERATED_VALIDITY_DAYS as u32 + 10);
        let old = load_or_generate_at(dir.path(), &[], long_ago).unwrap();

        let renewed = load_or_generate(dir.path(), None, None, &[]).unwrap();

        assert_ne!(old.fingerprint_sha256(), renewed.fingerprint_sha256());
        assert!(verify_generated(dir.path(), "localhost").is_ok());
        assert!(!dir.path().join("tls.old").exists());
    }

    #[test]
    fn certificate_expiring_soon_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let almost_expired = SystemTime::now() - DAY * (GENERATED_VALIDITY_DAYS as u32 - 10);
        let old = load_or_generate_at(dir.path(), &[], almost_expired).unwrap();

        let reused = load_or_generate(dir.path(), None, None, &[]).unwrap();

        assert_eq!(old.fingerprint_sha256(), reused.fingerprint_sha256());
    }

    #[test]
    fn new_extra_name_requires_regeneration() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), None, None, &[]).unwrap();

        let extra = ["sync.example.internal".to_owned()];
        let error = load_or_generate(dir.path(), None, None, &extra).unwrap_err();

        assert!(
            matches!(error, TlsError::GeneratedMismatch { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("sync.example.internal"), "{message}");
        assert!(message.contains("delete the directory"), "{message}");
    }

    #[test]
    fn partial_tls_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), None, None, &[]).unwrap();
        fs::remove_file(dir.path().join(TLS_DIR_NAME).join(KEY_FILE_NAME)).unwrap();

        let error = load_or_generate(dir.path(), None, None, &[]).unwrap_err();

        assert!(matches!(error, TlsError::Incomplete { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(KEY_FILE_NAME), "{message}");
        assert!(message.contains("delete the directory"), "{message}");
    }

    #[test]
    fn invalid_extra_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();

        for name in [
            "",
            "has space",
            "-leading.example",
            "a..b",
            "bad_char.example",
            "é.example",
        ] {
            let result = load_or_generate(dir.path(), None, None, &[name.to_owned()]);
            assert!(
                matches!(result, Err(TlsError::InvalidName { .. })),
                "{name:?} gave {result:?}"
            );
        }
        assert!(!dir.path().join(TLS_DIR_NAME).exists());
    }

    #[test]
    fn provided_pair_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let generated = load_or_generate(dir.path(), None, None, &[]).unwrap();
        let tls_dir = dir.path().join(TLS_DIR_NAME);

        let provided = load_or_generate(
            dir.path(),
            Some(&tls_dir.join(CERT_FILE_NAME)),
            Some(&tls_dir.join(KEY_FILE_NAME)),
            &[],
        )
        .unwrap();

        assert!(!provided.is_generated());
        assert_eq!(provided.ca_path(), None);
        assert_eq!(
            provided.fingerprint_sha256(),
            generated.fingerprint_sha256()
        );
    }

    #[test]
    fn one_path_without_other_names_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pem");

        let errors = [
            load_or_generate(dir.path(), Some(&path), None, &[]).unwrap_err(),
            load_or_generate(dir.path(), None, Some(&path), &[]).unwrap_err(),
        ];

        for error in errors {
            let message = error.to_string();
            assert!(message.contains("HTTPS_CERT_PATH"), "{message}");
            assert!(message.contains("HTTPS_KEY_PATH"), "{message}");
        }
    }

    #[test]
    fn provided_file_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), None, None, &[]).unwrap();
        load_or_generate(other.path(), None, None, &[]).unwrap();
        let tls_dir = dir.path().join(TLS_DIR_NAME);
        let cert = tls_dir.join(CERT_FILE_NAME);
        let key = tls_dir.join(KEY_FILE_NAME);
        let other_key = other.path().join(TLS_DIR_NAME).join(KEY_FILE_NAME);
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let broken = dir.path().join("broken.pem");
        fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();

        let load = |cert: &Path, key: &Path| {
            load_or_generate(dir.path(), Some(cert), Some(key), &[]).unwrap_err()
        };

        let error = load(&missing, &key);
        assert!(matches!(error, TlsError::FileMissing { .. }), "{error:?}");
        assert!(error.to_string().contains("HTTPS_CERT_PATH"), "{error}");
        let error = load(&cert, &missing);
        assert!(matches!(error, TlsError::FileMissing { .. }), "{error:?}");
        assert!(error.to_string().contains("HTTPS_KEY_PATH"), "{error}");
        let error = load(&empty, &key);
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");
        let error = load(&cert, &cert);
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
        let error = load(&broken, &key);
        assert!(matches!(error, TlsError::InvalidPem { .. }), "{error:?}");
        let error = load(&cert, &other_key);
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn client_roots_reject_file_without_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, "no pem here").unwrap();

        let result = client_root_certificates(&path);

        assert!(
            matches!(result, Err(TlsError::NoCertificate { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn https_works_with_generated_ca_only() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let tls = load_or_generate(dir.path(), None, None, &[]).unwrap();
        let other_tls = load_or_generate(other_dir.path(), None, None, &[]).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let server = axum_server::from_tcp_rustls(listener, tls.rustls_config())
            .unwrap()
            .handle(handle.clone())
            .serve(app.into_make_service());
        let server = tokio::spawn(server);

        let client_with = |ca_path: &Path| {
            reqwest::Client::builder()
                .tls_certs_only(client_root_certificates(ca_path).unwrap())
                .resolve("localhost", address)
                .no_proxy()
                .build()
                .unwrap()
        };
        let trusting = client_with(tls.ca_path().unwrap());
        let port = address.port();
        for url in [
            format!("https://localhost:{port}/"),
            format!("https://127.0.0.1:{port}/"),
        ] {
            let response = trusting.get(&url).send().await;
            let body = response.unwrap().text().await.unwrap();
            assert_eq!(body, "ok", "{url}");
        }

        let other_ca = client_with(other_tls.ca_path().unwrap());
        let result = other_ca
            .get(format!("https://localhost:{port}/"))
            .send()
            .await;
        assert!(result.is_err(), "client trusting another CA connected");

        let default_roots = reqwest::Client::builder()
            .resolve("localhost", address)
            .no_proxy()
            .build()
            .unwrap();
        let result = default_roots
            .get(format!("https://localhost:{port}/"))
            .send()
            .await;
        assert!(result.is_err(), "client without the CA connected");

        handle.shutdown();
        server.await.unwrap().unwrap();
    }
}
