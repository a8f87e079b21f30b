//! A crate outside this workspace, with nothing but a path dev-dependency
//! on nbdkit-test, starts a disk in its own test with plain `cargo test`.

use std::path::Path;
use std::process::Command;

const TEST: &str = r#"
use nbdkit_test::CaptiveDisk;

#[test]
fn a_disk_in_someone_elses_crate() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let mut nbd = disk.connect().unwrap();
    nbd.write(0, b"outside").unwrap();
    assert_eq!(nbd.read(0, 7).unwrap(), b"outside");
    println!("COMMAND {}", disk.command_line());
}
"#;

#[test]
fn a_fresh_crate_can_use_captive_disk() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = here.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("someone-elses-crate");
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"someone-elses-crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dev-dependencies]\nnbdkit-test = {{ path = {:?} }}\n\n[workspace]\n",
            here.display().to_string()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    std::fs::write(krate.join("tests/disk.rs"), TEST).unwrap();
    // The same versions as this workspace, so no network is needed.
    std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--offline", "-q", "--", "--nocapture"])
        .current_dir(&krate)
        // A target directory of its own, kept between runs to save time;
        // the crate must still find the nbdkit built in this workspace.
        .env("CARGO_TARGET_DIR", workspace.join("target/external-crate"))
        .env_remove("NBDKIT_TEST_BIN")
        .env_remove("CARGO_BIN_EXE_nbdkit")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let ours = workspace.join("target");
    assert!(stdout.contains(&format!("COMMAND {}/", ours.display())), "not our nbdkit: {stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}
