//! Records the git commit for `--version`.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PG_TO_MYSQL_SYNC_COMMIT={commit}");

    // Rebuild when the checked-out commit moves. A path that does not exist would make cargo
    // rerun this script on every build, so name only the ones present. Naming build.rs keeps
    // cargo from rerunning it on any change in the package when there is no .git at all.
    println!("cargo:rerun-if-changed=build.rs");
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
