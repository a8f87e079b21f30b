use nbdkit_test::client::ZeroFlags;

use super::common::*;
use crate::util::*;

const FAST: ZeroFlags = ZeroFlags { fast: true, no_hole: false, fua: false };

#[test]
fn zero_is_hidden_by_default() {
    let disk = start(&["nozero"], "memory", &["1M"]);
    let c = disk.connect().unwrap();
    assert!(!c.info().can_zero() && !c.info().can_fast_zero());
}

#[test]
fn emulate_writes_zeroes_and_fails_fast_zero() {
    let disk = start(&["nozero"], "memory", &["1M", "zeromode=emulate"]);
    let mut c = disk.connect().unwrap();
    assert!(c.info().can_zero() && c.info().can_fast_zero());
    c.write(0, &[1; 4096]).unwrap();
    c.zero(0, 4096).unwrap();
    assert_eq!(c.read(0, 4096).unwrap(), vec![0; 4096]);
    // Written zeroes are data, not a hole.
    assert_eq!(c.extents(0, 4096).unwrap()[0].flags & 1, 0);
    assert_eq!(c.zero_with(0, 512, FAST).unwrap_err().raw_os_error(), Some(libc::ENOTSUP));
}

#[test]
fn fast_zero_modes() {
    let try_fast = |args: &[&str]| {
        let disk = start(&["nozero"], "memory", args);
        let mut c = disk.connect().unwrap();
        (c.info().can_fast_zero(), c.zero_with(0, 512, FAST).map_err(|e| e.raw_os_error()))
    };
    assert_eq!(try_fast(&["1M", "zeromode=plugin"]), (true, Ok(())));
    assert_eq!(
        try_fast(&["1M", "zeromode=plugin", "fastzeromode=slow"]),
        (true, Err(Some(libc::ENOTSUP)))
    );
    let disk = start(&["nozero"], "memory", &["1M", "zeromode=plugin", "fastzeromode=none"]);
    assert!(!disk.connect().unwrap().info().can_fast_zero());
    // data has zero but no fast zero: ignore turns a fast zero into a zero.
    let disk = start(&["nozero"], "data", &["1 2 3", "zeromode=notrim", "fastzeromode=ignore"]);
    let mut c = disk.connect().unwrap();
    assert!(c.info().can_fast_zero());
    c.zero_with(0, 3, FAST).unwrap();
    assert_eq!(c.read(0, 3).unwrap(), [0, 0, 0]);
}

#[test]
fn notrim_drops_may_trim() {
    // The log filter below shows what reaches the plugin.
    let sent = |mode: &str| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let disk = start(
            &["nozero", "log"],
            "memory",
            &["1M", mode, &format!("logfile={}", log.display())],
        );
        let mut c = disk.connect().unwrap();
        c.zero(0, 4096).unwrap();
        c.disconnect().unwrap();
        disk.shutdown().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        text.contains("Zero id=1 offset=0x0 count=0x1000 trim=1 ")
    };
    assert!(!sent("zeromode=notrim"));
    assert!(sent("zeromode=plugin"));
}

#[test]
fn plugin_modes_need_a_plugin_that_zeroes() {
    // The nozero filter below hides zero from the one above.
    let disk = start(&["nozero", "nozero"], "memory", &["1M", "zeromode=plugin"]);
    assert!(disk.connect().is_err());
}

#[test]
fn flags_as_c() {
    if !have("nbdinfo") {
        return;
    }
    for z in ["none", "emulate", "notrim", "plugin"] {
        for f in ["default", "none", "slow", "ignore"] {
            same_as_c(
                &format!("--filter=nozero memory 1M zeromode={z} fastzeromode={f}"),
                "nbdinfo \"$uri\" | grep -E \"can_(fast_)?zero\"",
            );
        }
    }
}

#[rstest::rstest]
#[case("zeromode=trim", "nozero: unknown zeromode 'trim'")]
#[case("fastzeromode=fast", "nozero: unknown fastzeromode 'fast'")]
fn unknown_modes(#[case] arg: &str, #[case] msg: &str) {
    refuses(&["--filter=nozero", "memory", "1M", arg], msg);
}
