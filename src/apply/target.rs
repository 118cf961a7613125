//! The MySQL connection: session settings, the checkpoint table and target-table checks.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::statement::{TablePlan, quote_mysql_ident};
use super::value::write_string;
use crate::config::Secret;
use crate::schema::PgType;

/// Table in the target database that records, per journal, the last applied sequence number.
pub const CHECKPOINT_TABLE: &str = "pg_to_mysql_sync_checkpoint";

/// Session settings for every connection:
/// - strict mode, so MySQL rejects a value it would otherwise truncate or zero;
/// - `NO_BACKSLASH_ESCAPES`, which the literal quoting in `value` relies on;
/// - `NO_AUTO_VALUE_ON_ZERO`, so a key value 0 is stored as 0, not replaced by a new
///   auto-increment value;
/// - UTC, so that date-time literals, already in UTC, are not shifted;
/// - utf8mb4, so 4-byte characters arrive intact.
const SESSION_SETUP: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO'",
    "SET SESSION time_zone = '+00:00'",
];

/// Name of the apply lock. Lock names are limited to 64 characters and are server-wide, so it
/// includes the database.
const APPLY_LOCK_NAME: &str = "LEFT(CONCAT('pg-to-mysql-sync:', DATABASE()), 64)";

/// Takes the session-level lock that lets one daemon at a time apply to this database. MySQL
/// releases it when the connection closes. Waits up to 2 s, so that a session of this daemon
/// that is still closing does not count as another daemon. Returns `false` when another
/// session keeps it.
pub(super) async fn take_apply_lock(conn: &mut Conn) -> Result<bool, mysql_async::Error> {
    let acquired: Option<Option<i64>> = conn
        .query_first(format!("SELECT GET_LOCK({APPLY_LOCK_NAME}, 2)"))
        .await?;

    Ok(acquired.flatten() == Some(1))
}

/// Releases the apply lock before the connection closes.
pub(super) async fn release_apply_lock(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!("DO RELEASE_LOCK({APPLY_LOCK_NAME})"))
        .await
}

/// Reads the scale of each MySQL column that receives a `numeric` column: NUMERIC_SCALE for
/// DECIMAL, 0 for integer types. Other target types are not checked.
pub(super) async fn read_target_scales<'a>(
    conn: &mut Conn,
    plans: impl Iterator<Item = &'a mut TablePlan>,
) -> Result<(), mysql_async::Error> {
    for plan in plans {
        let mut sql = format!(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_SCALE FROM information_schema.COLUMNS \
             WHERE {} AND TABLE_NAME = ",
            plan.schema.target_schema_condition()
        );
        write_string(&mut sql, &plan.schema.target_table);
        let columns: Vec<(String, String, Option<u64>)> = conn.query(sql).await?;
        for (name, data_type, scale) in columns {
            plan.set_target_type(&name, &data_type);
            let scale = match data_type.to_ascii_lowercase().as_str() {
                "decimal" => scale,
                "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => Some(0),
                _ => None,
            };
            if let Some(scale) = scale {
                plan.set_target_scale(&name, scale as u32);
            }
        }
    }

    Ok(())
}

/// Marks the plans whose target table has a unique index besides the primary key.
pub(super) async fn read_secondary_unique<'a>(
    conn: &mut Conn,
    plans: impl Iterator<Item = &'a mut TablePlan>,
) -> Result<(), mysql_async::Error> {
    for plan in plans {
        let mut sql = format!(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE {} AND NON_UNIQUE = 0 \
             AND INDEX_NAME <> 'PRIMARY' AND TABLE_NAME = ",
            plan.schema.target_schema_condition()
        );
        write_string(&mut sql, &plan.schema.target_table);
        let count: Option<u64> = conn.query_first(sql).await?;
        plan.set_secondary_unique(count.unwrap_or(0) > 0);
    }

    Ok(())
}

/// Opens a connection with the session settings applied.
pub async fn connect(url: &Secret) -> Result<Conn, mysql_async::Error> {
    let opts = Opts::from_url(url.expose())?;
    // The daemon talks to the address in the URL; switching to a local socket found on the
    // server would bypass what the operator configured.
    // Keepalive probes detect a peer that vanished without closing the connection, such as a
    // failed-over server, which would otherwise leave a query waiting forever.
    let opts = OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .tcp_keepalive(Some(std::time::Duration::from_secs(30)))
        .init(SESSION_SETUP.to_vec());

    Conn::new(opts).await
}

/// Creates the checkpoint table if it is missing.
pub async fn ensure_checkpoint_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
             journal_id CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
             applied_seq BIGINT UNSIGNED NOT NULL,
             updated_at DATETIME(6) NOT NULL
         ) ENGINE=InnoDB",
        quote_mysql_ident(CHECKPOINT_TABLE)
    ))
    .await
}

/// Drops the checkpoint table.
pub async fn drop_checkpoint_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {}",
        quote_mysql_ident(CHECKPOINT_TABLE)
    ))
    .await
}

/// Reads the last applied sequence number of a journal; 0 when nothing was applied.
pub async fn read_checkpoint(conn: &mut Conn, journal_id: &str) -> Result<u64, mysql_async::Error> {
    let mut sql = format!(
        "SELECT applied_seq FROM {} WHERE journal_id = ",
        quote_mysql_ident(CHECKPOINT_TABLE)
    );
    write_string(&mut sql, journal_id);
    let seq: Option<u64> = conn.query_first(sql).await?;

    Ok(seq.unwrap_or(0))
}

/// Like [`read_checkpoint`], but 0 when the checkpoint table does not exist.
pub async fn read_checkpoint_if_present(
    conn: &mut Conn,
    journal_id: &str,
) -> Result<u64, mysql_async::Error> {
    match read_checkpoint(conn, journal_id).await {
        // 1146: no such table.
        Err(mysql_async::Error::Server(error)) if error.code == 1146 => Ok(0),
        result => result,
    }
}

/// The statement that records `applied_seq` inside the apply transaction.
pub(super) fn checkpoint_statement(journal_id: &str, applied_seq: u64) -> String {
    let mut sql = format!(
        "INSERT INTO {} (journal_id, applied_seq, updated_at) VALUES (",
        quote_mysql_ident(CHECKPOINT_TABLE)
    );
    write_string(&mut sql, journal_id);
    sql.push_str(&format!(
        ", {applied_seq}, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE \
         applied_seq = VALUES(applied_seq), updated_at = VALUES(updated_at)"
    ));

    sql
}

/// Reads `max_allowed_packet`, the largest statement the server accepts.
pub(super) async fn max_allowed_packet(conn: &mut Conn) -> Result<usize, mysql_async::Error> {
    let value: Option<u64> = conn.query_first("SELECT @@max_allowed_packet").await?;

    Ok(value.unwrap_or(4 * 1024 * 1024) as usize)
}

/// Checks that every target table exists, is transactional and has every synced column, and
/// that no bit string goes to a BIT column. Returns one message per problem.
pub async fn check_target_tables<'a>(
    conn: &mut Conn,
    plans: impl Iterator<Item = &'a TablePlan>,
) -> Result<Vec<String>, mysql_async::Error> {
    let mut problems = Vec::new();
    for plan in plans {
        let table = &plan.schema.target_table;
        let condition = plan.schema.target_schema_condition();
        let mut sql = format!(
            "SELECT ENGINE FROM information_schema.TABLES WHERE {condition} AND TABLE_NAME = "
        );
        write_string(&mut sql, table);
        let engine: Option<Option<String>> = conn.query_first(sql).await?;
        let Some(engine) = engine else {
            problems.push(format!(
                "the MySQL table `{table}` (for {}) does not exist; create it with the same \
                 columns and primary key",
                plan.schema.name
            ));
            continue;
        };
        if !engine
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"))
        {
            problems.push(format!(
                "the MySQL table `{table}` uses the {} engine, which has no transactions; \
                 convert it with ALTER TABLE `{table}` ENGINE=InnoDB",
                engine.as_deref().unwrap_or("unknown")
            ));
        }

        let mut sql = format!(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE {condition} AND TABLE_NAME = "
        );
        write_string(&mut sql, table);
        let target_columns: Vec<(String, String)> = conn.query(sql).await?;
        for column in &plan.schema.columns {
            let target_type = target_columns
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&column.target))
                .map(|(_, data_type)| data_type.to_ascii_lowercase());
            let Some(target_type) = target_type else {
                problems.push(format!(
                    "the MySQL table `{table}` has no column `{}` (type {} in PostgreSQL); add it",
                    column.target, column.type_display
                ));
                continue;
            };
            // Bit strings are written as text such as '0101', which a BIT column would take
            // as the bytes of the characters '0' and '1', or reject as too long.
            if matches!(column.pg_type, PgType::Bit | PgType::Varbit) && target_type == "bit" {
                problems.push(format!(
                    "the MySQL column `{}` of table `{table}` is BIT, but {} values are synced as \
                     text of 0 and 1; make it VARCHAR with room for every bit",
                    column.target, column.type_display
                ));
            }
        }
    }

    Ok(problems)
}
