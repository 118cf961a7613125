//! Installing and removing the capture objects in PostgreSQL.
//!
//! Everything lives in the schema [`CAPTURE_SCHEMA`]: the change-log table and one trigger
//! function per synced table and event. The triggers are statement-level and read the
//! statement's transition tables, because one trigger call per statement costs far less than
//! one per row on multi-row statements. Each writes one change-log row per changed row and then
//! calls `pg_notify` without a payload, so row size never matters to the notification.
//!
//! An UPDATE statement is recorded as a delete of every old key that no new row has, followed
//! by the new image of every updated row. Applied in that order, MySQL ends in the same state as
//! PostgreSQL after the statement, also when the statement changed primary keys.
//!
//! The functions run as their owner (`SECURITY DEFINER`, with a fixed `search_path`), so roles
//! that write to synced tables need no rights on the change log, and they pin the settings that
//! shape `to_json` output: hex `bytea`, shortest exact floats, UTC time stamps and ISO 8601
//! intervals.

use tokio_postgres::{Client, GenericClient};

use crate::config::{TableName, quote_pg_ident};
use crate::schema::{Column, PgType, TableSchema};

/// Schema that contains the capture objects.
pub const CAPTURE_SCHEMA: &str = "pg2mysql_sync";
/// `LISTEN` channel for the wake-up notifications.
pub const NOTIFY_CHANNEL: &str = "pg_to_mysql_sync";
/// Name prefix of the capture triggers on synced tables.
const TRIGGER_PREFIX: &str = "pg_to_mysql_sync_";
/// Transaction-level advisory lock key that lets one writing transaction at a time notify.
///
/// PostgreSQL serializes the commits of all transactions that called `pg_notify`, through the
/// flush of each one's WAL, which halves the commit rate of concurrent small transactions. A
/// transaction that finds the lock taken skips the notification: the one holding it wakes the
/// daemon, and the daemon's short poll interval bounds the delay of any change that misses it.
const NOTIFY_LOCK_KEY: i64 = 0x7067_746f_6d79_0003;
/// Advisory lock key that serializes concurrent `setup` runs.
const SETUP_LOCK_KEY: i64 = 0x7067_746f_6d79_0001;

const EVENTS: [&str; 4] = ["insert", "update", "delete", "truncate"];

/// Errors while installing or checking capture objects.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A statement failed.
    #[error("failed to {action}")]
    Sql {
        /// Action that failed.
        action: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Capture objects are missing or do not match the configuration.
    #[error("{0}")]
    NotInstalled(String),
    /// A table cannot be captured as it is.
    #[error("{0}")]
    Unsupported(String),
    /// Teardown would drop changes that the daemon has not drained.
    #[error(
        "the change log still holds {} that were not synced; run the daemon until the \
         backlog is empty, or pass --force to drop them",
        crate::telemetry::count_of(.0.unsigned_abs(), "change", "changes")
    )]
    PendingChanges(i64),
}

fn sql_error(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> InstallError {
    let action = action.into();
    move |source| InstallError::Sql { action, source }
}

/// Changes made by `install`.
#[derive(Debug, Default)]
pub struct InstallReport {
    /// Tables whose triggers were (re)created.
    pub tables: Vec<TableName>,
    /// Tables that lost their triggers because they are no longer configured.
    pub removed: Vec<String>,
    /// Tables that had no capture triggers before: their existing rows need a snapshot.
    pub new_tables: Vec<TableName>,
}

/// Creates or updates the capture objects for `tables`, in one transaction. Idempotent.
/// Triggers on tables that are no longer configured are removed.
pub async fn install(
    client: &mut Client,
    tables: &[TableSchema],
) -> Result<InstallReport, InstallError> {
    let tx = client
        .transaction()
        .await
        .map_err(sql_error("begin the setup transaction"))?;
    // DROP TRIGGER IF EXISTS reports missing triggers as notices, which are noise here.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(sql_error("set client_min_messages"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK_KEY])
        .await
        .map_err(sql_error("take the setup lock"))?;
    tx.batch_execute(&change_log_ddl())
        .await
        .map_err(sql_error("create the change log"))?;

    // The trigger functions call PostGIS by its schema, quoted as an identifier.
    let postgis_schema = postgis_schema(&tx)
        .await
        .map_err(sql_error("look up the PostGIS schema"))?;

    let captured_before: Vec<String> = installed_triggers(&tx)
        .await?
        .into_iter()
        .map(|(relation, _)| relation)
        .collect();
    let mut report = InstallReport::default();
    for table in tables {
        if !captured_before.contains(&table.name.quoted()) {
            report.new_tables.push(table.name.clone());
        }
        let substituted_count = table
            .columns
            .iter()
            .filter(|c| !c.pg_type.is_exact_in_to_json())
            .count();
        // A keyless table's old row goes through json_build_object, which takes 100 arguments.
        if table.keyless && table.columns.len() > MAX_SUBSTITUTED_COLUMNS {
            return Err(InstallError::Unsupported(format!(
                "table {} has no primary key and {} columns; rows are matched on all columns, \
                 which works for at most {MAX_SUBSTITUTED_COLUMNS}. Add a primary key",
                table.name,
                table.columns.len()
            )));
        }
        if substituted_count > MAX_SUBSTITUTED_COLUMNS {
            return Err(InstallError::Unsupported(format!(
                "table {} has {substituted_count} columns of types json, jsonb, money, arrays or geometries; \
                 at most {MAX_SUBSTITUTED_COLUMNS} are supported, so remove the table from \
                 SYNC_TABLES or split it",
                table.name
            )));
        }
        let oid: u32 = tx
            .query_one("SELECT $1::text::regclass::oid", &[&table.name.quoted()])
            .await
            .map_err(sql_error(format!("look up table {}", table.name)))?
            .get(0);
        tx.batch_execute(&trigger_ddl(table, oid, postgis_schema.as_deref()))
            .await
            .map_err(sql_error(format!(
                "install capture triggers on {}",
                table.name
            )))?;
        report.tables.push(table.name.clone());
    }

    let configured: Vec<String> = tables.iter().map(|t| t.name.quoted()).collect();
    for (relation, trigger) in installed_triggers(&tx).await? {
        if !configured.contains(&relation) {
            let statement = format!(
                "DROP TRIGGER IF EXISTS {} ON {relation}",
                quote_pg_ident(&trigger)
            );
            tx.batch_execute(&statement)
                .await
                .map_err(sql_error(format!("remove capture trigger from {relation}")))?;
            if !report.removed.contains(&relation) {
                report.removed.push(relation);
            }
        }
    }
    tx.commit()
        .await
        .map_err(sql_error("commit the setup transaction"))?;

    Ok(report)
}

/// Returns the schema of the PostGIS extension, quoted as an identifier, if it is installed.
pub(crate) async fn postgis_schema(
    client: &impl GenericClient,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT quote_ident(n.nspname) FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis'",
            &[],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Counts the changes waiting in the change log; 0 when capture is not installed.
pub async fn count_pending(client: &impl GenericClient) -> Result<i64, InstallError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{CAPTURE_SCHEMA}.change_log")],
        )
        .await
        .map_err(sql_error("look up the change log"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            &format!("SELECT count(*) FROM {CAPTURE_SCHEMA}.change_log"),
            &[],
        )
        .await
        .map_err(sql_error("count the change log"))?
        .get(0))
}

/// Removes all capture objects. Fails while the change log contains changes, unless `force`.
pub async fn uninstall(client: &mut Client, force: bool) -> Result<(), InstallError> {
    let tx = client
        .transaction()
        .await
        .map_err(sql_error("begin the teardown transaction"))?;
    if !force {
        let pending = count_pending(&tx).await?;
        if pending > 0 {
            return Err(InstallError::PendingChanges(pending));
        }
    }
    tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {CAPTURE_SCHEMA} CASCADE"))
        .await
        .map_err(sql_error("drop the capture schema"))?;
    tx.commit()
        .await
        .map_err(sql_error("commit the teardown transaction"))
}

/// Checks that the capture objects match the configuration, so that no change is captured for a
/// table the daemon does not apply and no configured table goes uncaptured.
pub async fn verify(client: &Client, tables: &[TableName]) -> Result<(), InstallError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{CAPTURE_SCHEMA}.change_log")],
        )
        .await
        .map_err(sql_error("look up the change log"))?
        .get(0);
    if !exists {
        return Err(InstallError::NotInstalled(
            "capture is not installed in PostgreSQL; run `pg-to-mysql-sync setup` first".into(),
        ));
    }

    let installed = installed_triggers(client).await?;
    for table in tables {
        let quoted = table.quoted();
        let count = installed
            .iter()
            .filter(|(relation, _)| relation == &quoted)
            .count();
        if count != EVENTS.len() {
            return Err(InstallError::NotInstalled(format!(
                "capture triggers are missing on table {table}; run `pg-to-mysql-sync setup`"
            )));
        }
    }
    let configured: Vec<String> = tables.iter().map(TableName::quoted).collect();
    if let Some((relation, _)) = installed.iter().find(|(r, _)| !configured.contains(r)) {
        return Err(InstallError::NotInstalled(format!(
            "table {relation} has capture triggers but is not in SYNC_TABLES; add it, or run \
             `pg-to-mysql-sync setup` to remove its triggers"
        )));
    }

    let stray: Vec<String> = client
        .query(
            &format!(
                "SELECT DISTINCT table_name FROM {CAPTURE_SCHEMA}.change_log \
                 WHERE NOT (table_name = ANY($1))"
            ),
            &[&tables.iter().map(TableName::qualified).collect::<Vec<_>>()],
        )
        .await
        .map_err(sql_error("check the change log for unconfigured tables"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(table) = stray.first() {
        return Err(InstallError::NotInstalled(format!(
            "the change log holds changes of table {table}, which is not in SYNC_TABLES; add it \
             back until they are synced, or delete them with DELETE FROM \
             {CAPTURE_SCHEMA}.change_log WHERE table_name = '{}'",
            table.replace('\'', "''")
        )));
    }

    Ok(())
}

/// Lists (quoted relation name, trigger name) of every capture trigger.
async fn installed_triggers(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<(String, String)>, InstallError> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), t.tgname::text \
             FROM pg_catalog.pg_trigger t \
             JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
             WHERE pn.nspname = $1 AND NOT t.tgisinternal",
            &[&CAPTURE_SCHEMA],
        )
        .await
        .map_err(sql_error("list capture triggers"))?;

    // quote_ident leaves simple names bare; compare in the always-quoted form.
    Ok(rows
        .iter()
        .map(|row| {
            let relation: String = row.get(0);
            (requote(&relation), row.get(1))
        })
        .collect())
}

/// Turns `quote_ident(schema) || '.' || quote_ident(table)` into the always-quoted form.
fn requote(relation: &str) -> String {
    match TableName::parse(relation) {
        Ok(name) => name.quoted(),
        Err(_) => relation.to_string(),
    }
}

fn change_log_ddl() -> String {
    // The change log is a queue: rows are inserted by triggers and deleted once journaled, so
    // autovacuum should clean it often rather than wait for 20% dead rows.
    format!(
        "CREATE SCHEMA IF NOT EXISTS {CAPTURE_SCHEMA};
         CREATE TABLE IF NOT EXISTS {CAPTURE_SCHEMA}.change_log (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             txid bigint NOT NULL,
             table_name text NOT NULL,
             op \"char\" NOT NULL,
             new_row json,
             old_key json,
             json_text json
         ) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
         ALTER TABLE {CAPTURE_SCHEMA}.change_log ADD COLUMN IF NOT EXISTS json_text json;
         COMMENT ON TABLE {CAPTURE_SCHEMA}.change_log IS
             'Changes captured by pg-to-mysql-sync, deleted once they are in its journal';"
    )
}

/// Maximum number of columns of one table whose value the trigger sends in `json_text` (see
/// [`captured_value_expression`]): `json_build_object` takes at most 100 arguments, a name and
/// a value per column.
const MAX_SUBSTITUTED_COLUMNS: usize = 50;

/// Builds the SQL expression of a column value for a JSON object, in the form the apply side
/// expects where `to_json` of the row is not exact:
/// - `json` and `jsonb` values are sent as their text, so that a JSON `null` document stays
///   distinct from SQL NULL, which `to_json` of a row would write the same way;
/// - `money` is sent as `numeric`, because `to_json` writes it in the format of
///   `lc_monetary`, currency symbol and group separators included;
/// - an array whose lower bounds are all 1 is sent as `to_json` writes it. Any other array
///   is sent as its dimensions (`[0:2]`), a JSON string that apply rejects, because a JSON
///   array would silently drop the bounds.
pub(crate) fn captured_value_expression(
    column: &Column,
    alias: &str,
    postgis_schema: Option<&str>,
) -> String {
    let value = format!("{alias}.{}", quote_pg_ident(&column.name));
    match column.pg_type {
        PgType::Json | PgType::Jsonb => format!("{value}::text"),
        PgType::Money => format!("{value}::numeric"),
        // The SRID and the well-known binary, exact to the bit; PostGIS functions live in the
        // extension's schema, which the trigger's search_path leaves out.
        PgType::Geometry | PgType::Geography => {
            let postgis = postgis_schema.unwrap_or("public");
            format!(
                "CASE WHEN {value} IS NULL THEN NULL ELSE json_build_array(\
                 {postgis}.ST_SRID({value}), encode({postgis}.ST_AsBinary({value}), 'hex')) END"
            )
        }
        // array_dims is NULL for an empty array, whose bounds need no check. The pattern
        // matches `[1:n]` per dimension. `[[]` and `[]]` avoid backslashes, whose meaning in a
        // literal depends on standard_conforming_strings.
        PgType::Array => format!(
            "CASE WHEN coalesce(array_dims({value}), '') ~ '^([[]1:[0-9]+[]])*$' \
             THEN to_json({value}) ELSE to_json(array_dims({value})) END"
        ),
        _ => value,
    }
}

/// Builds the trigger functions and triggers of one table.
///
/// Row images come from `to_json` of the transition-table row. For tables with columns where
/// `to_json` is not exact (json, jsonb, money and arrays), the trigger also writes `json_text`,
/// an object of those columns' values in the form [`captured_value_expression`] gives. Capture
/// puts each in place of the column's value in the row image before journaling (see the drain
/// module). Old keys are built from the same expressions, so a key compares equal in both.
fn trigger_ddl(table: &TableSchema, oid: u32, postgis_schema: Option<&str>) -> String {
    let relation = table.name.quoted();
    let table_literal = quote_literal(&table.name.qualified());
    let key_json = |alias: &str| {
        let pairs: Vec<String> = table
            .key_columns()
            .map(|c| {
                format!(
                    "{}, {}",
                    quote_literal(&c.name),
                    captured_value_expression(c, alias, postgis_schema)
                )
            })
            .collect();
        format!("json_build_object({})", pairs.join(", "))
    };
    let substituted_columns: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !c.pg_type.is_exact_in_to_json())
        .map(|c| {
            format!(
                "{}, {}",
                quote_literal(&c.name),
                captured_value_expression(c, "n", postgis_schema)
            )
        })
        .collect();
    let (json_text_column, json_text_value) = if substituted_columns.is_empty() {
        ("", String::new())
    } else {
        (
            ", json_text",
            format!(", json_build_object({})", substituted_columns.join(", ")),
        )
    };
    let key_match: Vec<String> = table
        .key_columns()
        .map(|c| format!("n.{0} = o.{0}", quote_pg_ident(&c.name)))
        .collect();
    let insert_into = format!("INSERT INTO {CAPTURE_SCHEMA}.change_log (txid, table_name, op,");

    let insert_body = format!(
        "{insert_into} new_row{json_text_column})
         SELECT capture_xid, {table_literal}, 'I', to_json(n.*){json_text_value} FROM new_rows n;"
    );
    // A keyless table's row is its values, so an update removes each old row and inserts each
    // new one; the rows cannot be paired, and an unchanged row must not be inserted twice.
    let vanished = if table.keyless {
        String::new()
    } else {
        format!(
            "WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE {})",
            key_match.join(" AND ")
        )
    };
    let update_body = format!(
        "{insert_into} old_key)
         SELECT capture_xid, {table_literal}, 'D', {old_key} FROM old_rows o
         {vanished};
         {insert_into} new_row{json_text_column})
         SELECT capture_xid, {table_literal}, 'U', to_json(n.*){json_text_value} FROM new_rows n;",
        old_key = key_json("o"),
    );
    let delete_body = format!(
        "{insert_into} old_key)
         SELECT capture_xid, {table_literal}, 'D', {old_key} FROM old_rows o;",
        old_key = key_json("o"),
    );
    let truncate_body =
        format!("{insert_into} new_row) VALUES (capture_xid, {table_literal}, 'T', NULL);");

    let mut ddl = String::new();
    for (event, body, referencing) in [
        ("insert", insert_body, "REFERENCING NEW TABLE AS new_rows"),
        (
            "update",
            update_body,
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        ),
        ("delete", delete_body, "REFERENCING OLD TABLE AS old_rows"),
        ("truncate", truncate_body, ""),
    ] {
        let function = format!(
            "{CAPTURE_SCHEMA}.{}",
            quote_pg_ident(&format!("capture_{oid}_{event}"))
        );
        let trigger = quote_pg_ident(&format!("{TRIGGER_PREFIX}{event}"));
        let tag = dollar_tag(&body);
        ddl.push_str(&format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
             LANGUAGE plpgsql SECURITY DEFINER
             SET search_path = pg_catalog, pg_temp
             SET bytea_output = 'hex'
             SET extra_float_digits = 1
             SET \"TimeZone\" = 'UTC'
             SET intervalstyle = 'iso_8601'
             AS {tag}
             #variable_conflict use_variable
             DECLARE
                 capture_xid bigint := txid_current();
             BEGIN
                 {body}
                 IF FOUND AND pg_try_advisory_xact_lock({NOTIFY_LOCK_KEY}) THEN
                     PERFORM pg_notify({channel}, '');
                 END IF;
                 RETURN NULL;
             END
             {tag};
             DROP TRIGGER IF EXISTS {trigger} ON {relation};
             CREATE TRIGGER {trigger} AFTER {event_upper} ON {relation} {referencing}
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n",
            channel = quote_literal(NOTIFY_CHANNEL),
            event_upper = event.to_uppercase(),
        ));
    }

    ddl
}

/// Quotes a PostgreSQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Picks a dollar-quote tag that does not occur in the function body; table and column names
/// are part of the body, and a name could contain the plain tag.
fn dollar_tag(body: &str) -> String {
    let mut tag = "$capture$".to_string();
    let mut counter = 0;
    while body.contains(&tag) {
        counter += 1;
        tag = format!("$capture{counter}$");
    }

    tag
}
