//! Records the git commit for `--version` and the build_info metric.
//! `TMM_COMMIT` in the environment wins, for builds from a source tarball or an image
//! recipe; otherwise `git rev-parse`, else "unknown".
//! Also stores the hook script `src/bot/bot_config.py` deflated (a third of its size) for
//! `bot-config` to inflate with the inflater the zip check links anyway.
//! And it makes a change to `ci/hot-text.ld`, the link order, relink the binary.
use std::io::Write;
use std::process::Command;

fn main() {
    deflate_bot_config();
    println!("cargo:rerun-if-env-changed=TMM_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    // The musl targets' linker (ci/zig/cc) reads this link order, which cargo would not
    // otherwise know about: a new order must relink the binary.
    println!("cargo:rerun-if-changed=ci/hot-text.ld");
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

fn deflate_bot_config() {
    const SCRIPT: &str = "src/bot/bot_config.py";
    println!("cargo:rerun-if-changed={SCRIPT}");
    let text = std::fs::read(SCRIPT).expect("src/bot/bot_config.py is readable");
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&text).expect("deflating into memory");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("bot_config.py.deflate");
    std::fs::write(&out, enc.finish().expect("deflating into memory"))
        .expect("OUT_DIR is writable");
}
