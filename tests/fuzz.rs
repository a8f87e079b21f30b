//! The fuzzing corpus, replayed through the same entry points the fuzzers
//! drive (`nbdkit::fuzz`), on the stable toolchain: every seed and every
//! input that once crashed must still pass without a panic or hang.

use std::path::PathBuf;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Each target and its entry point.
const TARGETS: &[(&str, Entry)] = &[
    ("handshake", nbdkit::fuzz::handshake),
    ("request", nbdkit::fuzz::request),
    ("data_plugin", nbdkit::fuzz::data_plugin),
    ("size", nbdkit::fuzz::size),
    ("tar", nbdkit::fuzz::tar),
    ("partition", nbdkit::fuzz::partition),
    ("sh_output", nbdkit::fuzz::sh_output),
    ("uri", nbdkit::fuzz::uri),
    ("nbd_replies", nbdkit::fuzz::nbd_replies),
];

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_corpus_input_passes() {
    for (target, entry) in TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for (path, bytes) in inputs {
            let r = std::panic::catch_unwind(|| entry(&bytes));
            assert!(r.is_ok(), "{target}: {} panicked", path.display());
        }
    }
}

#[test]
fn the_seeds_are_real_inputs() {
    // A corpus whose inputs all fail at the first check would fuzz
    // nothing: the seeds are real transcripts and files. Spot-check some.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seed = |t: &str, n: &str| std::fs::read(dir.join(t).join(n)).unwrap();
    assert_eq!(&seed("tar", "ustar")[..8], b"disk.img");
    assert_eq!(&seed("partition", "mbr-1")[1 + 510..1 + 512], &[0x55, 0xaa]);
    assert_eq!(&seed("partition", "gpt-1")[1 + 512..1 + 520], b"EFI PART");
    assert!(nbdkit::uri::parse(std::str::from_utf8(&seed("uri", "uri1")).unwrap()).is_ok());
    assert!(nbdkit::size::parse_size(std::str::from_utf8(&seed("size", "size0")).unwrap()).is_ok());
}
