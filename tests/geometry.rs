//! PostGIS geometry and geography columns, sent as well-known binary with their SRID.

use std::time::Duration;

use crate::support::{Databases, Pipeline};

const PLACES_PG: &str = "CREATE EXTENSION postgis;
    CREATE TABLE places (
        id int PRIMARY KEY,
        spot geometry(Point, 4326),
        area geometry,
        route geography(LineString, 4326)
    )";

/// The MySQL side is created by `setup --create-tables`.
const PLACES_PG_SELECT: &str = "SELECT id::text,
    ST_SRID(spot)::text, encode(ST_AsBinary(spot, 'NDR'), 'hex'),
    ST_SRID(area)::text, encode(ST_AsBinary(area, 'NDR'), 'hex'),
    ST_SRID(route)::text, encode(ST_AsBinary(route, 'NDR'), 'hex')
    FROM places ORDER BY id";

const PLACES_MYSQL_SELECT: &str = "SELECT id,
    ST_SRID(spot), LOWER(HEX(ST_AsBinary(spot))),
    ST_SRID(area), LOWER(HEX(ST_AsBinary(area))),
    ST_SRID(route), LOWER(HEX(ST_AsBinary(route)))
    FROM places ORDER BY id";

#[tokio::test]
async fn geometries_arrive_bit_for_bit_with_srid() {
    let databases = Databases::create("geometry").await;
    databases.create_tables(PLACES_PG, "").await;
    let pipeline = Pipeline::new(&databases, "public.places");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO places VALUES
         (1, 'SRID=4326;POINT(13.404954 52.520008)',
             'SRID=3857;POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (2 2, 3 2, 3 3, 2 2))',
             'SRID=4326;LINESTRING(-0.1276 51.5072, 2.3522 48.8566)'),
         (2, 'SRID=4326;POINT(-179.999999999 -89.5)',
             'MULTIPOINT((1 2), (3 4))',
             NULL),
         (3, NULL, 'GEOMETRYCOLLECTION(POINT(1 1), LINESTRING(0 0, 1 1))', NULL)",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            PLACES_PG_SELECT,
            PLACES_MYSQL_SELECT,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][1].as_deref(), Some("4326"));
    assert_eq!(rows[0][3].as_deref(), Some("3857"));
    assert_eq!(rows[1][3].as_deref(), Some("0"));
    assert_eq!(rows[2][1], None);

    pg.batch_execute(
        "UPDATE places SET spot = 'SRID=4326;POINT(0 0)' WHERE id = 1; \
         DELETE FROM places WHERE id = 3",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            PLACES_PG_SELECT,
            PLACES_MYSQL_SELECT,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 2);

    // MySQL has no Z coordinate: apply halts on the record, naming the column.
    pg.batch_execute("INSERT INTO places (id, area) VALUES (4, 'POINT Z (1 2 3)')")
        .await
        .unwrap();
    daemon
        .wait_for_log("Z or M coordinates", Duration::from_secs(30))
        .await;
    assert!(
        daemon.log().contains("column area of table public.places"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn geometry_key_is_rejected() {
    let databases = Databases::create("geometrykey").await;
    databases
        .create_tables(
            "CREATE EXTENSION postgis; CREATE TABLE shapes (shape geometry PRIMARY KEY)",
            "",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.shapes");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("shape"), "{stderr}");
    assert!(stderr.contains("PostGIS geometry"), "{stderr}");
    databases.drop_all().await;
}
