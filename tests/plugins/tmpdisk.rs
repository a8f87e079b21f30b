//! tmpdisk (a fresh disk per client) and ondemand (a persistent disk per
//! export name).

use std::time::Duration;

use nbdkit_test::{CaptiveDisk, Client};

use crate::util::*;

fn tmpdisk(tmp: &std::path::Path, args: &[&str]) -> CaptiveDisk {
    CaptiveDisk::builder("tmpdisk").args(args).env("TMPDIR", tmp).binary(bin()).start().unwrap()
}

#[test]
fn flags_and_extents_match_c_nbdkit() {
    if !have("nbdinfo") || !have("mkfs") {
        return;
    }
    let info = |nbdkit: &std::path::Path| {
        let out = sh(&format!(
            "{} -U - tmpdisk 64M label=hello --run 'nbdinfo \"$uri\" | grep -v \"uri:\\|content:\"; nbdinfo --map \"$uri\"' 2>/dev/null",
            nbdkit.display()
        ));
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = info(&bin());
    assert!(ours.contains("export-size: 67108864"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, info(&c));
    }
}

#[test]
fn each_client_gets_a_fresh_ext4_disk_that_goes_with_it() {
    if !have("mkfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmpdisk(tmp.path(), &["16M", "label=fresh"]);
    let mut a = disk.connect().unwrap();
    // The ext4 superblock: magic at 1024+56, label at 1024+120.
    assert_eq!(a.read(1024 + 56, 2).unwrap(), [0x53, 0xef]);
    assert_eq!(a.read(1024 + 120, 5).unwrap(), b"fresh");
    a.write(8 << 20, b"only mine").unwrap();
    let mut b = disk.connect().unwrap();
    assert_eq!(b.read(8 << 20, 9).unwrap(), [0; 9]);
    assert_eq!(a.read(8 << 20, 9).unwrap(), b"only mine");
    a.disconnect().unwrap();
    b.disconnect().unwrap();
    // No disk left in $TMPDIR once both have gone (the server unlinks each
    // as soon as it has it open). The server's own socket directory is
    // there too, and stays.
    let disks = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with("tmpdisk")
            })
            .count()
    };
    assert_eq!(disks(), 0);
}

#[test]
fn command_gets_disk_size_and_every_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmpdisk(
        tmp.path(),
        &[
            "size=1M",
            "greeting=hello",
            r#"command=truncate -s $size "$disk" && printf "$greeting:$type" | dd of="$disk" conv=notrunc status=none"#,
        ],
    );
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert_eq!(c.read(0, 6).unwrap(), b"hello:");
    let failing = CaptiveDisk::builder("tmpdisk")
        .args(["1M", "command=echo no room here >&2; exit 1"])
        .env("TMPDIR", tmp.path())
        .binary(bin())
        .start()
        .unwrap();
    let err = failing.connect().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(failing.log().contains("no room here"), "{}", failing.log());
}

fn ondemand(dir: &std::path::Path, extra: &[&str]) -> CaptiveDisk {
    CaptiveDisk::builder("ondemand")
        .arg(format!("dir={}", dir.display()))
        .arg("size=1M")
        .arg(r#"command=truncate -s $size "$disk""#)
        .args(extra)
        .binary(bin())
        .start()
        .unwrap()
}

#[test]
fn ondemand_creates_once_keeps_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ondemand(dir.path(), &[]);
    let sock = disk.socket().unwrap().to_path_buf();
    let mut a = Client::connect_unix(&sock, "mine").unwrap();
    a.write(0, b"kept").unwrap();
    // In use: a second client is refused.
    assert!(Client::connect_unix(&sock, "mine").is_err());
    a.disconnect().unwrap();
    assert!(dir.path().join("mine").exists());
    // It persists, for the next client and across servers.
    drop(disk);
    let disk = ondemand(dir.path(), &[]);
    let mut b = Client::connect_unix(disk.socket().unwrap(), "mine").unwrap();
    assert_eq!(b.read(0, 4).unwrap(), b"kept");
    // The default export is the file "default".
    drop(Client::connect_unix(disk.socket().unwrap(), "").unwrap());
    assert!(dir.path().join("default").exists());
    for bad in ["a.b", "a:b", "../x"] {
        assert!(Client::connect_unix(disk.socket().unwrap(), bad).is_err(), "{bad}");
    }
}

#[test]
fn ondemand_wait_queues_the_second_client() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ondemand(dir.path(), &["wait=true"]);
    let sock = disk.socket().unwrap().to_path_buf();
    let mut a = Client::connect_unix(&sock, "q").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = sock.clone();
    std::thread::spawn(move || {
        let r = Client::connect_unix(&s2, "q").map(|mut c| c.read(0, 3).unwrap());
        tx.send(r.map_err(|e| e.to_string())).unwrap();
    });
    // Still waiting while the first holds the lock.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    a.write(0, b"abc").unwrap();
    a.disconnect().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap(), b"abc");
}

#[test]
fn ondemand_lists_its_exports() {
    if !have("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for f in ["one", "two", "skip.me", "default"] {
        std::fs::write(dir.path().join(f), [0u8; 512]).unwrap();
    }
    let out = sh(&format!(
        "{} -U - ondemand dir={} 1M --run 'nbdinfo --list --json \"$uri\"' | grep export-name | sort",
        bin().display(),
        dir.path().display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("export-name").count(), 3, "{text}");
    // nbdinfo asks for each export's canonical name: "" is "default".
    for want in ["\"default\"", "\"one\"", "\"two\""] {
        assert!(text.contains(want), "{text}");
    }
    // The list itself names the file "default" as the export "", as C's
    // does (qemu-nbd shows the list as it is).
    if !have("qemu-nbd") {
        return;
    }
    let out = sh(&format!(
        "{} -U - ondemand dir={} 1M --run 'qemu-nbd -L -k \"$unixsocket\"' | grep 'export:' | sort",
        bin().display(),
        dir.path().display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        " export: ''\n export: 'one'\n export: 'two'\n"
    );
}

#[rstest::rstest]
#[case(&["tmpdisk"], "tmpdisk: you must specify size=<SIZE>")]
#[case(&["tmpdisk", "1M", "bad-name=x"], "parameter 'bad-name' cannot be a shell variable name")]
#[case(&["ondemand", "1M"], "ondemand: you must supply dir=<EXPORTSDIR>")]
#[case(&["ondemand", "1M", "dir=/nonexistent"], "dir=/nonexistent: No such file or directory")]
#[case(&["ondemand", "dir=/tmp"], "ondemand: you must specify size=<SIZE>")]
#[case(&["ondemand", "1M", "dir=/tmp", "wait=maybe"], "wait: could not decipher boolean")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}
