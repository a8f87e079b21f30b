use crate::util::*;

/// A 4M MBR disk: primary partition 1 at 1M (1M long), an extended
/// partition 2 at 2M holding logical partitions 5 (at 2M+512, 1000
/// sectors) and 6 (at 3M+1K, 1500 sectors). Each partition starts with
/// its name.
const MBR: &str = "@0x1be 0 0 0 0 0x83 0 0 0 le32:2048 le32:2048 \
                   0 0 0 0 0x05 0 0 0 le32:4096 le32:4096 @0x1fe 0x55 0xaa \
                   @1048576 \"P1\" \
                   @2097598 0 0 0 0 0x83 0 0 0 le32:1 le32:1000 \
                   0 0 0 0 0x05 0 0 0 le32:2048 le32:2000 @2097662 0x55 0xaa \"L5\" \
                   @3146174 0 0 0 0 0x83 0 0 0 le32:2 le32:1500 @3146238 0x55 0xaa \
                   @3146752 \"L6\"";

/// A 4M GPT disk: 128 entries of 128 bytes; entry 1 is 1M..2M, entry 2 is
/// unused, entry 3 is 2M..3M.
const GPT: &str = "@0x1fe 0x55 0xaa @512 \"EFI PART\" @592 le32:128 le32:128 \
                   @1024 0x28*16 @1056 le64:2048 le64:4095 \
                   @1280 0xaf*16 @1312 le64:4096 le64:6143 \
                   @1048576 \"G1\" @2097152 \"G3\"";

fn start(disk: &str, args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("data")
        .filter("partition")
        .arg(disk)
        .arg("size=4M")
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[rstest::rstest]
#[case(MBR, "1", 1 << 20, b"P1")]
#[case(MBR, "5", 1000 * 512, b"L5")]
#[case(MBR, "6", 1500 * 512, b"L6")]
#[case(GPT, "1", 1 << 20, b"G1")]
#[case(GPT, "3", 1 << 20, b"G3")]
fn serves_the_partition(
    #[case] disk: &str, #[case] n: &str, #[case] size: u64, #[case] first: &[u8],
) {
    let disk = start(disk, &[&format!("partition={n}")]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), size);
    assert_eq!(c.read(0, 2).unwrap(), first);
    // Writes land inside the partition too.
    c.write(size - 2, b"zz").unwrap();
    assert_eq!(c.read(size - 3, 3).unwrap(), b"\0zz");
}

#[test]
fn writes_reach_the_right_place_below() {
    let (_dir, img) = one_partition_image();
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .filter("partition")
        .arg(img.to_str().unwrap())
        .arg("partition=1")
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    c.write(10, b"hello").unwrap();
    c.zero(4096, 4096).unwrap();
    c.flush().unwrap();
    let file = std::fs::read(&img).unwrap();
    assert_eq!(&file[(1 << 20) + 10..(1 << 20) + 15], b"hello");
    assert_eq!(&file[10..15], &[0u8; 5]);
}

#[rstest::rstest]
#[case(MBR, "2", "MBR partition 2 not found")]
#[case(MBR, "4", "MBR partition 4 not found")]
#[case(MBR, "7", "MBR partition 7 not found")]
#[case(
    "@0x1be 0 0 0 0 0x83 0 0 0 le32:1 le32:10 @0x1fe 0x55 0xaa",
    "5",
    "MBR logical partition selected, but there is no extended partition in the partition table"
)]
#[case(
    "@0x1be 0 0 0 0 0x83 0 0 0 le32:1 le32:100000 @0x1fe 0x55 0xaa",
    "1",
    "partition: partition is outside the disk"
)]
#[case("1 2 3", "1", "disk does not contain MBR or GPT partition table signature")]
#[case(GPT, "2", "GPT partition 2 not found")]
#[case(GPT, "129", "GPT partition number out of range")]
#[case(
    "@512 \"EFI PART\" @592 le32:128 le32:64 @0x1fe 0x55 0xaa",
    "1",
    "GPT partition entry size is < 128 bytes"
)]
#[case(
    "@512 \"EFI PART\" @592 le32:100000 le32:128",
    "1",
    "GPT partition table is too large for this disk"
)]
fn refuses_clients_when_the_partition_is_not_there(
    #[case] disk: &str, #[case] n: &str, #[case] msg: &str,
) {
    let disk = start(disk, &[&format!("partition={n}")]);
    assert!(disk.connect().is_err());
    let log = disk.log();
    assert!(log.contains(msg), "{log}");
}

#[test]
fn a_tiny_disk_has_no_partitions() {
    let disk = nbdkit_test::CaptiveDisk::builder("data")
        .filter("partition")
        .arg("1")
        .arg("size=1000")
        .arg("partition=1")
        .binary(bin())
        .start()
        .unwrap();
    assert!(disk.connect().is_err());
    assert!(disk.log().contains("disk is too small to be a partitioned disk"), "{}", disk.log());
}

const SCRIPT: &str = r#"nbdinfo --size "$uri" && nbdinfo --map "$uri" && nbdcopy "$uri" - | od -An -tx1 -v | sha256sum"#;

#[test]
fn serves_what_c_nbdkit_serves() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let c = c_nbdkit();
    for (disk, n, ok) in [
        (MBR, "1", true),
        (MBR, "2", false),
        (MBR, "3", false),
        (MBR, "5", true),
        (MBR, "6", true),
        (MBR, "7", false),
        (GPT, "1", true),
        (GPT, "2", false),
        (GPT, "3", true),
        (GPT, "200", false),
        ("1 2 3", "1", false),
    ] {
        let part = format!("partition={n}");
        let args = ["--filter=partition", "data", disk, "size=4M", "allocator=sparse", &part];
        let ours = run_captive(&bin(), &args, &format!("{SCRIPT} 2>/dev/null"));
        assert_eq!(ours.starts_with("status Some(0)"), ok, "{n} of {disk}: {ours}");
        if let Some(c) = &c {
            let theirs = run_captive(c, &args, &format!("{SCRIPT} 2>/dev/null"));
            assert_eq!(ours, theirs, "{n} of {disk}");
        }
    }
}

#[rstest::rstest]
#[case(&[], "partition: you must supply the partition parameter on the command line")]
#[case(&["partition=0"], "partition: invalid partition number")]
#[case(&["partition=x"], "partition: empty string where we expected a number")]
#[case(&["partition=-1"], "partition: negative numbers are not allowed")]
#[case(&["partition=4294967296"], "partition")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=partition", "memory", "1M"], args, msg);
}

#[test]
fn the_description_names_the_partition() {
    if !have("nbdinfo") {
        return;
    }
    let (_dir, img) = one_partition_image();
    let pread = format!(
        "pread=dd if={} skip=$4 count=$3 iflag=skip_bytes,count_bytes 2>/dev/null",
        img.display()
    );
    let args = [
        "--filter=partition",
        "eval",
        "get_size=echo 4194304",
        &pread,
        "export_description=echo a test disk",
        "partition=1",
    ];
    let script = r#"nbdinfo "$uri" | grep -E 'description|export-size'"#;
    let ours = run_captive(&bin(), &args, script);
    assert!(ours.contains("description: partition 1 of MBR disk: a test disk"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run_captive(&c, &args, script));
    }
}

/// A 4 MiB disk image whose MBR has one Linux partition, of 1 MiB from
/// sector 2048: its folder and path.
fn one_partition_image() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let mut bytes = vec![0u8; 4 << 20];
    bytes[0x1be + 4] = 0x83;
    bytes[0x1be + 8..0x1be + 12].copy_from_slice(&2048u32.to_le_bytes());
    bytes[0x1be + 12..0x1be + 16].copy_from_slice(&2048u32.to_le_bytes());
    bytes[0x1fe] = 0x55;
    bytes[0x1ff] = 0xaa;
    std::fs::write(&img, &bytes).unwrap();
    (dir, img)
}
