//! API keys: creation, listing and revocation on disk, and verification in the server.
//!
//! # Key format
//!
//! A key is `p2ms_` followed by 32 bytes from the operating system's CSPRNG, encoded as
//! base64url without padding (43 characters). The plaintext is shown once, when the key is
//! created, and never stored.
//!
//! # On-disk format
//!
//! `DATA_DIR/api-keys.json` contains only SHA-256 digests:
//!
//! ```json
//! {"format":"pg-to-mysql-sync-api-keys","version":1,"keys":[
//!   {"id":"3f9a0c12","name":"ci","sha256":"<64 lowercase hex digits>",
//!    "created_at":"2025-01-31T12:00:00Z"}]}
//! ```
//!
//! A missing file means no keys. A file that cannot be parsed is an error, never an empty list.
//! Every change rewrites the whole file durably (temporary file with mode 0600, fsync, rename,
//! fsync of the directory), so after a crash the file contains either the old or the new list.
//! Writers take an exclusive lock on `DATA_DIR/api-keys.lock` around read-modify-write, so two
//! concurrent `keys create` commands cannot drop each other's key.
//!
//! # Verification
//!
//! [`KeyRing`] contains the digests for the running server and re-reads the file when it changes,
//! so keys created or revoked from the CLI take effect without a restart.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::TryRng;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// File name of the key store inside `DATA_DIR`.
pub const KEY_FILE_NAME: &str = "api-keys.json";

/// Prefix of every generated key. It lets secret scanners and operators recognise a key.
pub const KEY_PREFIX: &str = "p2ms_";

/// Id of the key taken from `API_KEY` in `.env` or the environment.
pub const ENV_KEY_ID: &str = "env";

/// Minimum length of `API_KEY`, in characters. 32 random characters from base64 carry about
/// 190 bits, far beyond guessing through a rate-limited API.
pub const MIN_ENV_KEY_CHARS: usize = 32;

/// Maximum length of a key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

const LOCK_FILE_NAME: &str = "api-keys.lock";
const FORMAT_NAME: &str = "pg-to-mysql-sync-api-keys";
const FORMAT_VERSION: u32 = 1;
const KEY_RANDOM_BYTES: usize = 32;
const ID_RANDOM_BYTES: usize = 4;

/// Errors of the key store. None of them contains a key or a digest.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file operation on the key store failed. Unless the failed action is the final
    /// `fsync directory`, the key file is unchanged.
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
    /// The key file is not valid JSON of the expected shape.
    #[error(
        "cannot parse the API key file {path}; restore it from a backup, or move it away and \
         create new keys with `pg-to-mysql-sync keys create`"
    )]
    Parse {
        /// The key file.
        path: PathBuf,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The key file parses but breaks a rule (format name, version, digest, id or date).
    #[error(
        "the API key file {path} is invalid: {reason}; restore it from a backup, or move it \
         away and create new keys with `pg-to-mysql-sync keys create`"
    )]
    InvalidFile {
        /// The key file.
        path: PathBuf,
        /// Description of the problem, without key material.
        reason: String,
    },
    /// A key name given to [`create_key`] is not acceptable.
    #[error("invalid API key name: {reason}")]
    InvalidName {
        /// Description of the problem and of the allowed names.
        reason: String,
    },
    /// [`revoke_key`] got an id that is not in the key file.
    #[error("API key `{id}` not found in {path}; list the keys with `pg-to-mysql-sync keys list`")]
    NotFound {
        /// The requested id.
        id: String,
        /// The key file.
        path: PathBuf,
    },
    /// [`revoke_key`] got the id of the key that comes from `API_KEY`.
    #[error(
        "API key `env` comes from API_KEY in .env or the environment; remove API_KEY there \
         and restart the daemon to revoke it"
    )]
    EnvKeyNotRevocable,
    /// `API_KEY` is set but too short to resist guessing.
    #[error(
        "API_KEY is too short: it needs at least {MIN_ENV_KEY_CHARS} characters; generate one \
         with `openssl rand -base64 32`, or remove API_KEY and use `pg-to-mysql-sync keys create`"
    )]
    EnvKeyTooShort,
    /// The operating system's random number generator failed.
    #[error("failed to read random bytes from the operating system")]
    Random(#[source] rand::rngs::SysError),
}

/// Public description of a stored key. It never contains the key or its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Short random id (8 hex digits), unique in the key file. The JWT `sub` claim names it.
    pub id: String,
    /// Name chosen by the operator, for example the client that uses the key.
    pub name: String,
    /// Creation time, UTC. Serialized as RFC 3339 with a `Z` suffix.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub created_at: DateTime<Utc>,
}

fn serialize_rfc3339<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The key file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    name: String,
    /// SHA-256 of the plaintext key, 64 lowercase hex digits.
    sha256: String,
    /// RFC 3339, UTC.
    created_at: String,
}

/// A stored key after validation.
struct LoadedKey {
    info: KeyInfo,
    digest: [u8; 32],
}

/// Creates a key named `name`, stores its digest and returns its description and the
/// plaintext key. The plaintext exists nowhere else: show it once and drop it.
///
/// Creates `data_dir` with mode 0700 if it is missing.
pub fn create_key(data_dir: &Path, name: &str) -> Result<(KeyInfo, String), KeyError> {
    validate_name(name)?;
    ensure_data_dir(data_dir)?;
    let _lock = lock_key_file(data_dir)?;
    let path = key_file_path(data_dir);
    let mut keys = read_key_file(&path)?;

    let id = loop {
        let candidate = hex::encode(random_bytes::<ID_RANDOM_BYTES>()?);
        if !keys.iter().any(|key| key.info.id == candidate) {
            break candidate;
        }
    };
    let plaintext = format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<KEY_RANDOM_BYTES>()?)
    );
    let info = KeyInfo {
        id,
        name: name.to_owned(),
        created_at: now_seconds(),
    };
    keys.push(LoadedKey {
        info: info.clone(),
        digest: digest(&plaintext),
    });
    write_key_file(data_dir, &path, &keys)?;

    Ok((info, plaintext))
}

/// Lists the stored keys in creation order. A missing key file means no keys.
pub fn list_keys(data_dir: &Path) -> Result<Vec<KeyInfo>, KeyError> {
    let keys = read_key_file(&key_file_path(data_dir))?;

    Ok(keys.into_iter().map(|key| key.info).collect())
}

/// Removes the key with id `id` from the key file and returns its description. A running
/// daemon stops accepting the key at its next request.
pub fn revoke_key(data_dir: &Path, id: &str) -> Result<KeyInfo, KeyError> {
    if id == ENV_KEY_ID {
        return Err(KeyError::EnvKeyNotRevocable);
    }
    let path = key_file_path(data_dir);
    if !data_dir.is_dir() {
        return Err(KeyError::NotFound {
            id: id.to_owned(),
            path,
        });
    }

    let _lock = lock_key_file(data_dir)?;
    let mut keys = read_key_file(&path)?;
    let Some(position) = keys.iter().position(|key| key.info.id == id) else {
        return Err(KeyError::NotFound {
            id: id.to_owned(),
            path,
        });
    };
    let removed = keys.remove(position);
    write_key_file(data_dir, &path, &keys)?;

    Ok(removed.info)
}

/// The keys the running server accepts: the key file's digests plus the digest of `API_KEY`.
///
/// [`KeyRing::verify`] re-reads the key file when its inode, length or modification time
/// changed since the last read. If that read fails, the previous keys stay in force and a
/// warning is logged. A deleted key file means no stored keys.
///
/// NOTE: the check costs one `stat` call per verification, a blocking call made on the async
/// worker thread. It is cheap on a local file system.
pub struct KeyRing {
    path: PathBuf,
    env_digest: Option<[u8; 32]>,
    state: Mutex<RingState>,
}

struct RingState {
    /// Identity of the key file at the last successful read; `None` when it was missing.
    stamp: Option<FileStamp>,
    /// (id, SHA-256 digest) of each stored key.
    keys: Vec<(String, [u8; 32])>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl KeyRing {
    /// Reads the key file of `data_dir` and adds `env_key` (the value of `API_KEY`) as the
    /// key with id [`ENV_KEY_ID`]. Only the digest of `env_key` is kept.
    ///
    /// Fails if the key file cannot be read or parsed, or if `env_key` is shorter than
    /// [`MIN_ENV_KEY_CHARS`]. An empty ring is not an error here: check
    /// [`KeyRing::is_empty`].
    pub fn load(data_dir: &Path, env_key: Option<&str>) -> Result<KeyRing, KeyError> {
        let env_digest = match env_key {
            Some(key) if key.chars().count() < MIN_ENV_KEY_CHARS => {
                return Err(KeyError::EnvKeyTooShort);
            }
            Some(key) => Some(digest(key)),
            None => None,
        };
        let path = key_file_path(data_dir);
        let stamp = file_stamp(&path)?;
        let keys = read_key_file(&path)?;

        Ok(KeyRing {
            path,
            env_digest,
            state: Mutex::new(RingState {
                stamp,
                keys: ring_entries(keys),
            }),
        })
    }

    /// Returns the id of the key `presented` if it is one of the accepted keys.
    ///
    /// The presented key is hashed and its digest compared with every accepted digest in
    /// constant time, without stopping at a match, so the response time does not depend on
    /// which key matched or on how many leading bytes agree.
    pub fn verify(&self, presented: &str) -> Option<String> {
        let presented_digest = digest(presented);
        let state = self.refreshed_state();

        let mut matched = 0u64;
        let mut any_match = subtle::Choice::from(0);
        for (index, (_, stored)) in state.keys.iter().enumerate() {
            let is_equal = presented_digest.ct_eq(stored);
            matched.conditional_assign(&(index as u64), is_equal);
            any_match |= is_equal;
        }
        let env_match = match &self.env_digest {
            Some(env_digest) => presented_digest.ct_eq(env_digest),
            None => subtle::Choice::from(0),
        };

        if bool::from(any_match) {
            let index = usize::try_from(matched).ok()?;
            state.keys.get(index).map(|(id, _)| id.clone())
        } else if bool::from(env_match) {
            Some(ENV_KEY_ID.to_owned())
        } else {
            None
        }
    }

    /// Returns true when no key is accepted: the key file contains no key and `API_KEY` is unset.
    /// The server must not start in that state.
    pub fn is_empty(&self) -> bool {
        self.env_digest.is_none() && self.refreshed_state().keys.is_empty()
    }

    /// Returns the number of accepted keys, `API_KEY` included.
    pub fn len(&self) -> usize {
        self.refreshed_state().keys.len() + usize::from(self.env_digest.is_some())
    }

    /// Returns the path of the key file this ring reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the state after re-reading the key file if it changed.
    fn refreshed_state(&self) -> std::sync::MutexGuard<'_, RingState> {
        // Nothing between the two assignments below can panic, so even a poisoned lock
        // guards a consistent state.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        match file_stamp(&self.path) {
            Ok(stamp) if stamp == state.stamp => {}
            Ok(stamp) => match read_key_file(&self.path) {
                Ok(keys) => {
                    let keys = ring_entries(keys);
                    tracing::info!(
                        path = %self.path.display(),
                        key_count = keys.len(),
                        "reloaded API key file"
                    );
                    state.keys = keys;
                    state.stamp = stamp;
                }
                Err(error) => {
                    // Remember the stamp so that one broken file logs one warning, not one
                    // per request. The next change to the file triggers a new read.
                    state.stamp = stamp;
                    tracing::warn!(
                        error = %error,
                        path = %self.path.display(),
                        "failed to reload API key file; keeping the previous keys"
                    );
                }
            },
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    path = %self.path.display(),
                    "failed to check API key file for changes; keeping the previous keys"
                );
            }
        }

        state
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("has_env_key", &self.env_digest.is_some())
            .finish_non_exhaustive()
    }
}

fn ring_entries(keys: Vec<LoadedKey>) -> Vec<(String, [u8; 32])> {
    keys.into_iter()
        .map(|key| (key.info.id, key.digest))
        .collect()
}

/// Checks a key name: 1 to 64 characters, no control characters, no leading or trailing
/// whitespace.
fn validate_name(name: &str) -> Result<(), KeyError> {
    let invalid = |reason: &str| {
        Err(KeyError::InvalidName {
            reason: reason.to_owned(),
        })
    };
    let length = name.chars().count();

    if length == 0 {
        return invalid("the name is empty; give 1 to 64 characters, for example `ci-runner`");
    }
    if length > MAX_NAME_CHARS {
        return Err(KeyError::InvalidName {
            reason: format!(
                "the name has {length} characters; at most {MAX_NAME_CHARS} are allowed"
            ),
        });
    }
    if name.chars().any(char::is_control) {
        return invalid("the name contains a control character such as a newline or tab");
    }
    if name.trim() != name {
        return invalid("the name starts or ends with whitespace");
    }

    Ok(())
}

fn key_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(KeyError::Random)?;

    Ok(bytes)
}

/// Returns the current time truncated to whole seconds, as stored in the file.
fn now_seconds() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` and its missing parents with mode 0700. An existing directory keeps its mode.
fn ensure_data_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

/// Takes an exclusive lock that serialises writers of the key file. Released on drop.
fn lock_key_file(data_dir: &Path) -> Result<File, KeyError> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
    file.lock().map_err(io_error("lock", &path))?;

    Ok(file)
}

fn file_stamp(path: &Path) -> Result<Option<FileStamp>, KeyError> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(FileStamp {
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            action: "read metadata of",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads and validates the key file. A missing file means no keys.
fn read_key_file(path: &Path) -> Result<Vec<LoadedKey>, KeyError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KeyError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })?;

    parse_key_file(file).map_err(|reason| KeyError::InvalidFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// Validates the parsed file. The error is a reason without key material.
fn parse_key_file(file: KeyFile) -> Result<Vec<LoadedKey>, String> {
    if file.format != FORMAT_NAME {
        return Err(format!(
            "`format` is `{}`, expected `{FORMAT_NAME}`",
            file.format
        ));
    }
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "`version` is {}, but this program reads version {FORMAT_VERSION}",
            file.version
        ));
    }

    let mut keys: Vec<LoadedKey> = Vec::with_capacity(file.keys.len());
    for (index, stored) in file.keys.into_iter().enumerate() {
        let key = parse_stored_key(stored).map_err(|reason| format!("key #{index}: {reason}"))?;
        if keys.iter().any(|other| other.info.id == key.info.id) {
            return Err(format!("key #{index}: id `{}` appears twice", key.info.id));
        }
        keys.push(key);
    }

    Ok(keys)
}

fn parse_stored_key(stored: StoredKey) -> Result<LoadedKey, String> {
    let id_is_valid = stored.id.len() == 2 * ID_RANDOM_BYTES
        && stored
            .id
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !id_is_valid {
        return Err(format!(
            "id `{}` is not {} lowercase hex digits",
            stored.id.escape_default(),
            2 * ID_RANDOM_BYTES
        ));
    }

    let mut digest = [0u8; 32];
    hex::decode_to_slice(&stored.sha256, &mut digest)
        .map_err(|_| format!("`sha256` of key `{}` is not 64 hex digits", stored.id))?;

    let created_at = DateTime::parse_from_rfc3339(&stored.created_at)
        .map_err(|error| {
            format!(
                "`created_at` of key `{}` is not an RFC 3339 time: {error}",
                stored.id
            )
        })?
        .with_timezone(&Utc);

    validate_name(&stored.name).map_err(|error| format!("key `{}`: {error}", stored.id))?;

    Ok(LoadedKey {
        info: KeyInfo {
            id: stored.id,
            name: stored.name,
            created_at,
        },
        digest,
    })
}

/// Writes the key file so that after a crash it contains either the old or the new content:
/// a temporary file with mode 0600 in the same directory, fsync, rename over the key file,
/// fsync of the directory.
fn write_key_file(data_dir: &Path, path: &Path, keys: &[LoadedKey]) -> Result<(), KeyError> {
    let file = KeyFile {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        keys: keys
            .iter()
            .map(|key| StoredKey {
                id: key.info.id.clone(),
                name: key.info.name.clone(),
                sha256: hex::encode(key.digest),
                created_at: key
                    .info
                    .created_at
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            })
            .collect(),
    };
    let mut content = serde_json::to_vec_pretty(&file)
        .expect("the key file contains only strings and integers, which always serialize");
    content.push(b'\n');

    write_durably(data_dir, path, &content, 0o600).map_err(|(action, file, source)| KeyError::Io {
        action,
        path: file,
        source,
    })
}

/// Writes `content` to `path` through a temporary file created with `mode`, fsyncs it,
/// renames it over `path` and fsyncs `dir`. When it returns `Ok`, the new content survives a
/// crash. A failure leaves `path` as it was, plus possibly a `*.tmp` file that the next write
/// replaces. The error names the action and the file.
pub(crate) fn write_durably(
    dir: &Path,
    path: &Path,
    content: &[u8],
    mode: u32,
) -> Result<(), (&'static str, PathBuf, io::Error)> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let fail = |action: &'static str, file: &Path| {
        let file = file.to_path_buf();
        move |error: io::Error| (action, file, error)
    };

    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(("remove stale", tmp, error)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail("create", &tmp))?;
    file.write_all(content).map_err(fail("write", &tmp))?;
    file.sync_all().map_err(fail("fsync", &tmp))?;
    drop(file);

    fs::rename(&tmp, path).map_err(fail("rename", &tmp))?;
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(fail("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn read_file(dir: &Path) -> String {
        fs::read_to_string(dir.join(KEY_FILE_NAME)).expect("key file exists")
    }

    #[test]
    fn create_key_returns_prefixed_random_key() {
        let dir = tempfile::tempdir().unwrap();

        let (info, key) = create_key(dir.path(), "ci").unwrap();
        let (_, other) = create_key(dir.path(), "ci").unwrap();

        assert!(key.starts_with(KEY_PREFIX), "key lacks prefix");
        let encoded = &key[KEY_PREFIX.len()..];
        assert_eq!(encoded.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(encoded).unwrap().len(), 32);
        assert_ne!(key, other);
        assert_eq!(info.name, "ci");
        assert_eq!(info.id.len(), 8);
        assert!(info.id.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }

    #[test]
    fn key_file_holds_digest_not_key() {
        let dir = tempfile::tempdir().unwrap();

        let (info, key) = create_key(dir.path(), "ci").unwrap();
        let content = read_file(dir.path());

        assert!(!content.contains(&key), "plaintext key in file");
        assert!(
            !content.contains(&key[KEY_PREFIX.len()..]),
            "key body in file"
        );
        assert!(content.contains(&hex::encode(digest(&key))));
        assert!(content.contains(&info.id));
        let mode = fs::metadata(dir.path().join(KEY_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn create_key_makes_data_dir_private() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");

        create_key(&data_dir, "ci").unwrap();

        let mode = fs::metadata(&data_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!data_dir.join("api-keys.json.tmp").exists());
    }

    #[test]
    fn list_keys_returns_created_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_keys(dir.path()).unwrap().is_empty());

        let (first, _) = create_key(dir.path(), "first").unwrap();
        let (second, _) = create_key(dir.path(), "second").unwrap();

        assert_eq!(list_keys(dir.path()).unwrap(), vec![first, second]);
    }

    #[test]
    fn created_at_round_trips_as_rfc3339_utc() {
        let dir = tempfile::tempdir().unwrap();

        let (info, _) = create_key(dir.path(), "ci").unwrap();

        let stored = read_file(dir.path());
        let expected = info.created_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        assert!(stored.contains(&expected), "{stored}");
        assert!(expected.ends_with('Z'));
        assert!((Utc::now() - info.created_at).num_seconds() < 5);
    }

    #[test]
    fn revoke_key_removes_only_that_key() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = create_key(dir.path(), "first").unwrap();
        let (second, _) = create_key(dir.path(), "second").unwrap();

        let revoked = revoke_key(dir.path(), &first.id).unwrap();

        assert_eq!(revoked, first);
        assert_eq!(list_keys(dir.path()).unwrap(), vec![second]);
    }

    #[test]
    fn revoke_unknown_id_names_it() {
        let dir = tempfile::tempdir().unwrap();
        create_key(dir.path(), "ci").unwrap();

        let error = revoke_key(dir.path(), "deadbeef").unwrap_err();

        assert!(matches!(error, KeyError::NotFound { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("deadbeef"), "{message}");
        assert!(message.contains("keys list"), "{message}");
    }

    #[test]
    fn revoke_in_missing_dir_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("missing");

        let error = revoke_key(&data_dir, "deadbeef").unwrap_err();

        assert!(matches!(error, KeyError::NotFound { .. }), "{error:?}");
        assert!(!data_dir.exists(), "revoke created the data directory");
    }

    #[test]
    fn revoke_env_key_explains_api_key() {
        let dir = tempfile::tempdir().unwrap();

        let error = revoke_key(dir.path(), ENV_KEY_ID).unwrap_err();

        assert!(error.to_string().contains("API_KEY"), "{error}");
    }

    #[test]
    fn create_key_rejects_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let too_long = "x".repeat(MAX_NAME_CHARS + 1);
        let cases = [
            "",
            "a\nb",
            "tab\there",
            "\u{7f}",
            " padded",
            "padded ",
            too_long.as_str(),
        ];

        for name in cases {
            let result = create_key(dir.path(), name);
            assert!(
                matches!(result, Err(KeyError::InvalidName { .. })),
                "name {name:?} gave {result:?}"
            );
        }
        assert!(list_keys(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn create_key_accepts_unicode_name_of_max_length() {
        let dir = tempfile::tempdir().unwrap();
        let name = "é".repeat(MAX_NAME_CHARS);

        let (info, _) = create_key(dir.path(), &name).unwrap();

        assert_eq!(info.name, name);
    }

    #[test]
    fn unparsable_file_is_error_naming_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE_NAME), "{not json").unwrap();

        let error = list_keys(dir.path()).unwrap_err();

        assert!(matches!(error, KeyError::Parse { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(KEY_FILE_NAME), "{message}");
        assert!(message.contains("keys create"), "{message}");
        let create_error = create_key(dir.path(), "ci").unwrap_err();
        assert!(matches!(create_error, KeyError::Parse { .. }));
        assert_eq!(read_file(dir.path()), "{not json");
    }

    #[test]
    fn invalid_entries_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let digest_hex = "ab".repeat(32);
        let entry = |id: &str, sha: &str, created: &str| {
            format!(r#"{{"id":"{id}","name":"n","sha256":"{sha}","created_at":"{created}"}}"#)
        };
        let file = |keys: Vec<String>| {
            format!(
                r#"{{"format":"{FORMAT_NAME}","version":1,"keys":[{}]}}"#,
                keys.join(",")
            )
        };
        let cases = [
            file(vec![entry("0011aabb", "abc", "2025-01-01T00:00:00Z")]),
            file(vec![entry("0011AABB", &digest_hex, "2025-01-01T00:00:00Z")]),
            file(vec![entry("0011aabb", &digest_hex, "yesterday")]),
            file(vec![
                entry("0011aabb", &digest_hex, "2025-01-01T00:00:00Z"),
                entry("0011aabb", &digest_hex, "2025-01-01T00:00:00Z"),
            ]),
            r#"{"format":"other","version":1,"keys":[]}"#.to_owned(),
            format!(r#"{{"format":"{FORMAT_NAME}","version":2,"keys":[]}}"#),
        ];

        for content in cases {
            fs::write(dir.path().join(KEY_FILE_NAME), &content).unwrap();
            let result = list_keys(dir.path());
            assert!(
                matches!(result, Err(KeyError::InvalidFile { .. })),
                "{content} gave {result:?}"
            );
        }
    }

    #[test]
    fn env_key_shorter_than_minimum_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let short = "s3cret-but-short";

        let error = KeyRing::load(dir.path(), Some(short)).unwrap_err();

        let message = error.to_string();
        assert!(matches!(error, KeyError::EnvKeyTooShort));
        assert!(message.contains("API_KEY"), "{message}");
        assert!(message.contains("openssl rand -base64 32"), "{message}");
        assert!(!message.contains(short), "message shows the value");
    }

    #[test]
    fn ring_verifies_stored_and_env_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_key) = create_key(dir.path(), "first").unwrap();
        let (second, second_key) = create_key(dir.path(), "second").unwrap();
        let env_key = "x".repeat(MIN_ENV_KEY_CHARS);

        let ring = KeyRing::load(dir.path(), Some(&env_key)).unwrap();

        assert_eq!(ring.verify(&first_key), Some(first.id));
        assert_eq!(ring.verify(&second_key), Some(second.id));
        assert_eq!(ring.verify(&env_key), Some(ENV_KEY_ID.to_owned()));
        assert_eq!(ring.verify("p2ms_wrong"), None);
        assert_eq!(ring.verify(""), None);
        assert_eq!(ring.len(), 3);
        assert!(!ring.is_empty());
    }

    #[test]
    fn ring_without_keys_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        let ring = KeyRing::load(dir.path(), None).unwrap();

        assert!(ring.is_empty());
        assert_eq!(ring.verify("anything"), None);
    }

    #[test]
    fn ring_sees_keys_created_and_revoked_later() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load(dir.path(), None).unwrap();
        assert!(ring.is_empty());

        let (info, key) = create_key(dir.path(), "late").unwrap();
        assert_eq!(ring.verify(&key), Some(info.id.clone()));
        assert!(!ring.is_empty());

        revoke_key(dir.path(), &info.id).unwrap();
        assert_eq!(ring.verify(&key), None);
        assert!(ring.is_empty());
    }

    #[test]
    fn ring_keeps_keys_when_reload_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (info, key) = create_key(dir.path(), "ci").unwrap();
        let ring = KeyRing::load(dir.path(), None).unwrap();

        fs::write(dir.path().join(KEY_FILE_NAME), "garbage that is not json").unwrap();

        assert_eq!(ring.verify(&key), Some(info.id.clone()));
        assert_eq!(ring.verify(&key), Some(info.id));
    }

    #[test]
    fn ring_load_fails_on_unparsable_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE_NAME), "[]").unwrap();

        let result = KeyRing::load(dir.path(), None);

        assert!(matches!(result, Err(KeyError::Parse { .. })), "{result:?}");
    }

    #[test]
    fn ring_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeyRing>();
    }

    #[test]
    fn ring_debug_hides_digests() {
        let dir = tempfile::tempdir().unwrap();
        let env_key = "y".repeat(MIN_ENV_KEY_CHARS);
        let ring = KeyRing::load(dir.path(), Some(&env_key)).unwrap();

        let debug = format!("{ring:?}");

        assert!(!debug.contains(&hex::encode(digest(&env_key))), "{debug}");
        assert!(!debug.contains(&env_key), "{debug}");
    }
}
