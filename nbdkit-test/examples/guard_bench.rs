//! How long a disk takes to become ready and to go away.
//!
//! ```sh
//! cargo run --release -p nbdkit-test --example guard_bench [ROUNDS] [BINARY...]
//! ```
//!
//! With no binaries it measures the server compiled into this example
//! (re-executed, as in any test), this workspace's `target/release/nbdkit`
//! and `/usr/bin/nbdkit` when they exist, and an in-process [`RustDisk`].
//! Each round starts a 1 MiB memory disk, connects once (so "ready" is
//! proven), and drops it. The first round of each is a warm-up and is not
//! counted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nbdkit_test::{CaptiveDisk, MemoryDisk, RustDisk};

/// What is measured.
enum Kind {
    /// A CaptiveDisk: the embedded server (None) or a binary.
    Captive(Option<PathBuf>),
    /// A RustDisk serving a MemoryDisk.
    InProcess,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(200, |a| a.parse().expect("ROUNDS"));
    let mut kinds: Vec<Kind> = args.map(|a| Kind::Captive(Some(PathBuf::from(a)))).collect();
    if kinds.is_empty() {
        kinds.push(Kind::Captive(None));
        let ours = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/nbdkit");
        for p in [ours, PathBuf::from("/usr/bin/nbdkit")] {
            if p.exists() {
                kinds.push(Kind::Captive(Some(p)));
            }
        }
        kinds.push(Kind::InProcess);
    }
    println!(
        "{:<50} {:>10} {:>10} {:>10} {:>10}",
        "server", "ready p50", "ready p90", "drop p50", "drop p90"
    );
    for kind in kinds {
        let name = match &kind {
            Kind::Captive(None) => "embedded (this executable, re-executed)".to_string(),
            Kind::Captive(Some(p)) => p.display().to_string(),
            Kind::InProcess => "in-process RustDisk".to_string(),
        };
        let mut ready = Vec::with_capacity(rounds);
        let mut gone = Vec::with_capacity(rounds);
        for i in 0..=rounds {
            let (r, d) = match &kind {
                Kind::Captive(bin) => {
                    let mut b = CaptiveDisk::builder("memory").arg("size=1M");
                    if let Some(p) = bin {
                        b = b.binary(p);
                    }
                    let t = Instant::now();
                    let disk = b.start().expect("start");
                    let r = t.elapsed();
                    drop(disk.connect().expect("connect"));
                    let t = Instant::now();
                    drop(disk);
                    (r, t.elapsed())
                }
                Kind::InProcess => {
                    let t = Instant::now();
                    let disk = RustDisk::new(MemoryDisk::new(1 << 20)).expect("start");
                    let r = t.elapsed();
                    drop(disk.connect().expect("connect"));
                    let t = Instant::now();
                    drop(disk);
                    (r, t.elapsed())
                }
            };
            if i > 0 {
                ready.push(r);
                gone.push(d);
            }
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<50} {:>10} {:>10} {:>10} {:>10}",
            name,
            ms(pct(&mut ready, 50)),
            ms(pct(&mut ready, 90)),
            ms(pct(&mut gone, 50)),
            ms(pct(&mut gone, 90))
        );
    }
}
