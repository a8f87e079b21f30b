use crate::util::*;

/// A directory of three images of different sizes, served with file dir=.
fn images() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (n, size) in [("a", 4096u64), ("b", 8192), ("c", 12288)] {
        std::fs::File::create(d.path().join(n)).unwrap().set_len(size).unwrap();
    }
    d
}

/// Sorted export names (and descriptions) that `nbdinfo --list` shows.
fn listed(nbdkit: &std::path::Path, dir: &std::path::Path, args: &str) -> String {
    let out = sh(&format!(
        "{} -U - --filter=exportname file dir={} {args} --run 'nbdinfo --list --json \"$uri\"' | grep -E '\"(export-name|description)\"' | sort",
        nbdkit.display(),
        dir.display()
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn list_modes_and_descriptions_match_c_nbdkit() {
    if !have("nbdinfo") {
        return;
    }
    let d = images();
    let c = c_nbdkit();
    for args in [
        "",
        "exportname-list=empty",
        "exportname-list=defaultonly default-export=b",
        "exportname-list=explicit exportname=a exportname=c",
        "exportname-list=explicit exportname=a exportdesc=fixed:hello",
        "exportname-list=explicit exportname=b exportdesc=script:'echo size-of-$name'",
    ] {
        let ours = listed(&bin(), d.path(), args);
        if let Some(c) = &c {
            assert_eq!(ours, listed(c, d.path(), args), "{args}");
        }
    }
    let ours =
        listed(&bin(), d.path(), "exportname-list=explicit exportname=a exportdesc=fixed:hello");
    assert!(ours.contains("\"a\"") && ours.contains("hello") && !ours.contains("\"b\""), "{ours}");
}

#[test]
fn default_export_and_strict_names() {
    let d = images();
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("dir={}", d.path().display()))
        .filter("exportname")
        .args(["default-export=b", "exportname-strict=true", "exportname=b", "exportname=c"])
        .binary(bin())
        .start()
        .unwrap();
    // The client's "" is checked before it becomes b: not allowed.
    assert!(disk.connect().is_err());
    let sock = disk.socket().unwrap();
    assert_eq!(nbdkit_test::Client::connect_unix(sock, "b").unwrap().size(), 8192);
    assert_eq!(nbdkit_test::Client::connect_unix(sock, "c").unwrap().size(), 12288);
    // a exists, but is not allowed.
    assert!(nbdkit_test::Client::connect_unix(sock, "a").is_err());
}

#[test]
fn strict_allows_the_default_export_when_empty_is_named() {
    let d = images();
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("dir={}", d.path().display()))
        .filter("exportname")
        .args(["default-export=b", "exportname-strict=true", "exportname=", "exportname=b"])
        .binary(bin())
        .start()
        .unwrap();
    // "" is allowed, and is b, which is allowed too.
    assert_eq!(disk.connect().unwrap().size(), 8192);
    // With "" named but the default not, "" resolves to a refused name.
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("dir={}", d.path().display()))
        .filter("exportname")
        .args(["default-export=a", "exportname-strict=true", "exportname="])
        .binary(bin())
        .start()
        .unwrap();
    assert!(disk.connect().is_err());
}

#[test]
fn an_empty_default_export_leaves_the_plugin_its_own() {
    if !have("nbdinfo") {
        return;
    }
    let dir = scratch();
    let plugin = dir.path().join("plugin.sh");
    std::fs::write(
        &plugin,
        "case $1 in\n\
         default_export) echo a ;;\n\
         open) echo \"$3\" ;;\n\
         get_size) case $2 in a) echo 1 ;; *) exit 1 ;; esac ;;\n\
         pread) exit 1 ;;\n\
         *) exit 2 ;;\n\
         esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = plugin.display().to_string();
    let script = "nbdinfo --no-content --json \"$uri\" | grep -E '\"export-(name|size)\"'";
    let args = ["--filter=exportname", "sh", &plugin, "default-export="];
    let ours = run_captive(&bin(), &args, script);
    // The client is told "", and gets a's size.
    assert!(ours.contains("\"export-name\": \"\""), "{ours}");
    assert!(ours.contains("\"export-size\": 1"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run_captive(&c, &args, script));
    }
}

#[test]
fn bad_modes() {
    for arg in ["exportname-list=some", "exportdesc=maybe"] {
        let out = nbdkit()
            .args(["-U", "-", "--filter=exportname", "memory", "1M", arg, "--run", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{arg}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(arg.split('=').next().unwrap()));
    }
}
