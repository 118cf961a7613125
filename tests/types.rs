//! Column types beyond the basic ones: each arrives exactly, or is rejected by name.

use std::time::Duration;

use crate::support::{Databases, Pipeline, Rows};

const CONVERGE: Duration = Duration::from_secs(30);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const SCALARS_PG: &str = "CREATE EXTENSION citext;
    CREATE EXTENSION hstore;
    CREATE TYPE mood AS ENUM ('sad', 'ok');
    CREATE DOMAIN short_span AS interval CHECK (VALUE < '1000 years');
    CREATE TABLE scalars (
        id serial PRIMARY KEY,
        c_small smallserial, c_big bigserial,
        c_citext citext, c_money money, c_mood mood,
        c_time time, c_timetz timetz, c_interval interval, c_span short_span,
        c_bit bit(4), c_varbit varbit,
        c_inet inet, c_cidr cidr, c_mac macaddr, c_mac8 macaddr8,
        c_xml xml, c_tsv tsvector, c_hstore hstore)";
const SCALARS_MYSQL: &str = "CREATE TABLE scalars (
        id INT PRIMARY KEY,
        c_small SMALLINT, c_big BIGINT,
        c_citext VARCHAR(50), c_money DECIMAL(19,2), c_mood VARCHAR(20),
        c_time TIME(6), c_timetz VARCHAR(24), c_interval VARCHAR(64), c_span VARCHAR(64),
        c_bit VARCHAR(4), c_varbit VARCHAR(200),
        c_inet VARCHAR(43), c_cidr VARCHAR(43), c_mac VARCHAR(17), c_mac8 VARCHAR(23),
        c_xml LONGTEXT, c_tsv LONGTEXT, c_hstore JSON) ENGINE=InnoDB";

/// Each column as the text the MySQL column should hold. `output` prints a value with its
/// type's output function, as `to_json` does. A cast to text would print inet masks that the
/// output function leaves out.
const SCALARS_PG_SELECT: &str = "SET intervalstyle = 'iso_8601';
    CREATE OR REPLACE FUNCTION pg_temp.output(value anyelement) RETURNS text
        LANGUAGE sql STRICT AS 'SELECT format(''%s'', value)';
    SELECT id::text, c_small::text, c_big::text,
    c_citext::text, c_money::numeric::text, c_mood::text,
    to_char(c_time::interval, 'HH24:MI:SS.US'),
    to_char(c_timetz::time::interval, 'HH24:MI:SS.US')
        || CASE WHEN extract(timezone FROM c_timetz) < 0 THEN '-' ELSE '+' END
        || to_char(make_interval(secs => abs(extract(timezone FROM c_timetz))), 'HH24:MI')
        || CASE WHEN extract(timezone FROM c_timetz)::int % 60 = 0 THEN ''
           ELSE to_char(make_interval(secs => abs(extract(timezone FROM c_timetz))), ':SS') END,
    c_interval::text, c_span::text,
    c_bit::text, c_varbit::text,
    pg_temp.output(c_inet), pg_temp.output(c_cidr), pg_temp.output(c_mac), pg_temp.output(c_mac8),
    pg_temp.output(c_xml), pg_temp.output(c_tsv), to_json(c_hstore)::text
    FROM scalars ORDER BY id";
const SCALARS_MYSQL_SELECT: &str = "SELECT id, c_small, c_big,
    c_citext, c_money, c_mood, TIME_FORMAT(c_time, '%H:%i:%s.%f'), c_timetz, c_interval, c_span,
    c_bit, c_varbit, c_inet, c_cidr, c_mac, c_mac8, c_xml, c_tsv, c_hstore
    FROM scalars ORDER BY id";

/// Compares the `hstore` column as a parsed document: both sides hold the same object, but
/// MySQL 8 would normalize the spacing of its text.
fn normalize_scalars(rows: &mut Rows) {
    for row in rows {
        if let Some(text) = &row[18] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            row[18] = Some(value.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_types_round_trip_exactly() {
    let databases = Databases::create("scalars").await;
    databases.create_tables(SCALARS_PG, SCALARS_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.scalars");
    pipeline.setup();
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    // A session with settings unlike the ones the triggers pin, so that capture must not
    // depend on them.
    pg.batch_execute(
        r#"SET intervalstyle = 'postgres_verbose'; SET TimeZone = 'America/New_York';
        INSERT INTO scalars (c_small, c_citext, c_money, c_mood, c_time, c_timetz, c_interval,
            c_span, c_bit, c_varbit, c_inet, c_cidr, c_mac, c_mac8, c_xml, c_tsv, c_hstore)
        VALUES
        (32767, 'MiXeD 😀', '-92233720368547758.08', 'sad', '24:00:00', '12:34:56.5+05:30',
         '1 year 2 mons 3 days 04:05:06.5', '1 mon', B'0101', B'', '10.0.0.1/32', '10.0.0.0/8',
         '08:00:2b:01:02:03', '08:00:2b:01:02:03', '<a b="1">x &amp; y</a>',
         $$'it''s' 'fat':2A 'cat'$$, 'a=>1, "b c"=>NULL, "q\"uote"=>"v"'),
        (-32768, '', '92233720368547758.07', 'ok', '00:00:00', '00:00:00-00:19:32',
         '-1 mons +1 day -00:00:00.000001', '30 days', B'1111', repeat('10', 100)::varbit,
         '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:01',
         'plain content', '', ''),
        (0, NULL, '0.01', NULL, '23:59:59.999999', '23:59:59.999999+14', '0', '-178000000 years',
         NULL, NULL, '192.168.0.1/24', NULL, NULL, NULL, NULL, NULL, NULL),
        (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL);"#,
    )
    .await
    .unwrap();

    let rows = databases
        .wait_until_equal_by(
            SCALARS_PG_SELECT,
            SCALARS_MYSQL_SELECT,
            CONVERGE,
            normalize_scalars,
        )
        .await;
    assert_eq!(rows.len(), 4);
    let first = &rows[0];
    assert_eq!(first[0].as_deref(), Some("1"), "serial starts at 1");
    assert_eq!(first[2].as_deref(), Some("1"), "bigserial starts at 1");
    assert_eq!(first[3].as_deref(), Some("MiXeD 😀"));
    assert_eq!(first[4].as_deref(), Some("-92233720368547758.08"));
    assert_eq!(first[6].as_deref(), Some("24:00:00.000000"));
    assert_eq!(first[7].as_deref(), Some("12:34:56.500000+05:30"));
    assert_eq!(first[8].as_deref(), Some("P1Y2M3DT4H5M6.5S"));
    assert_eq!(first[9].as_deref(), Some("P1M"));
    assert_eq!(first[12].as_deref(), Some("10.0.0.1"));
    assert_eq!(first[15].as_deref(), Some("08:00:2b:ff:fe:01:02:03"));
    let second = &rows[1];
    assert_eq!(second[3].as_deref(), Some(""), "empty citext is not NULL");
    assert_eq!(second[4].as_deref(), Some("92233720368547758.07"));
    assert_eq!(second[7].as_deref(), Some("00:00:00.000000-00:19:32"));
    assert_eq!(second[8].as_deref(), Some("P-1M1DT-0.000001S"));
    assert_eq!(
        second[9].as_deref(),
        Some("P30D"),
        "30 days stays apart from 1 month"
    );
    assert_eq!(second[11].as_deref().map(str::len), Some(200));
    assert_eq!(second[18].as_deref(), Some("{}"));
    assert_eq!(rows[2][10], None);
    assert_eq!(rows[2][9].as_deref(), Some("P-178000000Y"));

    // An enum value added after setup needs nothing but a VARCHAR on the MySQL side. ADD VALUE
    // must commit before the value is used, so it runs on its own.
    pg.batch_execute("ALTER TYPE mood ADD VALUE 'happy' BEFORE 'ok'")
        .await
        .unwrap();
    pg.batch_execute(
        "UPDATE scalars SET c_mood = 'happy', c_money = c_money / 2, c_bit = ~c_bit
             WHERE id = 1;
         DELETE FROM scalars WHERE id = 4;",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal_by(
            SCALARS_PG_SELECT,
            SCALARS_MYSQL_SELECT,
            CONVERGE,
            normalize_scalars,
        )
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][5].as_deref(), Some("happy"));
    assert_eq!(rows[0][10].as_deref(), Some("1010"));

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_new_scalar_types_match_rows() {
    let databases = Databases::create("typedkeys").await;
    databases
        .create_tables(
            "CREATE TYPE state AS ENUM ('new', 'done');
             CREATE TABLE slots (s state, t time, tz timetz, net inet, price money, bits varbit,
                 note text, PRIMARY KEY (s, t, tz, net, price, bits))",
            "CREATE TABLE slots (s VARCHAR(10), t TIME(6), tz VARCHAR(24), net VARCHAR(43),
                 price DECIMAL(19,2), bits VARCHAR(16), note TEXT,
                 PRIMARY KEY (s, t, tz, net, price, bits)) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.slots");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    let mysql_select = "SELECT s, TIME_FORMAT(t, '%H:%i:%s'), tz, net, price, bits, note
        FROM slots ORDER BY note";

    pg.batch_execute(
        "INSERT INTO slots VALUES
             ('new', '08:00', '08:00+02', '10.0.0.1', '1.50', B'01', 'a'),
             ('new', '08:00', '08:00+03', '10.0.0.1', '1.50', B'01', 'b'),
             ('done', '09:30', '09:30-05', '::1', '0', B'', 'c');
         UPDATE slots SET t = '10:00', price = price * 2, bits = bits || B'1' WHERE note = 'a';
         UPDATE slots SET note = 'b2' WHERE tz = '08:00+03';
         DELETE FROM slots WHERE s = 'done';",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            "SELECT s::text, to_char(t::interval, 'HH24:MI:SS'), \
             to_char(tz::time::interval, 'HH24:MI:SS.US') || to_char(extract(timezone FROM tz) / 3600, 'FMS00') || ':00', \
             format('%s', net), price::numeric::text, bits::text, note FROM slots ORDER BY note",
            mysql_select,
            CONVERGE,
        )
        .await;
    assert_eq!(rows.len(), 2, "the moved key left no row behind: {rows:?}");
    assert_eq!(rows[0][1].as_deref(), Some("10:00:00"));
    assert_eq!(rows[0][2].as_deref(), Some("08:00:00.000000+02:00"));
    assert_eq!(rows[0][4].as_deref(), Some("3.00"));
    assert_eq!(rows[1][6].as_deref(), Some("b2"));

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

const DOCUMENTS_PG: &str = "CREATE TYPE color AS ENUM ('red', 'green');
    CREATE TYPE point3 AS (x numeric, y numeric, label text);
    CREATE TYPE shipment AS (id bigint, total numeric(12,2), sent timestamptz, payload bytea,
        origin point3, tint color, wait interval, at_date date);
    CREATE DOMAIN int_list AS integer[];
    CREATE TABLE docs (
        id int PRIMARY KEY,
        c_ints int_list, c_numerics numeric[], c_bytes bytea[], c_times timestamptz[],
        c_texts text[], c_floats float8[], c_dates date[], c_colors color[],
        c_spans interval[], c_ship shipment, c_ships shipment[])";
const DOCUMENTS_MYSQL: &str = "CREATE TABLE docs (
        id INT PRIMARY KEY,
        c_ints JSON, c_numerics JSON, c_bytes JSON, c_times JSON,
        c_texts JSON, c_floats JSON, c_dates JSON, c_colors JSON,
        c_spans JSON, c_ship JSON, c_ships JSON) ENGINE=InnoDB";
/// `to_json` of each column under the settings the capture triggers pin. MariaDB keeps a JSON
/// document's text as sent, so the text must be identical.
const DOCUMENTS_PG_SELECT: &str = "SET TimeZone = 'UTC'; SET extra_float_digits = 1;
    SET bytea_output = 'hex'; SET intervalstyle = 'iso_8601';
    SELECT id::text, to_json(c_ints)::text, to_json(c_numerics)::text, to_json(c_bytes)::text,
    to_json(c_times)::text, to_json(c_texts)::text, to_json(c_floats)::text,
    to_json(c_dates)::text, to_json(c_colors)::text, to_json(c_spans)::text,
    to_json(c_ship)::text, to_json(c_ships)::text FROM docs ORDER BY id";
const DOCUMENTS_MYSQL_SELECT: &str = "SELECT id, c_ints, c_numerics, c_bytes, c_times, c_texts,
    c_floats, c_dates, c_colors, c_spans, c_ship, c_ships FROM docs ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_and_composites_arrive_as_exact_json() {
    let databases = Databases::create("documents").await;
    databases.create_tables(DOCUMENTS_PG, DOCUMENTS_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.docs");
    pipeline.setup();
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    pg.batch_execute(
        r#"SET TimeZone = 'Europe/Berlin'; SET bytea_output = 'escape';
        SET intervalstyle = 'sql_standard'; SET extra_float_digits = 0;
        INSERT INTO docs VALUES
        (1, '{{1,2},{3,4}}',
         ARRAY[1.10, NULL, 0.000000000000000000000000000001, 12345678901234567890.123456789],
         ARRAY['\x00ff'::bytea, ''], ARRAY['2024-03-31 02:30:00+02'::timestamptz, NULL],
         ARRAY['a "quoted" \ text', NULL, '', '😀'], ARRAY['NaN', 'Infinity', 0.1, 1e308]::float8[],
         ARRAY['infinity', '0044-03-15 BC', '2024-02-29']::date[], ARRAY['green', 'red']::color[],
         ARRAY['1 mon', '30 days', '-00:00:00.5']::interval[],
         ROW(9223372036854775807, 10.50, '2024-10-27 02:30:00+01', '\x0102',
             ROW(1.0, -0.5, 'it''s'), 'red', '1 day', '9999-12-31'),
         ARRAY[ROW(1, 0, NULL, NULL, NULL, NULL, NULL, NULL)::shipment, NULL]),
        (2, '{}', '{}', NULL, NULL, '{NULL}', NULL, NULL, NULL, NULL,
         ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), '{}'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"#,
    )
    .await
    .unwrap();

    let rows = databases
        .wait_until_equal(DOCUMENTS_PG_SELECT, DOCUMENTS_MYSQL_SELECT, CONVERGE)
        .await;
    assert_eq!(rows.len(), 3);
    let first = &rows[0];
    assert_eq!(first[1].as_deref(), Some("[[1,2],[3,4]]"));
    assert_eq!(
        first[2].as_deref(),
        Some("[1.10,null,0.000000000000000000000000000001,12345678901234567890.123456789]")
    );
    assert_eq!(first[3].as_deref(), Some(r#"["\\x00ff","\\x"]"#));
    assert_eq!(
        first[4].as_deref(),
        Some(r#"["2024-03-31T00:30:00+00:00",null]"#)
    );
    assert_eq!(
        first[6].as_deref(),
        Some(r#"["NaN","Infinity",0.1,1e+308]"#)
    );
    assert_eq!(
        first[7].as_deref(),
        Some(r#"["infinity","0044-03-15 BC","2024-02-29"]"#)
    );
    assert_eq!(first[9].as_deref(), Some(r#"["P1M","P30D","PT-0.5S"]"#));
    let ship: serde_json::Value = serde_json::from_str(first[10].as_deref().unwrap()).unwrap();
    assert_eq!(ship["sent"], "2024-10-27T01:30:00+00:00");
    assert_eq!(ship["payload"], "\\x0102");
    assert!(
        first[10].as_deref().unwrap().contains(r#""total":10.50"#),
        "numeric fields keep their digits: {:?}",
        first[10]
    );
    assert_eq!(rows[1][1].as_deref(), Some("[]"));
    assert_eq!(rows[1][5].as_deref(), Some("[null]"));
    assert_eq!(rows[2][1], None);

    // An array with a lower bound other than 1 would lose it in JSON, so apply halts on it
    // and names the column, without the value.
    pg.batch_execute("INSERT INTO docs (id, c_ints) VALUES (4, '[0:1]={7,8}')")
        .await
        .unwrap();
    daemon.wait_for_log("apply halted", CONVERGE).await;
    let log = daemon.log();
    assert!(log.contains("column c_ints of table public.docs"), "{log}");
    assert!(log.contains("lower bound other than 1"), "{log}");
    assert!(!log.contains("[0:1]"), "the log shows no value: {log}");
    let count = databases.mysql_rows("SELECT COUNT(*) FROM docs").await;
    assert_eq!(count[0][0].as_deref(), Some("3"));

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inexact_types_are_rejected_by_name() {
    let databases = Databases::create("typereject").await;
    databases
        .create_tables(
            "CREATE EXTENSION citext;
             CREATE TYPE priced AS (amount money);
             CREATE TYPE listed AS (items int[]);
             CREATE TABLE nested (id int PRIMARY KEY, prices money[], docs jsonb[],
                 priced priced, listed listed, spots point[], ok int[]);
             CREATE TABLE span_key (span interval PRIMARY KEY);
             CREATE TABLE ci_key (name citext PRIMARY KEY);
             CREATE TABLE array_key (path int[] PRIMARY KEY);",
            "CREATE TABLE nested (id INT PRIMARY KEY, prices JSON, docs JSON, priced JSON,
                 listed JSON, spots JSON, ok JSON) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(
        &databases,
        "public.nested,public.span_key,public.ci_key,public.array_key",
    );
    let output = pipeline.run_cli(&["setup"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    let expectations = [
        (
            "column prices of table public.nested has type money[]",
            "Use numeric in place of money",
        ),
        (
            "column docs of table public.nested has type jsonb[]",
            "one jsonb column in place of an array",
        ),
        (
            "column priced of table public.nested has type priced, which contains money as a \
             field of a composite type",
            "Use numeric in place of money",
        ),
        (
            "column listed of table public.nested has type listed, which contains the array \
             type integer[]",
            "Make the field a jsonb document",
        ),
        (
            "column spots of table public.nested has type point[], which contains point as the \
             array element type",
            "Change the column type or remove the table from SYNC_TABLES",
        ),
        (
            "primary-key column span of table public.span_key is an interval",
            "Use another key",
        ),
        (
            "primary-key column name of table public.ci_key is citext",
            "use a text key",
        ),
        (
            "primary-key column path of table public.array_key is synced as a JSON document",
            "use a scalar key",
        ),
    ];
    for (problem, remedy) in expectations {
        let line = message
            .lines()
            .find(|line| line.contains(problem))
            .unwrap_or_else(|| panic!("no line with {problem:?} in:\n{message}"));
        assert!(line.contains(remedy), "{remedy:?} missing from: {line}");
    }
    assert!(
        !message.contains("column ok "),
        "int[] is supported: {message}"
    );

    // The daemon checks the same at start.
    let output = pipeline.run_cli(&["run"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("column prices of table public.nested has type money[]"),
        "{}",
        stderr(&output)
    );
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_strings_into_a_bit_column_are_rejected() {
    let databases = Databases::create("bitcolumn").await;
    databases
        .create_tables(
            "CREATE TABLE flags (id int PRIMARY KEY, mask bit(8))",
            "CREATE TABLE flags (id INT PRIMARY KEY, mask BIT(8)) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.flags");
    let output = pipeline.run_cli(&["setup"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("the MySQL column `mask` of table `flags` is BIT"),
        "{message}"
    );
    assert!(message.contains("make it VARCHAR"), "{message}");
    databases.drop_all().await;
}
