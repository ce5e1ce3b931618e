//! Records the git commit for `--version` and the build_info metric.
//! `TMM_COMMIT` in the environment wins, for builds from a source tarball or an image
//! recipe; otherwise `git rev-parse`, else "unknown".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TMM_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("TMM_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            let text = String::from_utf8(out.stdout).ok()?;
            Some(text.trim().to_string()).filter(|c| !c.is_empty())
        });
    println!(
        "cargo:rustc-env=TMM_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
