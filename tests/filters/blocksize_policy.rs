use nbdkit_test::client::ZeroFlags;

use crate::util::*;

fn start(filters: &[&str], args: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut b = nbdkit_test::CaptiveDisk::builder("memory").arg("1M");
    for f in filters {
        b = b.filter(f);
    }
    b.args(args).binary(bin()).start().unwrap_or_else(|e| panic!("{e}"))
}

fn advertised(filters: &[&str], args: &[&str]) -> Option<(u32, u32, u32)> {
    let disk = start(filters, args);
    let c = disk.connect().unwrap();
    c.info().block_size.map(|b| (b.minimum, b.preferred, b.maximum))
}

#[rstest::rstest]
#[case(&[], None)]
#[case(&["blocksize-preferred=64K"], Some((1, 65536, u32::MAX)))]
#[case(&["blocksize-minimum=512"], Some((512, 4096, u32::MAX)))]
#[case(&["blocksize-maximum=1M"], Some((1, 4096, 1 << 20)))]
#[case(&["blocksize-minimum=4K", "blocksize-preferred=8K", "blocksize-maximum=64K"],
       Some((4096, 8192, 65536)))]
fn advertises_the_constraints(#[case] args: &[&str], #[case] want: Option<(u32, u32, u32)>) {
    assert_eq!(advertised(&["blocksize-policy"], args), want);
}

#[test]
fn what_is_not_given_comes_from_below() {
    // The cow filter below says (1, 64K, 4G-1).
    assert_eq!(
        advertised(&["blocksize-policy", "cow"], &["blocksize-minimum=512"]),
        Some((512, 65536, u32::MAX))
    );
    assert_eq!(advertised(&["blocksize-policy", "cow"], &[]), Some((1, 65536, u32::MAX)));
}

#[test]
fn constraints_out_of_order_refuse_clients() {
    let disk = start(&["blocksize-policy"], &["blocksize-maximum=1000"]);
    assert!(disk.connect().is_err());
    assert!(disk.log().contains("out of order"), "{}", disk.log());
}

#[test]
fn the_error_policy_refuses_what_breaks_the_constraints() {
    let disk = start(
        &["blocksize-policy"],
        &["blocksize-error-policy=error", "blocksize-minimum=512", "blocksize-maximum=4096"],
    );
    let mut c = disk.connect().unwrap();
    let einval = |r: std::io::Result<()>| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    };
    einval(c.read(0, 100).map(drop));
    einval(c.read(1, 512).map(drop));
    einval(c.write(512, &[1; 513]));
    einval(c.zero(0, 1000));
    einval(c.trim(100, 512));
    einval(c.cache(0, 10));
    einval(c.block_status(10, 512).map(drop));
    einval(c.zero_with(0, 100, ZeroFlags::default()));
    // What obeys them passes, and the maximum is only for data.
    c.write(512, &[1; 4096]).unwrap();
    assert_eq!(c.read(1024, 512).unwrap(), [1; 512]);
    c.zero(0, 65536).unwrap();
    c.trim(0, 65536).unwrap();
    c.cache(0, 65536).unwrap();
    c.block_status(0, 65536).unwrap();
}

/// libnbd with its own checks off sends what our client would split.
#[test]
fn refuses_like_c_nbdkit() {
    if !have("nbdsh") {
        return;
    }
    let script = r#"nbdsh -c 'h.add_meta_context("base:allocation")' -c "h.connect_uri('$uri')" -c '
h.set_strict_mode(0)
for f in [lambda: h.pread(100, 0), lambda: h.pread(512, 1), lambda: h.pread(8192, 0),
          lambda: h.pwrite(bytes(513), 512), lambda: h.zero(1000, 0),
          lambda: h.zero(8192, 0), lambda: h.trim(512, 100), lambda: h.cache(10, 0),
          lambda: h.block_status(512, 10, lambda *a: 0), lambda: h.pread(4096, 4096)]:
    try:
        f()
        print("ok")
    except nbd.Error as e:
        print(e.errno)
' 2>/dev/null"#;
    let args = [
        "--filter=blocksize-policy",
        "memory",
        "1M",
        "blocksize-error-policy=error",
        "blocksize-minimum=512",
        "blocksize-maximum=4096",
    ];
    let ours = run_captive(&bin(), &args, script);
    assert_eq!(
        ours,
        "status Some(0)\nEINVAL\nEINVAL\nEINVAL\nEINVAL\nEINVAL\nok\nEINVAL\nEINVAL\nEINVAL\nok\n"
    );
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run_captive(&c, &args, script));
    }
}

#[test]
fn the_allow_policy_passes_everything_on() {
    let disk =
        start(&["blocksize-policy"], &["blocksize-error-policy=allow", "blocksize-minimum=512"]);
    let mut c = disk.connect().unwrap();
    c.write(1, b"odd").unwrap();
    assert_eq!(c.read(1, 3).unwrap(), b"odd");
}

#[test]
fn advertises_what_c_nbdkit_advertises() {
    if !have("nbdinfo") {
        return;
    }
    let Some(c) = c_nbdkit() else { return };
    for args in [
        &[][..],
        &["blocksize-preferred=64K"],
        &["blocksize-minimum=512", "blocksize-maximum=1M"],
        &["blocksize-minimum=4K", "blocksize-preferred=8K", "blocksize-maximum=64K"],
    ] {
        for below in [&["memory", "1M"][..], &["--filter=cow", "memory", "1M"]] {
            let mut all = vec!["--filter=blocksize-policy"];
            all.extend_from_slice(below);
            all.extend_from_slice(args);
            let script = r#"nbdinfo "$uri" | grep block_size"#;
            let ours = run_captive(&bin(), &all, script);
            assert_eq!(ours, run_captive(&c, &all, script), "{all:?}");
        }
    }
}

#[rstest::rstest]
#[case(&["blocksize-error-policy=maybe"], "blocksize-policy: blocksize-error-policy=maybe: expected allow or error")]
#[case(&["blocksize-minimum=3"], "blocksize-minimum=3 must be a power of 2 no larger than 64K")]
#[case(&["blocksize-minimum=128K"], "must be a power of 2 no larger than 64K")]
#[case(&["blocksize-preferred=256"], "blocksize-preferred=256 must be a power of 2 from 512 to 32M")]
#[case(&["blocksize-preferred=64M"], "must be a power of 2 from 512 to 32M")]
#[case(&["blocksize-maximum=5G"], "blocksize-maximum=5G: expected a size no larger than 4G-1")]
#[case(&["blocksize-minimum=nope"], "blocksize-minimum=nope")]
#[case(&["blocksize-minimum=4K", "blocksize-preferred=512"], "blocksize-minimum=4096 is larger than blocksize-preferred=512")]
#[case(&["blocksize-preferred=8K", "blocksize-maximum=4K"], "blocksize-preferred=8192 is larger than blocksize-maximum=4096")]
#[case(&["blocksize-minimum=512", "blocksize-maximum=1000"], "blocksize-maximum=1000 must be 4G-1 or a multiple of blocksize-minimum (512)")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=blocksize-policy", "memory", "1M"], args, msg);
}
