//! The service installation: files, modes, ownership, the unit, and a run as the service user.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{BINARY, Databases, ITEMS_MYSQL, ITEMS_PG, items_equal};

const SERVICE_USER: &str = "pg-to-mysql-sync";

fn repo_script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn id_of(flag: &str) -> u32 {
    let output = run(Command::new("id").args([flag, SERVICE_USER]));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn assert_entry(path: &Path, mode: u32, uid: u32, gid: u32) {
    let metadata = fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(metadata.mode() & 0o7777, mode, "mode of {}", path.display());
    assert_eq!(metadata.uid(), uid, "owner of {}", path.display());
    assert_eq!(metadata.gid(), gid, "group of {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_script_stages_a_working_service() {
    assert_eq!(
        effective_uid(),
        0,
        "the service tests create a system user and must run as root, as scripts/test.sh does in CI"
    );
    let stage = tempfile::tempdir().unwrap();
    // The service user must be able to reach the staged files.
    fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = stage.path();
    let install = || {
        run(Command::new("bash")
            .arg(repo_script("install.sh"))
            .args(["--binary", BINARY, "--root"])
            .arg(root))
    };
    install();

    let (uid, gid) = (id_of("-u"), id_of("-g"));
    assert_entry(&root.join("usr/local/bin/pg-to-mysql-sync"), 0o755, 0, 0);
    assert_entry(&root.join("etc/pg-to-mysql-sync"), 0o750, 0, gid);
    assert_entry(&root.join("etc/pg-to-mysql-sync/.env"), 0o600, uid, gid);
    assert_entry(&root.join("var/lib/pg-to-mysql-sync"), 0o750, uid, gid);
    assert_entry(
        &root.join("etc/systemd/system/pg-to-mysql-sync.service"),
        0o644,
        0,
        0,
    );
    let wants = root.join("etc/systemd/system/multi-user.target.wants/pg-to-mysql-sync.service");
    assert!(
        fs::symlink_metadata(&wants)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the unit is enabled"
    );
    let env = fs::read_to_string(root.join("etc/pg-to-mysql-sync/.env")).unwrap();
    assert!(
        env.contains("\nDATA_DIR=/var/lib/pg-to-mysql-sync\n"),
        "{env}"
    );
    let jwt_secret = env
        .lines()
        .find_map(|line| line.strip_prefix("JWT_SECRET="))
        .unwrap();
    assert!(jwt_secret.len() >= 32, "the install generates a JWT secret");

    // A second install keeps the operator's .env.
    fs::write(root.join("etc/pg-to-mysql-sync/.env"), "MODE=automatic\n").unwrap();
    install();
    let env = fs::read_to_string(root.join("etc/pg-to-mysql-sync/.env")).unwrap();
    assert_eq!(env, "MODE=automatic\n");

    verify_unit(root);
    run_as_service_user(root).await;

    run(Command::new("bash")
        .arg(repo_script("uninstall.sh"))
        .arg("--root")
        .arg(root));
    assert!(!root.join("usr/local/bin/pg-to-mysql-sync").exists());
    assert!(
        !root
            .join("etc/systemd/system/pg-to-mysql-sync.service")
            .exists()
    );
    assert!(!wants.exists());
    assert!(
        root.join("etc/pg-to-mysql-sync/.env").exists(),
        "uninstall keeps the configuration"
    );
    assert!(
        root.join("var/lib/pg-to-mysql-sync").exists(),
        "uninstall keeps the journal"
    );
}

/// Runs `systemd-analyze verify` on the staged unit, with its paths pointed into the stage.
fn verify_unit(root: &Path) {
    let unit =
        fs::read_to_string(root.join("etc/systemd/system/pg-to-mysql-sync.service")).unwrap();
    let staged = unit
        .replace(
            "/usr/local/bin/",
            &format!("{}/usr/local/bin/", root.display()),
        )
        .replace(
            "WorkingDirectory=/",
            &format!("WorkingDirectory={}/", root.display()),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pg-to-mysql-sync.service");
    fs::write(&path, staged).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is missing; scripts/servers.sh start installs it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze warned: {stderr}");
}

/// Runs setup and the daemon from the staged files as the service user, against the test
/// databases, to show that its rights suffice.
async fn run_as_service_user(root: &Path) {
    let databases = Databases::create("service").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let config_dir = root.join("etc/pg-to-mysql-sync");
    let data_dir = root.join("var/lib/pg-to-mysql-sync");
    fs::write(
        config_dir.join(".env"),
        format!(
            "PG_DATABASE_URL={}\nMYSQL_DATABASE_URL={}\nSYNC_TABLES=public.items\nDATA_DIR={}\n\
             PORT={}\nBIND_ADDRESS=127.0.0.1\nJWT_SECRET={}\nAPI_KEY={}\n",
            databases.pg_url,
            databases.mysql_url,
            data_dir.display(),
            crate::support::free_port(),
            "service-test-secret-0123456789abcdef",
            "service-test-key-0123456789abcdef",
        ),
    )
    .unwrap();
    let command = |args: &[&str]| {
        // setpriv replaces itself with the binary, so SIGTERM reaches the daemon. runuser
        // would stay in between as a parent and report the signal as a failure.
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                SERVICE_USER,
                "--regid",
                SERVICE_USER,
                "--init-groups",
                "--",
            ])
            .arg(root.join("usr/local/bin/pg-to-mysql-sync"))
            .args(args)
            .current_dir(&config_dir);
        crate::support::clear_settings(&mut command);
        command
    };
    run(&mut command(&["setup"]));

    let log_path = root.join("daemon.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut daemon = command(&["run"]).stderr(log).spawn().unwrap();
    databases
        .pg()
        .await
        .batch_execute("INSERT INTO items VALUES (1, 'as the service user', 1, 1, now())")
        .await
        .unwrap();
    assert_eq!(
        items_equal(&databases, Duration::from_secs(30)).await.len(),
        1
    );
    // The API runs with a certificate generated into the service's data directory, and the
    // command line reaches it with the same configuration.
    let output = command(&["status"]).output().unwrap();
    assert!(
        output.status.success(),
        "status failed: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        fs::read_to_string(&log_path).unwrap()
    );
    run(Command::new("kill").args(["-TERM", &daemon.id().to_string()]));
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        fs::read_to_string(&log_path).unwrap()
    );

    let uid = id_of("-u");
    for entry in fs::read_dir(&data_dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().uid(),
            uid,
            "owner of {:?}",
            entry.path()
        );
    }
    databases.drop_all().await;
}

fn effective_uid() -> u32 {
    let output = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}
