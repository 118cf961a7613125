//! The mapping file: another MySQL table and database, renamed and excluded columns, and a
//! type override.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::{Databases, Pipeline};

#[tokio::test]
async fn mapped_table_syncs_to_renamed_target() {
    let databases = Databases::create("mapping").await;
    databases
        .create_tables(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric(12,2), secret text, \
             \"Note\" text, note text, UNIQUE (\"Note\"))",
            "",
        )
        .await;
    let archive = format!("{}_archive", databases.name);
    let mut admin = databases.mysql().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{archive}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
        ))
        .await
        .unwrap();

    let mut pipeline = Pipeline::new(&databases, "public.orders");
    let mapping = pipeline.dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        format!(
            "# orders go to the archive database\n\
             [tables.\"public.orders\"]\n\
             table = \"orders_copy\"\n\
             database = \"{archive}\"\n\
             exclude = [\"secret\"]\n\
             rename = {{ total = \"amount\", Note = \"note_title\" }}\n\
             types = {{ total = \"DECIMAL(14,2)\" }}\n"
        ),
    )
    .unwrap();
    pipeline.set("MAPPING_FILE", mapping.to_str().unwrap());
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("CREATE TABLE `{archive}`.`orders_copy`")),
        "{stdout}"
    );
    assert!(stdout.contains("`amount` DECIMAL(14,2)"), "{stdout}");
    assert!(
        stdout.contains("UNIQUE KEY `orders_Note_key` (`note_title`)"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
    let output = pipeline.run_cli(&["check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO orders VALUES (1, 10.50, 'hidden', 'Title', 'body'), (2, NULL, 'x', NULL, NULL);
         UPDATE orders SET total = 11.25, secret = 'still hidden' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;",
    )
    .await
    .unwrap();
    databases
        .wait_until_equal(
            "SELECT id::text, total::text, \"Note\", note FROM orders ORDER BY id",
            &format!(
                "SELECT id, amount, note_title, note FROM `{archive}`.orders_copy ORDER BY id"
            ),
            Duration::from_secs(30),
        )
        .await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    admin
        .query_drop(format!("DROP DATABASE `{archive}`"))
        .await
        .unwrap();
    databases.drop_all().await;
}

#[tokio::test]
async fn mapping_errors_name_file_and_line() {
    let databases = Databases::create("mappingbad").await;
    databases
        .create_tables(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric(12,2))",
            "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(12,2)) ENGINE=InnoDB",
        )
        .await;
    let mut pipeline = Pipeline::new(&databases, "public.orders");
    let mapping = pipeline.dir.path().join("mapping.toml");
    pipeline.set("MAPPING_FILE", mapping.to_str().unwrap());
    for (text, expected) in [
        (
            "[tables.\"public.orders\"]\nrename = { totl = \"amount\" }\n",
            ":2: table public.orders has no column `totl`",
        ),
        (
            "[tables.\"public.orders\"]\nexclude = [\"id\"]\n",
            "part of the primary key",
        ),
        ("[tables.\"public.orders\"\n", "invalid TOML"),
        (
            "[tables.\"public.orders\"]\nrename = { total = \"ID\" }\n",
            "would both be the MySQL column `ID`",
        ),
    ] {
        std::fs::write(&mapping, text).unwrap();
        let output = pipeline.run_cli(&["setup"]);
        assert!(!output.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("mapping.toml"), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    databases.drop_all().await;
}
