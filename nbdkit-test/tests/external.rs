//! A crate outside this workspace, with nothing but a path dev-dependency
//! on nbdkit-test and no nbdkit anywhere (not on `PATH`, no
//! `NBDKIT_TEST_BIN`), starts disks in its own tests with plain
//! `cargo test`: the server is the one compiled into its test executable,
//! and a Rust plugin of its own is served in-process. When its test
//! process exits, aborts or is killed, nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{alive, wait_gone};

const TEST: &str = r#"
use nbdkit_test::{CaptiveDisk, MemoryDisk, RustDisk};

#[test]
fn a_disk_in_someone_elses_crate() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let mut nbd = disk.connect().unwrap();
    nbd.write(0, b"outside").unwrap();
    assert_eq!(nbd.read(0, 7).unwrap(), b"outside");
    // The server is this very executable, re-executed.
    let exe = std::fs::read_link(format!("/proc/{}/exe", disk.pid())).unwrap();
    assert_eq!(exe, std::env::current_exe().unwrap());
    println!("COMMAND {}", disk.command_line());
}

#[test]
fn a_rust_disk_in_someone_elses_crate() {
    let disk = RustDisk::new(MemoryDisk::from_vec(b"mine".repeat(128))).unwrap();
    assert_eq!(disk.connect().unwrap().read(0, 4).unwrap(), b"mine");
}

#[test]
#[ignore = "run by the outer test, which kills it"]
fn dies_holding_disks() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let rust = RustDisk::new(MemoryDisk::new(512)).unwrap();
    println!("SERVER {} {}", disk.pid(), disk.socket().unwrap().display());
    println!("RUST {}", rust.socket().display());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    match std::env::var("DIE").unwrap().as_str() {
        "exit" => std::process::exit(3),
        "abort" => std::process::abort(),
        _ => {
            // SIGKILL, from outside.
            let me = std::process::id().to_string();
            std::process::Command::new("kill").args(["-KILL", &me]).status().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}
"#;

/// The outside crate, made once per run of this test binary.
fn krate() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = here.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("someone-elses-crate");
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"someone-elses-crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dev-dependencies]\nnbdkit-test = {{ path = {:?} }}\n\n[workspace]\n",
            here.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    std::fs::write(krate.join("tests/disk.rs"), TEST).unwrap();
    // The same versions as this workspace, so no network is needed.
    std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    // A PATH with everything but nbdkit.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for d in ["/usr/local/bin", "/usr/bin", "/bin"] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("nbdkit") || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    (dir, krate, bin)
}

fn cargo_test(krate: &Path, bin: &Path, args: &[&str], die: Option<&str>) -> Output {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_dir = Path::new(&cargo).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Command::new(&cargo);
    c.args(["test", "--offline", "-q"])
        .args(args)
        .current_dir(krate)
        // A target directory of its own, kept between runs to save time.
        .env("CARGO_TARGET_DIR", workspace.join("target/external-crate"))
        .env("PATH", std::env::join_paths([cargo_dir, bin.to_path_buf()]).unwrap())
        .env_remove("NBDKIT_TEST_BIN")
        .env_remove("CARGO_BIN_EXE_nbdkit");
    if let Some(d) = die {
        c.env("DIE", d);
    }
    c.output().unwrap()
}

#[test]
fn a_fresh_crate_with_nothing_installed() {
    let (_dir, krate, bin) = krate();
    assert!(!bin.join("nbdkit").exists());
    let out = cargo_test(&krate, &bin, &["--", "--nocapture"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("COMMAND nbdkit -f --exit-with-parent -U - --print-uri"), "{stdout}");
    assert!(stdout.contains("2 passed"), "{stdout}");

    // Then its test process dies in each way, holding a disk of each kind.
    for how in ["exit", "abort", "kill"] {
        let out = cargo_test(
            &krate,
            &bin,
            &["--", "--ignored", "--exact", "dies_holding_disks", "--nocapture"],
            Some(how),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{how}: the test process should have died");
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{how}: no {key} in {stdout}"))
                .to_string()
        };
        let server = field("SERVER ");
        let (pid, socket) = server.split_once(' ').unwrap();
        let pid: u32 = pid.parse().unwrap();
        let socket = PathBuf::from(socket);
        assert!(wait_gone(pid, Duration::from_secs(10)), "{how}: server {pid} still running");
        assert!(!alive(pid));
        assert!(!socket.exists() && !socket.parent().unwrap().exists(), "{how}: socket left");
        // The in-process disk was a thread: nothing runs. Its directory is
        // swept by the next in-process disk started anywhere.
        let rust = PathBuf::from(field("RUST "));
        let _next = nbdkit_test::RustDisk::new(nbdkit_test::MemoryDisk::new(512)).unwrap();
        assert!(!rust.parent().unwrap().exists(), "{how}: {} left", rust.display());
    }
}
