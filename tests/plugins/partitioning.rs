//! The partitioning plugin: whole disks compared byte for byte with C
//! nbdkit's (partition GUIDs included: both seed them with the start time
//! in seconds), tables read back by sfdisk and sgdisk, writes, and the
//! parameters both refuse.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nbdkit_test::CaptiveDisk;

use crate::util::*;

/// Partition files of assorted sizes, named p1..p6: 10 bytes, 3000, 1 MiB
/// (sparse, with data at 7000), 1536, 70000 and 513; also `pé` (a
/// non-ASCII name) and one whose path is 36 bytes or more.
fn parts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fill = |name: &str, len: usize, seed: u8| {
        let data: Vec<u8> =
            (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect();
        std::fs::write(dir.path().join(name), data).unwrap();
    };
    fill("p1", 10, 1);
    fill("p2", 3000, 2);
    let p3 = std::fs::File::create(dir.path().join("p3")).unwrap();
    p3.set_len(1 << 20).unwrap();
    p3.write_all_at(b"data in p3", 7000).unwrap();
    fill("p4", 1536, 4);
    fill("p5", 70000, 5);
    fill("p6", 513, 6);
    fill("pé", 600, 7);
    std::fs::create_dir(dir.path().join("a-directory-with-a-long-name")).unwrap();
    fill("a-directory-with-a-long-name/p7", 1000, 8);
    dir
}

/// The arguments with each name of a file in `dir` made a path in it.
fn in_dir(dir: &Path, args: &[&str]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let p = dir.join(a);
            if !a.contains('=') && p.exists() {
                p.to_str().unwrap().to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

fn start(binary: &Path, args: &[String]) -> CaptiveDisk {
    CaptiveDisk::builder("partitioning")
        .args(args)
        .binary(binary)
        .start()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
}

fn whole(disk: &CaptiveDisk) -> Vec<u8> {
    let mut c = disk.connect().unwrap();
    let size = c.size();
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let n = (size - out.len() as u64).min(4 << 20) as usize;
        out.extend(c.read(out.len() as u64, n).unwrap());
    }
    out
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A GPT disk with the unique partition GUIDs and the CRCs that cover
/// them zeroed (for comparing disks made in different seconds).
fn mask_guids(mut disk: Vec<u8>) -> Vec<u8> {
    if disk.len() < 1024 || &disk[512..520] != b"EFI PART" {
        return disk;
    }
    let le = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
    let last = disk.len() - 512;
    for header in [512, last] {
        let lba = le(&disk[header + 72..header + 80]) as usize;
        let n = u32::from_le_bytes(disk[header + 80..header + 84].try_into().unwrap()) as usize;
        for i in 0..n {
            let e = lba * 512 + i * 128;
            disk[e + 16..e + 32].fill(0);
        }
        disk[header + 16..header + 20].fill(0);
        disk[header + 88..header + 92].fill(0);
    }
    disk
}

/// The disk C nbdkit and ours serve for `args`. Both are started within
/// one second when possible, so that they draw the same GUIDs; the flag
/// says whether they were.
fn served_by_both(c: &Path, args: &[String]) -> (Vec<u8>, Vec<u8>, bool) {
    for attempt in 0.. {
        let t0 = now();
        let theirs = start(c, args);
        let ours = start(&bin(), args);
        let same_second = now() == t0;
        if same_second || attempt == 5 {
            return (whole(&theirs), whole(&ours), same_second);
        }
    }
    unreachable!()
}

#[rstest::rstest]
#[case::one_file(&["p1"])]
#[case::two_files(&["p1", "p2"])]
#[case::four_files_mbr(&["p1", "p2", "p3", "p4"])]
#[case::five_files_gpt(&["p1", "p2", "p3", "p4", "p5"])]
#[case::gpt_one_file(&["partition-type=gpt", "p1"])]
#[case::gpt_four_files(&["partition-type=GPT", "p4", "p3", "p2", "p1"])]
#[case::mbr_logical_partitions(&["partition-type=mbr", "p1", "p2", "p3", "p4", "p5", "p6"])]
#[case::mbr_five_is_one_logical(&["partition-type=dos", "p1", "p2", "p3", "p4", "p5"])]
#[case::mbr_settings_per_file(&[
    "partition-type=mbr", "alignment=512", "p1", "mbr-id=0x82", "p2", "mbr-id=default",
    "alignment=4096", "p3", "mbr-id=7", "p4", "p5", "alignment=1k", "mbr-id=0254", "p6",
])]
#[case::gpt_settings_per_file(&[
    "partition-type=gpt", "alignment=512", "p1",
    "type-guid=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "p2",
    "type-guid={21686148-6449-6e6f-744e-656564454649}", "alignment=64k", "p3",
    "type-guid=default", "p4", "mbr-id=0x07", "p5",
])]
#[case::gpt_names(&["partition-type=gpt", "p1", "pé", "a-directory-with-a-long-name/p7"])]
fn same_disk_as_c_nbdkit(#[case] args: &[&str]) {
    let Some(c) = c_nbdkit() else { return };
    let dir = parts();
    let args = in_dir(dir.path(), args);
    let (theirs, ours, same_second) = served_by_both(&c, &args);
    assert_eq!(ours.len(), theirs.len(), "{args:?}");
    if same_second {
        assert!(ours == theirs, "{args:?}: the disks differ");
    } else {
        eprintln!("never started within one second: GUIDs not compared");
        assert!(mask_guids(ours) == mask_guids(theirs), "{args:?}");
    }
}

#[test]
fn gpt_with_more_than_128_partitions_same_as_c_nbdkit() {
    let Some(c) = c_nbdkit() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["alignment=512".to_string()];
    for i in 1..=130 {
        let p = dir.path().join(format!("f{i}"));
        std::fs::write(&p, vec![i as u8; i * 37]).unwrap();
        args.push(p.to_str().unwrap().to_string());
    }
    let (theirs, ours, same_second) = served_by_both(&c, &args);
    // 256 entries: 64 sectors of them.
    assert_eq!(u32::from_le_bytes(ours[512 + 80..512 + 84].try_into().unwrap()), 256);
    if same_second {
        assert!(ours == theirs);
    } else {
        assert!(mask_guids(ours) == mask_guids(theirs));
    }
}

/// Our disk for `args`, saved as `disk.img` in `dir`.
fn saved(dir: &Path, args: &[&str]) -> PathBuf {
    let args = in_dir(dir, args);
    let img = dir.join("disk.img");
    std::fs::write(&img, whole(&start(&bin(), &args))).unwrap();
    img
}

#[test]
fn sfdisk_reads_the_mbr_and_ebrs() {
    if !have("sfdisk") {
        return;
    }
    let dir = parts();
    let img = saved(
        dir.path(),
        &["partition-type=mbr", "p1", "p2", "mbr-id=0x82", "p3", "p4", "mbr-id=default", "p5"],
    );
    let out = sh(&format!("sfdisk -d '{}'", img.display()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<String> = table
        .lines()
        .filter(|l| l.contains(": start="))
        .map(|l| l.split_once(" : ").unwrap().1.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "start= 2048, size= 1, type=83, bootable",
            "start= 4096, size= 6, type=83",
            "start= 6144, size= 2048, type=82",
            "start= 8192, size= 4233, type=f",
            "start= 10240, size= 3, type=82",
            "start= 12288, size= 137, type=83",
        ],
        "{table}"
    );
}

#[test]
fn sgdisk_finds_no_problem_in_the_gpt() {
    if !have("sgdisk") {
        return;
    }
    let dir = parts();
    let img = saved(dir.path(), &["p1", "p2", "p3", "p4", "p5", "p6"]);
    let out = sh(&format!("sgdisk -v '{}' && sgdisk -p '{}'", img.display(), img.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No problems found"), "{text}");
    assert!(
        text.contains("Disk identifier (GUID): 00000000-0000-0000-0000-000000000000"),
        "{text}"
    );
    for (n, start) in [(1, 2048), (2, 4096), (3, 6144), (4, 8192), (5, 10240), (6, 12288)] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().take(2).eq([n.to_string(), start.to_string()])),
            "partition {n} at {start}: {text}"
        );
    }
}

#[test]
fn writes_reach_the_files_and_tables_stay() {
    let dir = parts();
    let args = in_dir(dir.path(), &["p1", "p2"]);
    let disk = start(&bin(), &args);
    let mut c = disk.connect().unwrap();
    let p1 = dir.path().join("p1");
    let mb = 1 << 20;
    // p1 is sectors 2048.. (10 bytes, then zeroes to 2 MiB).
    c.write(mb + 2, b"AB").unwrap();
    // Ending in padding is fine if the padding gets zeroes.
    c.write(mb + 8, b"yz\0\0\0").unwrap();
    let p1_now = std::fs::read(&p1).unwrap();
    assert_eq!(p1_now.len(), 10);
    assert_eq!(&p1_now[..4], &[1u8 | 1, 31u8.wrapping_add(1) | 1, b'A', b'B']);
    assert_eq!(&p1_now[8..], b"yz");
    // Anything else in the padding, or a change to the table: EIO, and
    // nothing is written.
    let e = c.write(mb + 6, b"QQQQQ").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(&p1).unwrap(), p1_now);
    let mut mbr = c.read(0, 512).unwrap();
    c.write(0, &mbr).unwrap();
    mbr[0x1be] = 0;
    assert_eq!(c.write(0, &mbr).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(c.zero(0, 512).unwrap_err().raw_os_error(), Some(libc::EIO));
    // Zeroing is writing zeroes.
    c.zero(mb, 4).unwrap();
    assert_eq!(&std::fs::read(&p1).unwrap()[..4], [0; 4]);
    c.write_fua(2 * mb, b"second").unwrap();
    c.flush().unwrap();
    assert_eq!(&std::fs::read(dir.path().join("p2")).unwrap()[..6], b"second");
    assert_eq!(c.read(2 * mb, 6).unwrap(), b"second");
    let info = c.info();
    assert!(info.can_flush() && info.can_fua() && info.can_zero() && info.can_multi_conn());
    assert!(info.can_cache() && info.can_fast_zero() && !info.can_trim());
    let fast = nbdkit_test::client::ZeroFlags { fast: true, ..Default::default() };
    assert_eq!(c.zero_with(mb, 4, fast).unwrap_err().raw_os_error(), Some(libc::ENOTSUP));
    c.cache(0, c.size()).unwrap();
    // Another connection sees the same disk.
    assert_eq!(disk.connect().unwrap().read(2 * mb, 6).unwrap(), b"second");
}

#[test]
fn files_are_opened_read_write_even_with_r() {
    // The running server's own executable is busy (ETXTBSY) for writing,
    // and C nbdkit opens partitions read-write even under -r.
    let exe = bin();
    for ro in [&[][..], &["-r"][..]] {
        let out = nbdkit()
            .args(["-U", "-"])
            .args(ro)
            .args(["partitioning", exe.to_str().unwrap(), "--run", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Text file busy"), "{err}");
    }
}

#[rstest::rstest]
#[case(&[], "at least one file= parameter must be supplied")]
#[case(&["P", "partition-type=foo"], "unknown partition-type: foo")]
#[case(&["alignment=100", "P"], "should be >= sector size 512 and <= maximum alignment 1048576")]
#[case(&["alignment=2M", "P"], "should be >= sector size 512 and <= maximum alignment 1048576")]
#[case(&["alignment=513", "P"], "should be a multiple of sector size 512")]
#[case(&["alignment=x", "P"], "could not parse size string (x)")]
#[case(&["mbr-id=0x100", "P"], "mbr-id: could not parse number: \"0x100\": Numerical result out of range")]
#[case(&["mbr-id=-1", "P"], "mbr-id: negative numbers are not allowed")]
#[case(&["mbr-id=0x8z", "P"], "trailing garbage")]
#[case(&["type-guid=123", "P"], "could not validate GUID: 123")]
#[case(&["/nonexistent/p"], "/nonexistent/p: No such file or directory")]
#[case(&["/dev/null"], "/dev/null: zero length partitions are not allowed")]
#[case(&["foo=bar", "P"], "unknown parameter 'foo'")]
#[case(&["partition-type=mbr", "BIG", "BIG"], "use partition-type=gpt")]
fn bad_parameters_refused_like_c_nbdkit(#[case] args: &[&str], #[case] msg: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    std::fs::write(&p, b"x").unwrap();
    // A 1 TiB sparse file: two of them are too big for MBR.
    let big = dir.path().join("big");
    std::fs::File::create(&big).unwrap().set_len(1 << 40).unwrap();
    let args: Vec<&str> = args
        .iter()
        .map(|a| match *a {
            "P" => p.to_str().unwrap(),
            "BIG" => big.to_str().unwrap(),
            a => a,
        })
        .collect();
    let tmp = scratch();
    let run = |cmd: &mut assert_cmd::Command| {
        let out = cmd
            .arg("-U")
            .arg(tmp.path().join("nbd.sock"))
            .arg("partitioning")
            .args(&args)
            .args(["--run", "true"])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&mut nbdkit());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(msg), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    if let Some(c) = c_nbdkit() {
        let (code, err) = run(&mut assert_cmd::Command::new(c));
        assert_eq!(code, Some(1), "C nbdkit: {err}");
    }
}

#[test]
fn big_files_pick_gpt_and_alignment_must_be_a_power_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::File::create(&big).unwrap().set_len(1 << 40).unwrap();
    let big = big.to_str().unwrap();
    let disk = disk(&["partitioning", big, big]);
    let mut c = disk.connect().unwrap();
    assert_eq!(&c.read(512, 8).unwrap(), b"EFI PART");
    // C nbdkit 1.32 aborts on an assertion here; we refuse it plainly.
    let out = nbdkit()
        .args(["-U", "-", "partitioning", "alignment=1536", big, "--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partition alignment 1536 should be a power of 2"), "{err}");
}
