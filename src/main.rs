//! The `pg-to-mysql-sync` command: parses flags, sets up logging, then runs one command.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pg_to_mysql_sync::config::{
    ApiArgs, ApiConfig, Config, ConfigError, DEFAULT_DATA_DIR, SettingsArgs,
};
use pg_to_mysql_sync::journal::{DEFAULT_MAX_SEGMENT_BYTES, Journal};
use pg_to_mysql_sync::telemetry::{LogFormat, init_tracing};
use pg_to_mysql_sync::{apply, capture, create, daemon, schema};

mod commands;

/// The version and the git commit it was built from, for `--version`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PG_TO_MYSQL_SYNC_COMMIT"),
    ")"
);

/// Keeps MySQL and MariaDB tables in step with PostgreSQL tables.
#[derive(Debug, Parser)]
#[command(name = "pg-to-mysql-sync", version = VERSION)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: capture changes from PostgreSQL, apply them to MySQL as MODE sets, and
    /// serve the HTTPS API.
    Run {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Install the capture triggers in PostgreSQL and the checkpoint and failed-change tables
    /// in MySQL. Safe to run again, e.g. after changing SYNC_TABLES.
    Setup {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Create missing MySQL tables from the PostgreSQL definitions.
        #[arg(long)]
        create_tables: bool,
        /// Do not copy the existing rows of newly captured tables. By default the daemon
        /// copies them (see the `snapshot` command) when it starts.
        #[arg(long)]
        no_snapshot: bool,
    },
    /// Compare each synced table with its MySQL target and report what would make apply fail
    /// or lose data. Exits with status 1 when there are errors.
    Check {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the capture objects from PostgreSQL and the pg_to_mysql_sync tables from MySQL.
    Teardown {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Drop changes that are captured but not yet synced, and parked changes.
        #[arg(long)]
        force: bool,
    },
    /// Show the running daemon's status, through its API.
    Status {
        #[command(flatten)]
        client: commands::ClientArgs,
    },
    /// Apply everything captured so far, now, through the running daemon's API.
    Sync {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Base URL of the API, when the certificate names a host: e.g. https://sync.example:3000.
        #[arg(long)]
        url: Option<String>,
        /// Apply the journal directly, without a daemon. Fails while a daemon has the DATA_DIR lock.
        #[arg(long)]
        offline: bool,
    },
    /// Copy the existing rows of synced tables into MySQL, consistently with the changes
    /// captured meanwhile. Each target table is emptied first; an interrupted copy resumes.
    /// Runs in this process while no daemon runs, and through the daemon's API otherwise.
    Snapshot {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Base URL of the API, when the certificate names a host: e.g. https://sync.example:3000.
        #[arg(long)]
        url: Option<String>,
        /// Tables as schema.table; every synced table when none is given.
        tables: Vec<String>,
    },
    /// Compare synced tables with MySQL, row by row, and list the keys that differ. Exits
    /// with status 1 when rows differ. Runs in this process while no daemon runs, and
    /// through the daemon's API otherwise.
    Verify {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Base URL of the API, when the certificate names a host: e.g. https://sync.example:3000.
        #[arg(long)]
        url: Option<String>,
        /// Copy the differing rows again from PostgreSQL, and delete rows PostgreSQL lacks.
        #[arg(long)]
        repair: bool,
        /// Most differing keys listed per table.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        max_keys: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Tables as schema.table; every synced table when none is given.
        tables: Vec<String>,
    },
    /// List, retry or discard changes parked in the failed-change log, through the API.
    Failed {
        #[command(flatten)]
        client: commands::ClientArgs,
        #[command(subcommand)]
        action: commands::FailedAction,
    },
    /// Change the running daemon's mode until it restarts, through the API.
    Mode {
        #[command(flatten)]
        client: commands::ClientArgs,
        /// automatic, auto-check or manual.
        mode: String,
    },
    /// Create, list or revoke API keys, stored as SHA-256 digests in DATA_DIR.
    Keys {
        /// Directory of the journal and the key file.
        #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
        data_dir: std::path::PathBuf,
        #[command(subcommand)]
        action: commands::KeysAction,
    },
    /// Print a JWT for API_KEY, signed with JWT_SECRET, for calling the API with curl.
    Token {
        /// Directory of the journal and the key file.
        #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> ExitCode {
    // `.env` first, so that real environment variables and flags override it.
    let env_file = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if let Err(error) = env_file
        && !error.not_found()
    {
        eprintln!("error: {}", describe_env_file_error(&error));
        return ExitCode::from(2);
    }

    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run_command(cli.command));
    // Dropping the runtime would wait for every blocking task, such as a journal fsync stuck
    // on a failing disk. A stop that abandoned its work must not hang there.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<ConfigError>() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { settings, api } => {
            let config = Config::from_args(&settings)?;
            let api = ApiConfig::from_args(&api)?;
            daemon::run(config, api, VERSION).await
        }
        Command::Setup {
            settings,
            create_tables,
            no_snapshot,
        } => setup(&Config::from_args(&settings)?, create_tables, !no_snapshot).await,
        Command::Check { settings, json } => check(&Config::from_args(&settings)?, json).await,
        Command::Teardown { settings, force } => {
            teardown(&Config::from_args(&settings)?, force).await
        }
        Command::Status { client } => commands::status(&client).await,
        Command::Sync {
            settings,
            api,
            url,
            offline,
        } => {
            if offline {
                commands::sync_offline(&Config::from_args(&settings)?).await
            } else {
                let api = ApiConfig::from_args(&api)?;
                commands::sync(&api, &settings.data_dir, url.as_deref()).await
            }
        }
        Command::Snapshot {
            settings,
            api,
            url,
            tables,
        } => commands::snapshot(&Config::from_args(&settings)?, &api, url.as_deref(), tables).await,
        Command::Verify {
            settings,
            api,
            url,
            repair,
            max_keys,
            json,
            tables,
        } => {
            let options = pg_to_mysql_sync::verify::VerifyOptions {
                repair,
                max_keys: max_keys as usize,
            };
            commands::verify(
                &Config::from_args(&settings)?,
                &api,
                url.as_deref(),
                tables,
                options,
                json,
            )
            .await
        }
        Command::Failed { client, action } => commands::failed(&client, action).await,
        Command::Mode { client, mode } => commands::set_mode(&client, &mode).await,
        Command::Keys { data_dir, action } => commands::keys(&data_dir, action),
        Command::Token { data_dir, api } => {
            commands::token(&data_dir, &ApiConfig::from_args(&api)?)
        }
    }
}

/// Converts a MySQL error for the command line, without server text that can quote row values.
fn mysql_failure(error: mysql_async::Error) -> anyhow::Error {
    anyhow::anyhow!(apply::describe_mysql_error(&error))
}

/// Describes a `.env` problem without quoting the file, whose lines can hold passwords.
fn describe_env_file_error(error: &dotenvy::Error) -> String {
    match error {
        dotenvy::Error::LineParse(_, index) => format!(
            ".env in the working directory is invalid at character {index} of a line; check its \
             quotes (a value with double quotes inside goes in single quotes)"
        ),
        dotenvy::Error::Io(source) => {
            format!(".env in the working directory cannot be read: {source}")
        }
        other => format!(".env in the working directory is invalid: {other}"),
    }
}

async fn connect_pg(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    Ok(capture::connect_pg(&config.pg_url).await?.client)
}

async fn setup(config: &Config, create_tables: bool, snapshot: bool) -> anyhow::Result<()> {
    let mut pg = connect_pg(config).await?;
    let schemas = schema::load_synced_schemas(&pg, config).await?;

    let mut mysql = apply::connect(&config.mysql_url)
        .await
        .map_err(mysql_failure)
        .context("connect to MySQL")?;
    if create_tables {
        let flavor = create::Flavor::detect(&mut mysql)
            .await
            .map_err(mysql_failure)
            .context("read the MySQL version")?;
        for schema in &schemas {
            if create::table_exists(&mut mysql, schema)
                .await
                .map_err(mysql_failure)
                .context("look for the MySQL table")?
            {
                continue;
            }
            let (sql, notes) = create::create_table(&pg, &mut mysql, schema, flavor).await?;
            println!("created the MySQL table for {}:\n{sql}", schema.name);
            for note in notes {
                println!("note: {note}");
            }
        }
    }
    let plans: Vec<apply::TablePlan> = schemas.iter().cloned().map(apply::TablePlan::new).collect();
    let problems = apply::check_target_tables(&mut mysql, plans.iter())
        .await
        .map_err(mysql_failure)
        .context("check the MySQL tables")?;
    if !problems.is_empty() {
        anyhow::bail!("the MySQL target is not ready:\n{}", problems.join("\n"));
    }
    let report = pg_to_mysql_sync::check::check(&pg, &mut mysql, &schemas).await?;
    if !report.findings.is_empty() {
        print!("{}", report.render());
    }
    let errors = report.count(pg_to_mysql_sync::check::Severity::Error);
    if errors > 0 {
        anyhow::bail!(
            "the check found {errors} problems that would make apply halt or change values; \
             fix them and run setup again"
        );
    }
    apply::ensure_checkpoint_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context("create the checkpoint table in MySQL")?;
    apply::ensure_failed_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context("create the failed-change table in MySQL")?;
    apply::ensure_snapshot_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context("create the snapshot table in MySQL")?;

    let report = capture::install(&mut pg, &schemas).await?;
    for table in &report.tables {
        println!("capturing {table}");
    }
    for relation in &report.removed {
        println!("removed capture triggers from {relation} (not in SYNC_TABLES)");
    }
    if snapshot && !report.new_tables.is_empty() {
        // Requested after the triggers exist, so the copy cannot miss a change.
        let names: Vec<String> = report.new_tables.iter().map(|t| t.qualified()).collect();
        apply::request_snapshots(&mut mysql, &names)
            .await
            .map_err(mysql_failure)
            .context("record the pending snapshots in MySQL")?;
        println!(
            "newly captured: {}. The daemon copies their existing rows when it starts (in the \
             automatic and auto-check modes), or run `pg-to-mysql-sync snapshot` now",
            names.join(", ")
        );
    }
    if !report.new_tables.is_empty() {
        println!(
            "restart a running daemon now: it applies changes only to the tables it read at \
             start, and halts at the first change to a new table until it restarts"
        );
    }
    println!(
        "setup complete: {} tables; checkpoint table `{}` ready in MySQL",
        report.tables.len(),
        apply::CHECKPOINT_TABLE
    );

    Ok(())
}

async fn check(config: &Config, json: bool) -> anyhow::Result<()> {
    let pg = connect_pg(config).await?;
    let schemas = schema::load_synced_schemas(&pg, config).await?;
    let mut mysql = apply::connect(&config.mysql_url)
        .await
        .map_err(mysql_failure)
        .context("connect to MySQL")?;
    let report = pg_to_mysql_sync::check::check(&pg, &mut mysql, &schemas).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    let errors = report.count(pg_to_mysql_sync::check::Severity::Error);
    if errors > 0 {
        anyhow::bail!("{errors} problems would make apply halt or change values; fix them first");
    }

    Ok(())
}

async fn teardown(config: &Config, force: bool) -> anyhow::Result<()> {
    let mut mysql = apply::connect(&config.mysql_url)
        .await
        .map_err(mysql_failure)
        .context("connect to MySQL")?;

    // The journal's position lives in the checkpoint table that teardown drops, so a journal
    // kept after it would be replayed from the start by the next daemon. Check that everything
    // in it is applied, then remove it. Opening it takes the directory lock, which also stops
    // a teardown under a running daemon.
    let journal = if config.data_dir.join("journal.id").exists() {
        let journal = Journal::open(&config.data_dir, DEFAULT_MAX_SEGMENT_BYTES)
            .with_context(|| format!("open the journal in {}", config.data_dir.display()))?;
        let applied = apply::read_checkpoint_if_present(&mut mysql, journal.id())
            .await
            .map_err(mysql_failure)
            .context("read the checkpoint")?;
        let journaled = journal.recovery().next_seq - 1;
        if applied < journaled && !force {
            anyhow::bail!(
                "the journal in {} holds {} not yet applied to MySQL; run the daemon \
                 until it is caught up, or pass --force to drop them",
                config.data_dir.display(),
                pg_to_mysql_sync::telemetry::count_of(journaled - applied, "change", "changes")
            );
        }
        let parked = apply::count_failed_if_present(&mut mysql, journal.id())
            .await
            .map_err(mysql_failure)
            .context("count the failed changes")?;
        if parked > 0 && !force {
            anyhow::bail!(
                "the failed-change log holds {} that never reached MySQL; retry \
                 or discard them with the `failed` command, or pass --force to drop them",
                pg_to_mysql_sync::telemetry::count_of(parked, "change", "changes")
            );
        }
        Some(journal)
    } else {
        None
    };

    // Check PostgreSQL first, then remove the MySQL tables, whose rights are the likelier to
    // be missing, and only then the capture schema: a failure leaves capture in place, and
    // teardown can run again.
    let mut pg = connect_pg(config).await?;
    let pending = capture::count_pending(&pg).await?;
    if pending > 0 && !force {
        return Err(capture::InstallError::PendingChanges(pending).into());
    }
    let drop_hint = "the MySQL user needs the DROP privilege on the target database for teardown";
    apply::drop_checkpoint_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context(drop_hint)
        .context("drop the checkpoint table")?;
    println!("removed table `{}` from MySQL", apply::CHECKPOINT_TABLE);
    apply::drop_failed_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context(drop_hint)
        .context("drop the failed-change table")?;
    println!("removed table `{}` from MySQL", apply::FAILED_TABLE);
    apply::drop_snapshot_table(&mut mysql)
        .await
        .map_err(mysql_failure)
        .context(drop_hint)
        .context("drop the snapshot table")?;
    println!("removed table `{}` from MySQL", apply::SNAPSHOT_TABLE);
    capture::uninstall(&mut pg, force).await?;
    println!("removed schema {} from PostgreSQL", capture::CAPTURE_SCHEMA);
    if let Some(journal) = journal {
        journal
            .remove_files()
            .with_context(|| format!("remove the journal in {}", config.data_dir.display()))?;
        println!("removed the journal in {}", config.data_dir.display());
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn environment_keys(command: &clap::Command, keys: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(key) = arg.get_env() {
                keys.push(key.to_string_lossy().into_owned());
            }
        }
        for subcommand in command.get_subcommands() {
            environment_keys(subcommand, keys);
        }
    }

    #[test]
    fn env_example_documents_every_key() {
        // RUST_LOG is read by the log filter, not by clap.
        let mut keys = vec!["RUST_LOG".to_string()];
        environment_keys(&Cli::command(), &mut keys);
        assert!(keys.len() >= 7, "{keys:?}");
        let example = include_str!("../.env.example");
        for key in keys {
            let documented = example
                .lines()
                .any(|line| line.starts_with(&format!("{key}=")));
            assert!(documented, ".env.example does not document {key}");
        }
    }

    #[test]
    fn version_names_the_commit() {
        assert!(super::VERSION.contains("(commit "), "{}", super::VERSION);
    }
}
