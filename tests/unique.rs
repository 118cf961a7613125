//! Target tables with unique indexes besides the primary key: a change never updates a row
//! with another primary key.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::{Databases, Pipeline};

const USERS_PG: &str =
    "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text)";
const USERS_MYSQL: &str = "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, \
     name LONGTEXT, UNIQUE KEY users_email (email)) ENGINE=InnoDB";
const USERS_PG_SELECT: &str = "SELECT id::text, email, name FROM users ORDER BY id";
const USERS_MYSQL_SELECT: &str = "SELECT id, email, name FROM users ORDER BY id";

#[tokio::test]
async fn unique_value_swap_in_one_transaction_arrives() {
    let databases = Databases::create("uniqueswap").await;
    databases.create_tables(USERS_PG, USERS_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.users");
    pipeline.setup();
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO users VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bob')",
    )
    .await
    .unwrap();
    databases
        .wait_until_equal(USERS_PG_SELECT, USERS_MYSQL_SELECT, Duration::from_secs(30))
        .await;
    pg.batch_execute(
        "BEGIN;
         UPDATE users SET email = 'swap@example.com' WHERE id = 1;
         UPDATE users SET email = 'a@example.com' WHERE id = 2;
         UPDATE users SET email = 'b@example.com' WHERE id = 1;
         COMMIT;
         UPDATE users SET id = 3 WHERE id = 2;
         INSERT INTO users VALUES (4, 'd@example.com', NULL);
         DELETE FROM users WHERE id = 4;
         INSERT INTO users VALUES (4, 'a-new@example.com', 'Dee');",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(USERS_PG_SELECT, USERS_MYSQL_SELECT, Duration::from_secs(30))
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][1].as_deref(), Some("b@example.com"));
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn unique_clash_halts_instead_of_updating_another_row() {
    let databases = Databases::create("uniqueclash").await;
    databases.create_tables(USERS_PG, USERS_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.users");
    pipeline.setup();
    // A row that only MySQL has, holding the unique value that PostgreSQL will use.
    let mut mysql = databases.mysql().await;
    mysql
        .query_drop("INSERT INTO users VALUES (99, 'x@example.com', 'only in MySQL')")
        .await
        .unwrap();
    let mut daemon = pipeline.start();

    databases
        .pg()
        .await
        .batch_execute("INSERT INTO users VALUES (5, 'x@example.com', 'from PostgreSQL')")
        .await
        .unwrap();
    daemon
        .wait_for_log("apply halted", Duration::from_secs(30))
        .await;
    assert!(
        daemon.log().contains("MySQL error 1062"),
        "{}",
        daemon.log()
    );
    // INSERT … ON DUPLICATE KEY UPDATE would have overwritten row 99.
    let rows = databases
        .mysql_rows("SELECT id, email, name FROM users ORDER BY id")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            Some("99".to_string()),
            Some("x@example.com".to_string()),
            Some("only in MySQL".to_string())
        ]]
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}
