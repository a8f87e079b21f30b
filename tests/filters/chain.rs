use std::time::{Duration, Instant};

use crate::util::*;

fn start(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut b = nbdkit_test::CaptiveDisk::builder("memory").binary(bin());
    for a in args {
        b = match a.strip_prefix("--filter=") {
            Some(f) => b.filter(f),
            None => b.arg(a),
        };
    }
    b.start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_first_filter_given_is_closest_to_the_client() {
    // error above delay: the error comes at once. delay above error: the
    // read waits, then fails.
    for (order, slow) in [
        (["--filter=error", "--filter=delay"], false),
        (["--filter=delay", "--filter=error"], true),
    ] {
        let mut args = order.to_vec();
        args.extend(["1M", "error-pread-rate=1", "delay-read=1"]);
        let disk = start(&args);
        let mut c = disk.connect().unwrap();
        let t = Instant::now();
        let e = c.read(0, 512).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        let waited = t.elapsed() >= Duration::from_secs(1);
        assert_eq!(waited, slow, "{order:?}: {:?}", t.elapsed());
    }
}

#[test]
fn each_key_goes_to_its_owner_and_strays_are_named() {
    // Filter keys and plugin keys mix freely on the command line.
    let disk = start(&["--filter=error", "error-pwrite-rate=1", "size=1M", "error-pwrite=ENOSPC"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert_eq!(c.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    let out = nbdkit()
        .args(["-U", "-", "--filter=error", "memory", "1M", "error-rat=1", "--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown parameter 'error-rat'"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn help_shows_each_filter_and_the_plugin() {
    let out =
        nbdkit().args(["--filter=delay", "--filter=error", "memory", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (d, e, m) = (
        text.find("filter: delay").unwrap(),
        text.find("filter: error").unwrap(),
        text.find("plugin: memory").unwrap(),
    );
    assert!(d < e && e < m, "{text}");
    assert!(text.contains("error-rate="), "{text}");
    let all = nbdkit().arg("--help").output().unwrap();
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(all.contains("Built-in filters:"), "{all}");
}

/// `-v` traces each call at each layer as C does
/// (`nbdkit: ... debug: LAYER: pread count=N offset=N`), top first.
#[test]
fn verbose_traces_each_layer() {
    if !have("nbdsh") {
        return;
    }
    let out = nbdkit()
        .args(["-v", "-U", "-", "--filter=noextents", "--filter=nozero", "memory", "1M"])
        .args(["--run", "nbdsh -u \"$uri\" -c 'h.pread(512, 1024); h.flush()'"])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let trace: Vec<&str> = err
        .lines()
        .filter_map(|l| l.split_once("debug: ").map(|(_, t)| t))
        .filter(|t| t.contains(": pread ") || t.ends_with(": flush") || t.contains(": open "))
        .collect();
    assert_eq!(
        trace,
        [
            "noextents: open readonly=0 exportname=\"\" tls=0",
            "nozero: open readonly=0 exportname=\"\" tls=0",
            "memory: open readonly=0 exportname=\"\" tls=0",
            "noextents: pread count=512 offset=1024",
            "nozero: pread count=512 offset=1024",
            "memory: pread count=512 offset=1024",
            "noextents: flush",
            "nozero: flush",
            "memory: flush",
        ],
        "{err}"
    );
}
