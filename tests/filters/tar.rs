use crate::plugins::tar::{archives, LONG};
use crate::util::*;

#[test]
fn serves_the_same_member_as_the_tar_plugin_and_c_nbdkit() {
    if !have("nbdcopy") || !have("nbdinfo") {
        return;
    }
    let d = archives();
    let cmd =
        "nbdcopy \"$uri\" - | sha256sum; nbdinfo \"$uri\" | grep -v uri:; nbdinfo --map \"$uri\"";
    let run = |nbdkit: &std::path::Path, args: &str| {
        let out = sh(&format!(
            "cd '{}' && {} -U - {args} --run '{cmd}'",
            d.path().display(),
            nbdkit.display()
        ));
        assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for member in ["disk.img", LONG] {
        let ours = run(&bin(), &format!("file pax.tar --filter=tar tar-entry={member}"));
        let plugin = run(&bin(), &format!("tar tar=pax.tar file={member}"));
        // Flags differ (the plugin is a file window, the filter passes the
        // file plugin's through), the bytes must not.
        assert_eq!(ours.lines().next(), plugin.lines().next(), "{member}");
        if let Some(c) = c_nbdkit() {
            let theirs = run(&c, &format!("file pax.tar --filter=tar tar-entry={member}"));
            assert_eq!(ours, theirs, "{member}");
        }
    }
}

#[test]
fn writes_land_in_the_archive_and_missing_entries_are_refused() {
    let d = archives();
    let start = |entry: &str, extra: &[&str]| {
        nbdkit_test::CaptiveDisk::builder("file")
            .arg(d.path().join("ustar.tar").display().to_string())
            .filter("tar")
            .arg(format!("tar-entry={entry}"))
            .args(extra)
            .binary(bin())
            .start()
            .unwrap()
    };
    let disk = start("disk.img", &[]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert_eq!(c.read(0, 5).unwrap(), b"hello");
    c.write_fua(1, b"ELLO").unwrap();
    let out = sh(&format!("cd '{}' && tar xOf ustar.tar disk.img | head -c 5", d.path().display()));
    assert_eq!(out.stdout, b"hELLO");
    // Not there: the client is refused at the handshake.
    let missing = start("nope.img", &[]);
    assert!(missing.connect().is_err());
    assert!(missing.log().contains("nope.img: no such member"), "{}", missing.log());
    // Beyond tar-limit.
    let limited = start(LONG, &["tar-limit=1024"]);
    assert!(limited.connect().is_err());
    assert!(limited.log().contains("tar-limit"), "{}", limited.log());
}

#[test]
fn tar_entry_is_required() {
    let out =
        nbdkit().args(["-U", "-", "--filter=tar", "null", "1M", "--run", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tar: you must supply tar-entry=<PATH>"));
}
