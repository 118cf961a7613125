//! Configuration: loading, defaults and validation.
//!
//! Values come from `.env` in the working directory, then from real environment variables,
//! then from command-line flags; a later source wins. The binary loads `.env` with `dotenvy`
//! before it parses flags, and clap reads each key from the environment, which gives that
//! order. Validation happens here, before any connection is made, so a bad value stops the
//! program with a message that names the key and the fix.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

/// Default journal directory, relative to the working directory as in the original service.
pub const DEFAULT_DATA_DIR: &str = "./datalog";

/// Command-line flags and environment keys shared by the commands that touch the databases.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db.
    #[arg(long, env = "PG_DATABASE_URL", hide_env_values = true)]
    pub pg_database_url: Option<String>,

    /// MySQL or MariaDB connection URL with the target database, e.g.
    /// mysql://user:password@host:3306/db.
    #[arg(long, env = "MYSQL_DATABASE_URL", hide_env_values = true)]
    pub mysql_database_url: Option<String>,

    /// Comma-separated schema-qualified PostgreSQL tables to sync, e.g. public.orders,sales.items.
    #[arg(long, env = "SYNC_TABLES")]
    pub sync_tables: Option<String>,

    /// TOML file that maps synced tables to other MySQL tables, databases, column names or
    /// types, and leaves columns out.
    #[arg(long, env = "MAPPING_FILE")]
    pub mapping_file: Option<String>,

    /// Comma-separated tables of SYNC_TABLES that have no primary key and may be synced by
    /// matching rows on all columns, e.g. public.events.
    #[arg(long, env = "KEYLESS_TABLES")]
    pub keyless_tables: Option<String>,

    /// When changes are applied to MySQL: `automatic` (continuously), `auto-check` (every
    /// AUTO_CHECK_INTERVAL seconds while MySQL is reachable) or `manual` (on request only).
    #[arg(long, env = "MODE", default_value = "automatic")]
    pub mode: String,

    /// Seconds between apply runs in the auto-check mode.
    #[arg(long, env = "AUTO_CHECK_INTERVAL", default_value = "300")]
    pub auto_check_interval: String,

    /// NaN and ±Infinity in real and double precision columns, which MySQL cannot store:
    /// `reject` (halt or park the change) or `null` (store NULL).
    #[arg(long, env = "FLOAT_SPECIAL_VALUES", default_value = "reject")]
    pub float_special_values: String,

    /// Dates and time stamps MySQL cannot store (infinity, BC, years after 9999): `reject` (halt
    /// or park the change) or `clamp` (store 0001-01-01 or 9999-12-31 23:59:59.999999).
    #[arg(long, env = "DATE_OUT_OF_RANGE", default_value = "reject")]
    pub date_out_of_range: String,

    /// What happens to a change that MySQL rejects for its data: `halt` (stop applying and keep
    /// the order) or `park` (set it aside in the failed-change log and go on).
    #[arg(long, env = "FAILED_CHANGE_POLICY", default_value = "halt")]
    pub failed_change_policy: String,

    /// Directory of the journal (the local change buffer) and its lock file.
    #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Seconds between the daemon's comparisons of every synced table with MySQL (as the
    /// `verify` command does); 0 turns them off. Needs MODE=automatic.
    #[arg(long, env = "VERIFY_INTERVAL", default_value = "0")]
    pub verify_interval: String,

    /// Rows per chunk of a snapshot or a verify run.
    #[arg(long, env = "SNAPSHOT_CHUNK_ROWS", default_value = "20000")]
    pub snapshot_chunk_rows: String,
}

/// Flags and environment keys of the HTTPS API, for the daemon and for the commands that call
/// it.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Protocol of the API: `https`, `http` (plain, allowed only on a loopback
    /// BIND_ADDRESS) or `off`.
    #[arg(long = "api", env = "API", default_value = "https")]
    pub api: String,

    /// TCP port of the API.
    #[arg(long, env = "PORT", default_value = "3000")]
    pub port: String,

    /// Address the API listens on; 0.0.0.0 listens on every IPv4 interface.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,

    /// An extra API key accepted next to those made with `keys create`, at least 32
    /// characters. The `status`, `sync`, `failed` and `token` commands also use it as their
    /// credential.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Secret that signs the API's JWTs (HS256), at least 32 bytes.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of the JWTs that POST /auth/token and the `token` command issue, in seconds.
    #[arg(long, env = "JWT_TTL", default_value = "900")]
    pub jwt_ttl: String,

    /// PEM certificate chain of the API. Without it and HTTPS_KEY_PATH, a certificate signed
    /// by a private CA is generated in DATA_DIR/tls.
    #[arg(long, env = "HTTPS_CERT_PATH")]
    // A String, not a PathBuf: clap rejects an empty PathBuf, and `.env.example` leaves
    // these keys empty to mean "unset".
    pub https_cert_path: Option<String>,

    /// PEM private key of the API certificate.
    #[arg(long, env = "HTTPS_KEY_PATH")]
    pub https_key_path: Option<String>,
}

/// Protocol of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiProtocol {
    /// TLS, the default.
    Https,
    /// Plain HTTP, only on a loopback address.
    Http,
    /// No API.
    Off,
}

/// Validated API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Protocol of the API.
    pub protocol: ApiProtocol,
    /// Listening address.
    pub bind: std::net::SocketAddr,
    /// The key from `API_KEY`.
    pub api_key: Option<Secret>,
    /// The JWT signing secret; present unless the API is off.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of issued JWTs.
    pub jwt_ttl: std::time::Duration,
    /// Operator's certificate chain.
    pub cert_path: Option<PathBuf>,
    /// Operator's private key.
    pub key_path: Option<PathBuf>,
}

/// Minimum length of `JWT_SECRET` in bytes and of `API_KEY` in characters.
pub const MIN_SECRET_LEN: usize = 32;

impl ApiConfig {
    /// Validates the API settings. `JWT_SECRET` is required unless the API is off.
    pub fn from_args(args: &ApiArgs) -> Result<Self, ConfigError> {
        let protocol = match args.api.trim() {
            "https" => ApiProtocol::Https,
            "http" => ApiProtocol::Http,
            "off" => ApiProtocol::Off,
            other => {
                return Err(ConfigError::Invalid {
                    key: "API",
                    reason: format!("unknown value `{other}`; use https, http or off"),
                });
            }
        };
        let port: u16 = args
            .port
            .trim()
            .parse()
            .ok()
            .filter(|&port| port > 0)
            .ok_or_else(|| ConfigError::Invalid {
                key: "PORT",
                reason: format!("`{}` is not a TCP port from 1 to 65535", args.port.trim()),
            })?;
        let address: std::net::IpAddr =
            args.bind_address
                .trim()
                .parse()
                .map_err(|_| ConfigError::Invalid {
                    key: "BIND_ADDRESS",
                    reason: format!(
                        "`{}` is not an IP address; use e.g. 0.0.0.0 for every interface or \
                         127.0.0.1 for this machine only",
                        args.bind_address.trim()
                    ),
                })?;
        if protocol == ApiProtocol::Http && !address.is_loopback() {
            return Err(ConfigError::Invalid {
                key: "API",
                reason: format!(
                    "plain HTTP is allowed only on a loopback address, but BIND_ADDRESS is \
                     {address}; use API=https, or BIND_ADDRESS=127.0.0.1 behind a local TLS proxy"
                ),
            });
        }

        let api_key = optional_secret(&args.api_key);
        if let Some(key) = &api_key
            && key.expose().chars().count() < MIN_SECRET_LEN
        {
            return Err(ConfigError::Invalid {
                key: "API_KEY",
                reason: format!(
                    "the key is shorter than {MIN_SECRET_LEN} characters; use a random one, \
                     e.g. from `openssl rand -base64 32`"
                ),
            });
        }
        let jwt_secret = optional_secret(&args.jwt_secret);
        if let Some(secret) = &jwt_secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            return Err(ConfigError::Invalid {
                key: "JWT_SECRET",
                reason: format!(
                    "the secret is shorter than {MIN_SECRET_LEN} bytes; use a random one, e.g. \
                     from `openssl rand -base64 48`"
                ),
            });
        }
        let jwt_ttl = parse_seconds(&args.jwt_ttl, "JWT_TTL", 10..=86_400)?;
        let cert_path = non_empty_path(&args.https_cert_path);
        let key_path = non_empty_path(&args.https_key_path);
        match (&cert_path, &key_path) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "HTTPS_KEY_PATH",
                    reason: "HTTPS_CERT_PATH is set but HTTPS_KEY_PATH is not; set both, or \
                             neither for a generated certificate"
                        .to_string(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "HTTPS_CERT_PATH",
                    reason: "HTTPS_KEY_PATH is set but HTTPS_CERT_PATH is not; set both, or \
                             neither for a generated certificate"
                        .to_string(),
                });
            }
            _ => {}
        }

        Ok(ApiConfig {
            protocol,
            bind: std::net::SocketAddr::new(address, port),
            api_key,
            jwt_secret,
            jwt_ttl,
            cert_path,
            key_path,
        })
    }

    /// Returns the JWT secret, which the daemon needs unless the API is off, and the `token`
    /// command always.
    pub fn require_jwt_secret(&self) -> Result<&Secret, ConfigError> {
        self.jwt_secret.as_ref().ok_or(ConfigError::Missing {
            key: "JWT_SECRET",
            flag: "jwt-secret",
            example: "a random value of at least 32 bytes, e.g. from `openssl rand -base64 48`; \
                      or set API=off to run the daemon without the API",
        })
    }

    /// Returns the base URL a local client uses to reach the API: the bind address, or the
    /// loopback address when the API listens on every interface.
    pub fn local_url(&self) -> String {
        let ip = match self.bind.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let scheme = if self.protocol == ApiProtocol::Http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{ip}:{}", self.bind.port())
    }
}

fn optional_secret(value: &Option<String>) -> Option<Secret> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(Secret::new)
}

fn non_empty_path(value: &Option<String>) -> Option<PathBuf> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// A value whose text must never reach logs or terminal output, such as a URL with a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret text, for handing to a database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// When the apply stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Apply continuously as changes arrive.
    Automatic,
    /// Apply everything pending at a fixed interval, while MySQL is reachable.
    AutoCheck,
    /// Apply only on request, through the API or the command line.
    Manual,
}

impl Mode {
    /// Returns the name used in `.env` and the API.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Automatic => "automatic",
            Mode::AutoCheck => "auto-check",
            Mode::Manual => "manual",
        }
    }
}

impl FromStr for Mode {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "automatic" => Ok(Mode::Automatic),
            "auto-check" => Ok(Mode::AutoCheck),
            "manual" => Ok(Mode::Manual),
            _ => Err(ConfigError::Invalid {
                key: "MODE",
                reason: format!("unknown mode `{value}`; use automatic, auto-check or manual"),
            }),
        }
    }
}

/// Replacements for values that MySQL cannot store. By default there are none, and such
/// values are rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValuePolicy {
    /// NaN and ±Infinity in float columns become NULL.
    pub floats_to_null: bool,
    /// Dates and time stamps outside years 1 to 9999, and infinity, become the nearest end of
    /// that range.
    pub clamp_dates: bool,
}

/// Handling of a change that MySQL rejects for its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailedChangePolicy {
    /// Stop applying until the cause is fixed, so that the order of all changes is kept.
    Halt,
    /// Move the change to the failed-change log and go on. Later changes of the same row wait
    /// behind it in the log.
    Park,
}

impl FailedChangePolicy {
    /// Returns the name used in `.env` and the API.
    pub fn name(self) -> &'static str {
        match self {
            FailedChangePolicy::Halt => "halt",
            FailedChangePolicy::Park => "park",
        }
    }
}

impl FromStr for FailedChangePolicy {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "halt" => Ok(FailedChangePolicy::Halt),
            "park" => Ok(FailedChangePolicy::Park),
            _ => Err(ConfigError::Invalid {
                key: "FAILED_CHANGE_POLICY",
                reason: format!("unknown policy `{value}`; use halt or park"),
            }),
        }
    }
}

/// A schema-qualified PostgreSQL table name, as stored in the catalog (case preserved).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema name.
    pub schema: String,
    /// Table name within the schema; also the name of the MySQL target table.
    pub name: String,
}

impl TableName {
    /// Parses `schema.table`, where either part may be double-quoted as in SQL. Unquoted parts
    /// fold to lower case, as PostgreSQL does.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts = split_identifiers(text.trim())?;
        match parts.as_slice() {
            [schema, name] => Ok(TableName {
                schema: schema.clone(),
                name: name.clone(),
            }),
            [_] => Err(format!(
                "table `{text}` is not schema-qualified; write it as schema.table, e.g. public.{text}"
            )),
            _ => Err(format!(
                "table `{text}` has too many dots; write it as schema.table"
            )),
        }
    }

    /// Returns the name as PostgreSQL SQL, with both parts quoted.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_pg_ident(&self.schema),
            quote_pg_ident(&self.name)
        )
    }

    /// Returns the name as stored in change-log rows and journal records: `schema.table`, with a part
    /// double-quoted only where it is not a plain lower-case identifier, so that `"a.b".c` and
    /// `a."b.c"` stay apart while `public.orders` stays readable.
    pub fn qualified(&self) -> String {
        let part = |ident: &str| {
            let plain = ident.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && ident
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if plain {
                ident.to_string()
            } else {
                quote_pg_ident(ident)
            }
        };
        format!("{}.{}", part(&self.schema), part(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes a PostgreSQL identifier.
pub fn quote_pg_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Splits `a.b` into identifiers, honouring double quotes and folding unquoted ones.
fn split_identifiers(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("table `{text}` has an unclosed double quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(format!("table `{text}` has an empty name part"));
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("table `{text}` has `{c}` after a quoted name")),
        }
    }
}

/// Validated settings for the commands that connect to both databases.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL URL (contains a password).
    pub pg_url: Secret,
    /// MySQL URL (contains a password); its path names the target database.
    pub mysql_url: Secret,
    /// The target database named in the MySQL URL.
    pub mysql_database: String,
    /// When changes are applied.
    pub mode: Mode,
    /// Interval of the auto-check mode.
    pub auto_check_interval: std::time::Duration,
    /// Handling of a change that MySQL rejects for its data.
    pub failed_change_policy: FailedChangePolicy,
    /// Handling of values MySQL cannot store.
    pub value_policy: ValuePolicy,
    /// Journal directory.
    pub data_dir: PathBuf,
    /// Synced tables, in the order given.
    pub tables: Vec<TableName>,
    /// Synced tables without a primary key whose rows are matched on all columns.
    pub keyless_tables: Vec<TableName>,
    /// The mapping file, when one is configured.
    pub mapping: Option<crate::mapping::Mapping>,
    /// Interval of the daemon's verify runs; `None` when they are off.
    pub verify_interval: Option<std::time::Duration>,
    /// Rows per chunk of a snapshot or a verify run.
    pub snapshot_chunk_rows: usize,
}

/// Reason the configuration is unusable. Each message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required key has no value in `.env`, the environment or the flags.
    #[error("{key} is missing: set it in .env, in the environment or with --{flag}; {example}")]
    Missing {
        /// The environment key.
        key: &'static str,
        /// The matching command-line flag.
        flag: &'static str,
        /// An example value.
        example: &'static str,
    },
    /// A key has a value that cannot be used.
    #[error("{key} is invalid: {reason}")]
    Invalid {
        /// The environment key.
        key: &'static str,
        /// Problem and its fix. It never contains a secret.
        reason: String,
    },
}

impl Config {
    /// Validates raw settings.
    pub fn from_args(args: &SettingsArgs) -> Result<Self, ConfigError> {
        let pg_url = require(
            &args.pg_database_url,
            "PG_DATABASE_URL",
            "pg-database-url",
            "e.g. postgres://sync:password@127.0.0.1:5432/app",
        )?;
        validate_pg_url(&pg_url)?;

        let mysql_url = require(
            &args.mysql_database_url,
            "MYSQL_DATABASE_URL",
            "mysql-database-url",
            "e.g. mysql://sync:password@127.0.0.1:3306/app",
        )?;
        let mysql_database = validate_mysql_url(&mysql_url)?;

        let tables_text = require(
            &args.sync_tables,
            "SYNC_TABLES",
            "sync-tables",
            "e.g. public.orders,public.customers",
        )?;
        let mapped = args
            .mapping_file
            .as_deref()
            .is_some_and(|path| !path.trim().is_empty());
        let tables = parse_table_list(&tables_text, mapped)?;
        let keyless_tables = parse_keyless_tables(args.keyless_tables.as_deref(), &tables)?;
        let mapping = match args.mapping_file.as_deref().map(str::trim) {
            Some(path) if !path.is_empty() => Some(
                crate::mapping::Mapping::load(std::path::Path::new(path), &tables).map_err(
                    |error| ConfigError::Invalid {
                        key: "MAPPING_FILE",
                        reason: error.to_string(),
                    },
                )?,
            ),
            _ => None,
        };

        let mode = args.mode.trim().parse()?;
        let auto_check_interval =
            parse_seconds(&args.auto_check_interval, "AUTO_CHECK_INTERVAL", 1..=86_400)?;
        let failed_change_policy = args.failed_change_policy.trim().parse()?;
        let value_policy = ValuePolicy {
            floats_to_null: match args.float_special_values.trim() {
                "reject" => false,
                "null" => true,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "FLOAT_SPECIAL_VALUES",
                        reason: format!("unknown value `{other}`; use reject or null"),
                    });
                }
            },
            clamp_dates: match args.date_out_of_range.trim() {
                "reject" => false,
                "clamp" => true,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "DATE_OUT_OF_RANGE",
                        reason: format!("unknown value `{other}`; use reject or clamp"),
                    });
                }
            },
        };
        let verify_interval = match args.verify_interval.trim() {
            "0" => None,
            text => Some(parse_seconds(text, "VERIFY_INTERVAL", 10..=604_800)?),
        };
        if verify_interval.is_some() && mode != Mode::Automatic {
            return Err(ConfigError::Invalid {
                key: "VERIFY_INTERVAL",
                reason: "periodic verify runs need MODE=automatic, because in the other modes \
                         changes wait on purpose and would count as drift; set \
                         VERIFY_INTERVAL=0 and run `pg-to-mysql-sync verify` after a sync"
                    .to_string(),
            });
        }
        let snapshot_chunk_rows = parse_seconds(
            &args.snapshot_chunk_rows,
            "SNAPSHOT_CHUNK_ROWS",
            100..=1_000_000,
        )
        .map_err(|_| ConfigError::Invalid {
            key: "SNAPSHOT_CHUNK_ROWS",
            reason: format!(
                "`{}` is not a whole number from 100 to 1000000",
                args.snapshot_chunk_rows.trim()
            ),
        })?
        .as_secs() as usize;
        if args.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "DATA_DIR",
                reason: format!("the path is empty; leave it unset for {DEFAULT_DATA_DIR}"),
            });
        }

        Ok(Config {
            pg_url: Secret::new(pg_url),
            mysql_url: Secret::new(mysql_url),
            mysql_database,
            mode,
            auto_check_interval,
            failed_change_policy,
            value_policy,
            data_dir: args.data_dir.clone(),
            tables,
            keyless_tables,
            mapping,
            verify_interval,
            snapshot_chunk_rows,
        })
    }
}

/// Parses a whole number of seconds within `range`.
pub fn parse_seconds(
    text: &str,
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<std::time::Duration, ConfigError> {
    let invalid = || ConfigError::Invalid {
        key,
        reason: format!(
            "`{}` is not a whole number of seconds from {} to {}",
            text.trim(),
            range.start(),
            range.end()
        ),
    };
    let seconds: u64 = text.trim().parse().map_err(|_| invalid())?;
    if !range.contains(&seconds) {
        return Err(invalid());
    }

    Ok(std::time::Duration::from_secs(seconds))
}

fn require(
    value: &Option<String>,
    key: &'static str,
    flag: &'static str,
    example: &'static str,
) -> Result<String, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(ConfigError::Missing { key, flag, example }),
    }
}

fn validate_pg_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            key: "PG_DATABASE_URL",
            reason: "the URL must start with postgres:// or postgresql://".to_string(),
        });
    }
    // NOTE: tokio-postgres's parse errors describe the bad part without echoing the URL, so
    // their text is safe to show.
    tokio_postgres::Config::from_str(url).map_err(|error| ConfigError::Invalid {
        key: "PG_DATABASE_URL",
        reason: format!("the URL cannot be parsed: {error}"),
    })?;

    Ok(())
}

fn validate_mysql_url(url: &str) -> Result<String, ConfigError> {
    if !url.starts_with("mysql://") {
        return Err(ConfigError::Invalid {
            key: "MYSQL_DATABASE_URL",
            reason: "the URL must start with mysql://".to_string(),
        });
    }
    // UrlError's messages name parameters, never the user-info part that contains the password.
    let opts = mysql_async::Opts::from_url(url).map_err(|error| ConfigError::Invalid {
        key: "MYSQL_DATABASE_URL",
        reason: format!("the URL cannot be parsed: {error}"),
    })?;
    match opts.db_name() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(ConfigError::Invalid {
            key: "MYSQL_DATABASE_URL",
            reason:
                "the URL names no database; add it as the path, e.g. mysql://user:pw@host:3306/app"
                    .to_string(),
        }),
    }
}

/// Parses `KEYLESS_TABLES`; each table must be in `SYNC_TABLES` too.
fn parse_keyless_tables(
    text: Option<&str>,
    tables: &[TableName],
) -> Result<Vec<TableName>, ConfigError> {
    let mut keyless = Vec::new();
    for item in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let table = TableName::parse(item).map_err(|reason| ConfigError::Invalid {
            key: "KEYLESS_TABLES",
            reason,
        })?;
        if !tables.contains(&table) {
            return Err(ConfigError::Invalid {
                key: "KEYLESS_TABLES",
                reason: format!("`{table}` is not in SYNC_TABLES; add it there too"),
            });
        }
        keyless.push(table);
    }

    Ok(keyless)
}

/// Parses `SYNC_TABLES`. Each PostgreSQL table maps to the MySQL table of the same name, so two
/// tables of one name in different schemas would collide and are rejected.
fn parse_table_list(text: &str, mapped: bool) -> Result<Vec<TableName>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "SYNC_TABLES",
        reason,
    };
    let mut tables: Vec<TableName> = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let table = TableName::parse(item).map_err(invalid)?;
        if let Some(other) = tables.iter().find(|t| {
            if mapped {
                // The mapping file may give them other MySQL names; clashes are checked
                // when it is applied.
                **t == table
            } else {
                t.name.eq_ignore_ascii_case(&table.name)
            }
        }) {
            return Err(invalid(format!(
                "`{other}` and `{table}` would both sync to the MySQL table `{}`; list only \
                 one, or map one to another name in MAPPING_FILE",
                table.name
            )));
        }
        tables.push(table);
    }
    if tables.is_empty() {
        return Err(invalid(
            "the list is empty; e.g. SYNC_TABLES=public.orders".to_string(),
        ));
    }

    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SettingsArgs {
        SettingsArgs {
            pg_database_url: Some("postgres://u:secretpw@127.0.0.1:5432/db".into()),
            mysql_database_url: Some("mysql://u:secretpw@127.0.0.1:3306/app".into()),
            sync_tables: Some("public.orders, \"Sales\".\"Line.Items\"".into()),
            keyless_tables: None,
            mapping_file: None,
            mode: "automatic".into(),
            auto_check_interval: "300".into(),
            failed_change_policy: "halt".into(),
            float_special_values: "reject".into(),
            date_out_of_range: "reject".into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            verify_interval: "0".into(),
            snapshot_chunk_rows: "20000".into(),
        }
    }

    #[test]
    fn valid_settings_parse() {
        let config = Config::from_args(&args()).unwrap();
        assert_eq!(config.mysql_database, "app");
        assert_eq!(
            config.tables[0],
            TableName {
                schema: "public".into(),
                name: "orders".into()
            }
        );
        assert_eq!(
            config.tables[1],
            TableName {
                schema: "Sales".into(),
                name: "Line.Items".into()
            }
        );
    }

    #[test]
    fn debug_output_hides_passwords() {
        let config = Config::from_args(&args()).unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("secretpw"), "{text}");
    }

    #[test]
    fn missing_url_names_the_key() {
        let mut raw = args();
        raw.pg_database_url = None;
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(
            message.starts_with("PG_DATABASE_URL is missing"),
            "{message}"
        );
    }

    #[test]
    fn mysql_url_without_database_is_rejected() {
        let mut raw = args();
        raw.mysql_database_url = Some("mysql://u:secretpw@127.0.0.1:3306".into());
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(message.contains("names no database"), "{message}");
        assert!(!message.contains("secretpw"), "{message}");
    }

    #[test]
    fn unqualified_table_is_rejected() {
        let mut raw = args();
        raw.sync_tables = Some("orders".into());
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(message.contains("not schema-qualified"), "{message}");
    }

    #[test]
    fn colliding_table_names_are_rejected() {
        let mut raw = args();
        raw.sync_tables = Some("a.orders,b.Orders".into());
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(message.contains("would both sync"), "{message}");
    }

    #[test]
    fn modes_parse() {
        for (text, mode) in [
            ("automatic", Mode::Automatic),
            ("auto-check", Mode::AutoCheck),
            ("manual", Mode::Manual),
        ] {
            let mut raw = args();
            raw.mode = text.into();
            assert_eq!(Config::from_args(&raw).unwrap().mode, mode);
            assert_eq!(mode.name(), text);
        }
    }

    #[test]
    fn unknown_mode_is_rejected() {
        let mut raw = args();
        raw.mode = "fast".into();
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(message.starts_with("MODE is invalid"), "{message}");
        assert!(message.contains("auto-check"), "{message}");
    }

    #[test]
    fn bad_interval_is_rejected() {
        for text in ["0", "-5", "1.5", "ten", "86401"] {
            let mut raw = args();
            raw.auto_check_interval = text.into();
            let message = Config::from_args(&raw).unwrap_err().to_string();
            assert!(
                message.starts_with("AUTO_CHECK_INTERVAL is invalid"),
                "{message}"
            );
        }
    }

    #[test]
    fn keyless_tables_must_be_synced() {
        let mut raw = args();
        raw.keyless_tables = Some("public.orders".into());
        let config = Config::from_args(&raw).unwrap();
        assert_eq!(config.keyless_tables, vec![config.tables[0].clone()]);

        raw.keyless_tables = Some("public.events".into());
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(
            message.starts_with("KEYLESS_TABLES is invalid"),
            "{message}"
        );
        assert!(message.contains("not in SYNC_TABLES"), "{message}");
    }

    #[test]
    fn unknown_policy_is_rejected() {
        let mut raw = args();
        raw.failed_change_policy = "skip".into();
        let message = Config::from_args(&raw).unwrap_err().to_string();
        assert!(
            message.starts_with("FAILED_CHANGE_POLICY is invalid"),
            "{message}"
        );
    }

    fn api_args() -> ApiArgs {
        ApiArgs {
            api: "https".into(),
            port: "3000".into(),
            bind_address: "0.0.0.0".into(),
            api_key: None,
            jwt_secret: Some("0123456789abcdef0123456789abcdef-secret".into()),
            jwt_ttl: "900".into(),
            https_cert_path: None,
            https_key_path: None,
        }
    }

    #[test]
    fn api_settings_parse() {
        let config = ApiConfig::from_args(&api_args()).unwrap();
        assert_eq!(config.protocol, ApiProtocol::Https);
        assert_eq!(config.bind.port(), 3000);
        assert_eq!(config.local_url(), "https://127.0.0.1:3000");
        assert!(!format!("{config:?}").contains("abcdef-secret"));
    }

    #[test]
    fn plain_http_needs_loopback() {
        let mut raw = api_args();
        raw.api = "http".into();
        let message = ApiConfig::from_args(&raw).unwrap_err().to_string();
        assert!(message.starts_with("API is invalid"), "{message}");
        raw.bind_address = "127.0.0.1".into();
        let config = ApiConfig::from_args(&raw).unwrap();
        assert_eq!(config.local_url(), "http://127.0.0.1:3000");
    }

    #[test]
    fn short_or_missing_secrets_are_rejected() {
        let mut raw = api_args();
        raw.jwt_secret = Some("short-secret-value".into());
        let message = ApiConfig::from_args(&raw).unwrap_err().to_string();
        assert!(message.starts_with("JWT_SECRET is invalid"), "{message}");
        assert!(!message.contains("short-secret-value"), "{message}");

        raw.jwt_secret = None;
        let config = ApiConfig::from_args(&raw).unwrap();
        let message = config.require_jwt_secret().unwrap_err().to_string();
        assert!(message.starts_with("JWT_SECRET is missing"), "{message}");

        let mut raw = api_args();
        raw.api_key = Some("too-short-key".into());
        let message = ApiConfig::from_args(&raw).unwrap_err().to_string();
        assert!(message.starts_with("API_KEY is invalid"), "{message}");
        assert!(!message.contains("too-short-key"), "{message}");
    }

    #[test]
    fn bad_port_and_address_are_rejected() {
        for (port, address, key) in [
            ("0", "0.0.0.0", "PORT"),
            ("70000", "0.0.0.0", "PORT"),
            ("3000", "localhost", "BIND_ADDRESS"),
        ] {
            let mut raw = api_args();
            raw.port = port.into();
            raw.bind_address = address.into();
            let message = ApiConfig::from_args(&raw).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{key} is invalid")),
                "{message}"
            );
        }
    }

    #[test]
    fn qualified_names_stay_distinct() {
        let dotted_schema = TableName::parse("\"a.b\".c").unwrap();
        let dotted_table = TableName::parse("a.\"b.c\"").unwrap();
        assert_eq!(dotted_schema.qualified(), "\"a.b\".c");
        assert_eq!(dotted_table.qualified(), "a.\"b.c\"");
        assert_eq!(
            TableName::parse("\"Sales\".orders").unwrap().qualified(),
            "\"Sales\".orders"
        );
    }

    #[test]
    fn unquoted_names_fold_to_lower_case() {
        let table = TableName::parse("Public.Orders").unwrap();
        assert_eq!(table.qualified(), "public.orders");
    }
}
