use nbdkit_test::client::ZeroFlags;

use crate::util::*;

fn start(filters: &[&str], args: &[&str]) -> nbdkit_test::CaptiveDisk {
    super::common::start(filters, "memory", args)
}

#[rstest::rstest]
#[case(&["1000001"], 1000001, 4096)]
#[case(&["1000001", "minblock=512"], 999936, 4096)]
#[case(&["1000001", "minblock=64K"], 983040, 65536)]
fn size_and_advertised_block_size(#[case] args: &[&str], #[case] size: u64, #[case] pref: u32) {
    let disk = start(&["blocksize"], args);
    let c = disk.connect().unwrap();
    assert_eq!(c.size(), size);
    let b = c.info().block_size.unwrap();
    assert_eq!((b.minimum, b.preferred, b.maximum), (1, pref, u32::MAX));
}

#[test]
fn unaligned_writes_and_zeroes_keep_their_neighbours() {
    let disk = start(&["blocksize"], &["1M", "minblock=4096"]);
    let mut c = disk.connect().unwrap();
    c.write(0, &[1u8; 16384]).unwrap();
    c.write(4094, b"abc").unwrap();
    assert_eq!(c.read(4093, 5).unwrap(), [1, b'a', b'b', b'c', 1]);
    c.zero(8190, 5000).unwrap();
    assert_eq!(c.read(8189, 2).unwrap(), [1, 0]);
    assert!(c.read(8190, 5000).unwrap().iter().all(|&b| b == 0));
    assert_eq!(c.read(13190, 2).unwrap(), [1, 1]);
    assert_eq!(c.read(1, 3).unwrap(), [1, 1, 1]);
}

#[test]
fn unaligned_ends_of_a_trim_are_ignored() {
    let disk = start(&["blocksize"], &["1M", "minblock=4096"]);
    let mut c = disk.connect().unwrap();
    c.write(0, &[1u8; 16384]).unwrap();
    c.trim(100, 12000).unwrap();
    let got = c.read(0, 16384).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 1));
    assert!(got[4096..8192].iter().all(|&b| b == 0));
    assert!(got[8192..].iter().all(|&b| b == 1));
}

#[test]
fn a_fast_zero_that_needs_splitting_is_refused() {
    let disk = start(&["blocksize"], &["1M", "minblock=4096", "maxlen=8192"]);
    let mut c = disk.connect().unwrap();
    let fast = ZeroFlags { fast: true, ..ZeroFlags::default() };
    for (off, len) in [(100, 4096), (0, 4000), (0, 12288)] {
        let e = c.zero_with(off, len, fast).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSUP), "{off} {len}");
    }
    c.zero_with(4096, 8192, fast).unwrap();
}

/// The policy filter below refuses anything unaligned or too long: through
/// the blocksize filter, every request still succeeds.
#[test]
fn the_plugin_sees_only_aligned_bounded_requests() {
    let policy =
        ["blocksize-error-policy=error", "blocksize-minimum=512", "blocksize-maximum=4096"];
    let bare = start(&["blocksize-policy"], &[&["1M"][..], &policy].concat());
    let mut c = bare.connect().unwrap();
    assert_eq!(c.read(1, 10).unwrap_err().raw_os_error(), Some(libc::EINVAL));

    let disk =
        start(&["blocksize", "blocksize-policy"], &[&["1M", "maxdata=4096"][..], &policy].concat());
    let mut c = disk.connect().unwrap();
    let data: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
    c.write(3, &data).unwrap();
    assert_eq!(c.read(3, 20000).unwrap(), data);
    assert_eq!(c.read(1, 10).unwrap(), c_prefix(&data));
    c.zero(700, 9000).unwrap();
    c.trim(100, 100000).unwrap();
    c.cache(1, 70000).unwrap();
    c.extents(1, (1 << 20) - 1).unwrap();
}

/// Bytes 1..11 of the disk after writing `data` at 3.
fn c_prefix(data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&data[..8]);
    v
}

/// An eval plugin that logs every request it sees into `log`.
fn logging_plugin(log: &std::path::Path) -> Vec<String> {
    let l = log.display();
    vec![
        "eval".into(),
        "get_size=echo 1000001".into(),
        format!("pread=echo \"pread $3 $4\" >>{l}; head -c $3 /dev/zero"),
        format!("pwrite=echo \"pwrite $3 $4 $5\" >>{l}; cat >/dev/null"),
        "can_write=exit 0".into(),
        format!("trim=echo \"trim $3 $4 $5\" >>{l}"),
        "can_trim=exit 0".into(),
        format!("zero=echo \"zero $3 $4 $5\" >>{l}"),
        "can_zero=exit 0".into(),
        format!("cache=echo \"cache $3 $4\" >>{l}"),
        "can_cache=echo native".into(),
        format!(
            "extents=echo \"extents $3 $4 $5\" >>{l}; echo \"$4 100 hole,zero\"; \
             echo \"$(($4+100)) 1000 zero\"; echo \"$(($4+1100)) 1000000 hole,zero\""
        ),
        "can_extents=exit 0".into(),
    ]
}

#[test]
fn the_plugin_sees_what_c_nbdkits_plugin_sees() {
    if !have("nbdsh") || !have("nbdinfo") {
        return;
    }
    let script = r#"nbdsh -u "$uri" -c '
h.pread(10000, 100)
h.pwrite(b"x" * 9000, 1000)
h.pwrite(b"y" * 10, 4096)
h.trim(20000, 300)
h.zero(20000, 300)
h.zero(8192, 4096, nbd.CMD_FLAG_NO_HOLE)
h.cache(7000, 1)
' && nbdinfo --map=base:allocation "$uri" | head -3"#;
    let run = |nbdkit: &std::path::Path| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut args = vec!["--filter=blocksize".to_string()];
        args.extend(logging_plugin(&log));
        args.extend(["minblock=512", "maxdata=4096", "maxlen=8192"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_captive(nbdkit, &args, script);
        // The extents calls repeat 512 bytes at a time; keep the first few.
        let seen: Vec<String> = slurp(&log).lines().take(40).map(String::from).collect();
        format!("{out}{}", seen.join("\n"))
    };
    let ours = run(&bin());
    assert!(ours.starts_with("status Some(0)"), "{ours}");
    assert!(ours.contains("pwrite 4096 1024"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run(&c));
    }
}

#[rstest::rstest]
#[case(&["minblock=0"], "blocksize: minblock must not be 0 when given")]
#[case(&["minblock=3"], "blocksize: minblock=3 must be a power of 2 no larger than 64K")]
#[case(&["minblock=128K"], "must be a power of 2 no larger than 64K")]
#[case(&["maxdata=5G"], "blocksize: maxdata=5368709120 is too large")]
#[case(&["minblock=512", "maxdata=1000"], "blocksize: maxdata=1000 must be a multiple of minblock (512)")]
#[case(&["minblock=512", "maxlen=513"], "blocksize: maxlen=513 must be a multiple of minblock (512)")]
#[case(&["maxlen=lots"], "blocksize: maxlen")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=blocksize", "memory", "1M"], args, msg);
}

/// Partial-block writes from many clients at once into the same blocks:
/// each read-modify-write must see the others' results.
#[test]
fn concurrent_partial_writes_to_one_block_all_land() {
    let disk = start(&["blocksize"], &["1M", "minblock=4096"]);
    super::common::concurrent_partial_writes_all_land(&disk);
}

/// An eval plugin of 64K that logs writes (with their flags) and flushes
/// to `log`; with `native`, it does FUA itself, else FUA is a flush.
fn fua_plugin(log: &std::path::Path, native: bool) -> Vec<String> {
    let l = log.display();
    let mut p = vec![
        "eval".to_string(),
        "get_size=echo 65536".into(),
        "pread=head -c $3 /dev/zero".into(),
        format!("pwrite=echo \"pwrite $3 $4 $5\" >>{l}; cat >/dev/null"),
        format!("flush=echo flush >>{l}"),
    ];
    if native {
        p.push("can_fua=echo native".into());
    }
    p
}

#[rstest::rstest]
#[case(false, &["pwrite 512 0 ", "pwrite 512 512 ", "pwrite 512 1024 ", "flush"])]
#[case(true, &["pwrite 512 0 fua", "pwrite 512 512 fua", "pwrite 512 1024 fua"])]
fn fua_on_split_writes(#[case] native: bool, #[case] want: &[&str]) {
    let dir = scratch();
    let log = dir.path().join("log");
    let d = nbdkit_test::CaptiveDisk::builder("eval")
        .args(&fua_plugin(&log, native)[1..])
        .filter("blocksize")
        .args(["minblock=512", "maxdata=512"])
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    assert!(c.info().can_fua());
    c.write_fua(0, &[1; 1536]).unwrap();
    assert_eq!(slurp(&log).lines().collect::<Vec<_>>(), want);
}

#[test]
fn extents_are_asked_for_as_c_asks() {
    let dir = scratch();
    let log = dir.path().join("log");
    // The plugin describes exactly the range it is asked about.
    let d = nbdkit_test::CaptiveDisk::builder("eval")
        .args([
            "get_size=echo 65536".to_string(),
            "pread=head -c $3 /dev/zero".into(),
            format!("extents=echo \"$3 $4\" >>{}; echo $4 $3 hole,zero", log.display()),
        ])
        .filter("blocksize")
        .args(["minblock=512"])
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    // From the block holding the offset, for the length rounded up to
    // blocks: [0, 512) for a request at 1; the client learns up to 512.
    let got = c.block_status(1, 512).unwrap();
    assert_eq!(slurp(&log), "512 0\n");
    assert_eq!(got.iter().map(|e| (e.offset, e.length)).collect::<Vec<_>>(), [(1, 511)]);
}
