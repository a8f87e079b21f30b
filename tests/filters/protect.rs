use super::common::*;
use crate::util::*;

#[test]
fn protected_bytes_change_only_to_themselves() {
    let disk = start(&["protect"], "memory", &["1M", "protect=0-1023"]);
    let mut c = disk.connect().unwrap();
    let eperm = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(eperm(c.write(512, b"x")), Some(libc::EPERM));
    assert_eq!(eperm(c.write(1020, b"abcdefgh")), Some(libc::EPERM));
    // Rewriting what is there is allowed, and so is zeroing zeroes.
    c.write(512, &[0; 512]).unwrap();
    c.zero(0, 4096).unwrap();
    c.trim(0, 1024).unwrap();
    c.write(1024, b"free").unwrap();
    assert_eq!(c.read(1024, 4).unwrap(), b"free");
}

#[test]
fn zero_and_trim_of_data_are_refused() {
    let disk = start(&["protect"], "data", &["1 2 3 @4096 9", "protect=0-10"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.zero(0, 512).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(c.trim(0, 512).unwrap_err().raw_os_error(), Some(libc::EPERM));
    c.zero(11, 100).unwrap();
    assert_eq!(c.read(0, 3).unwrap(), [1, 2, 3]);
}

#[test]
fn complement_and_many_ranges() {
    let disk = start(&["protect"], "memory", &["1M", "protect=~4096-8191", "protect=0x100-0x1ff"]);
    let mut c = disk.connect().unwrap();
    c.write(4096, &[1; 4096]).unwrap();
    for off in [0, 4095, 8192, 1 << 19] {
        assert!(c.write(off, b"x").is_err(), "{off}");
    }
}

#[test]
fn same_as_c() {
    if !have("nbdsh") {
        return;
    }
    let script = "nbdsh -u \"$uri\" -c \"
for off in [0, 511, 512, 1023, 1024, 5000]:
    try:
        h.pwrite(b\\\"x\\\", off); print(off, \\\"ok\\\")
    except nbd.Error as e:
        print(off, e.errno)
\"";
    let out = super::common::same_as_c(
        "--filter=protect memory 1M protect=~512-1023 protect=5000-",
        script,
    );
    assert!(out.contains("512 ok\n") && out.contains("0 EPERM\n"), "{out}");
}

#[rstest::rstest]
#[case("protect=100", "protect: cannot parse range, missing '-': 100")]
#[case("protect=9-1", "protect: invalid range, end < start: 9-1")]
#[case("protect=x-1", "protect: range: ")]
fn bad_ranges(#[case] arg: &str, #[case] msg: &str) {
    refuses(&["--filter=protect", "memory", "1M", arg], msg);
}
