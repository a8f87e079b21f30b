//! tar: one member of a tar file, served and written in place.

use std::path::Path;

use crate::util::*;

pub(crate) const LONG: &str = "a/very/long/directory/name/that/goes/on/and/on/for/more/than/\
                    one/hundred/characters/in/total/length/deep.img";

/// A directory with disk.img (1 MiB, "hello" at 0, "tail" near the end)
/// and the same file under a 120-character path, archived as gnu, pax and
/// ustar.
pub(crate) fn archives() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(1 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"hello", 0).unwrap();
    f.write_all_at(b"tail", (1 << 20) - 4).unwrap();
    let deep = d.path().join(LONG);
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    std::fs::copy(&img, &deep).unwrap();
    for fmt in ["gnu", "pax", "ustar"] {
        let out = sh(&format!(
            "cd '{}' && tar cf {fmt}.tar --format={fmt} disk.img a",
            d.path().display()
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    d
}

fn run(nbdkit: &Path, args: &str, dir: &Path, cmd: &str) -> String {
    let out =
        sh(&format!("cd '{}' && {} -U - {args} --run '{cmd}'", dir.display(), nbdkit.display()));
    assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn members_read_as_tar_extracts_them_in_every_format() {
    if !have("nbdcopy") || !have("nbdinfo") {
        return;
    }
    let d = archives();
    let c = c_nbdkit();
    for fmt in ["gnu", "pax", "ustar"] {
        for member in ["disk.img", LONG] {
            let ours = run(
                &bin(),
                &format!("tar tar={fmt}.tar file={member}"),
                d.path(),
                "nbdcopy \"$uri\" - | sha256sum; nbdinfo \"$uri\" | grep -v uri:; nbdinfo --map \"$uri\"",
            );
            let want = sh(&format!(
                "cd '{}' && tar xOf {fmt}.tar {member} | sha256sum",
                d.path().display()
            ));
            assert!(
                ours.starts_with(String::from_utf8_lossy(&want.stdout).as_ref()),
                "{fmt} {member}: {ours}"
            );
            // C's tar filter gives the same flags and extents. (Its bytes
            // are wrong for GNU long names, where it serves the name block:
            // nbdkit 1.32's filter reads the wrong offset.)
            if let Some(c) = &c {
                let theirs = run(
                    c,
                    &format!("file {fmt}.tar --filter=tar tar-entry={member}"),
                    d.path(),
                    "nbdcopy \"$uri\" - | sha256sum; nbdinfo \"$uri\" | grep -v uri:; nbdinfo --map \"$uri\"",
                );
                let rest = |s: &str| s.split_once('\n').unwrap().1.to_string();
                assert_eq!(rest(&ours), rest(&theirs), "{fmt} {member}");
                if !(fmt == "gnu" && member == LONG) {
                    assert_eq!(ours, theirs, "{fmt} {member}");
                }
            }
        }
    }
}

#[test]
fn writes_land_in_the_archive_in_place() {
    if !have("qemu-img") {
        return;
    }
    let d = archives();
    let src = tempfile::tempdir().unwrap();
    // A different disk.img in the working directory, copied in by the
    // command line from the issue.
    let new: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.path().join("disk.img"), &new).unwrap();
    let tarfile = d.path().join("pax.tar");
    let before = std::fs::metadata(&tarfile).unwrap().len();
    run(
        &bin(),
        &format!("tar tar={} file=disk.img", tarfile.display()),
        src.path(),
        "qemu-img convert -n disk.img \"$nbd\"",
    );
    assert_eq!(std::fs::metadata(&tarfile).unwrap().len(), before);
    let out = sh(&format!(
        "cd '{}' && tar xOf pax.tar disk.img && tar xOf pax.tar {LONG} | head -c 5",
        d.path().display()
    ));
    assert_eq!(out.stdout[..1 << 20], new[..]);
    assert_eq!(&out.stdout[1 << 20..], b"hello", "the other member is untouched");
}

#[test]
fn read_only_with_dash_r() {
    let d = archives();
    let disk = nbdkit_test::CaptiveDisk::builder("tar")
        .arg(format!("tar={}", d.path().join("gnu.tar").display()))
        .arg("file=disk.img")
        .readonly()
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 5).unwrap(), b"hello");
    assert_eq!(c.read((1 << 20) - 4, 4).unwrap(), b"tail");
    assert_eq!(c.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
}

#[rstest::rstest]
#[case(&["tar"], "you must supply tar=<TARFILE> and file=<MEMBER>")]
#[case(&["tar", "tar=gnu.tar"], "you must supply tar=<TARFILE> and file=<MEMBER>")]
#[case(&["tar", "tar=gnu.tar", "file=nope.img"], "gnu.tar: nope.img: no such member")]
#[case(&["tar", "tar=gnu.tar", "file=a/"], "a/: not a regular file")]
#[case(&["tar", "tar=disk.img", "file=x"], "not a tar file")]
#[case(&["tar", "tar=missing.tar", "file=x"], "missing.tar: No such file or directory")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    let d = archives();
    let out = nbdkit()
        .current_dir(d.path())
        .args(["-U", "-"])
        .args(args)
        .args(["--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(msg), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
