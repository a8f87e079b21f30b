//! How long a `CaptiveDisk` takes to become ready and to go away.
//!
//! ```sh
//! cargo run --release -p nbdkit-test --example guard_bench [ROUNDS] [BINARY...]
//! ```
//!
//! With no binaries it measures the nbdkit found by the usual search and,
//! when installed, `/usr/bin/nbdkit`. Each round starts a memory disk,
//! connects once (so "ready" is proven), and drops it. The first round per
//! binary is a warm-up and is not counted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nbdkit_test::CaptiveDisk;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(200, |a| a.parse().expect("ROUNDS"));
    let mut bins: Vec<Option<PathBuf>> = args.map(|a| Some(PathBuf::from(a))).collect();
    if bins.is_empty() {
        bins.push(None);
        if std::path::Path::new("/usr/bin/nbdkit").exists() {
            bins.push(Some("/usr/bin/nbdkit".into()));
        }
    }
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "binary", "ready p50", "ready p90", "drop p50", "drop p90"
    );
    for bin in bins {
        let mut ready = Vec::with_capacity(rounds);
        let mut gone = Vec::with_capacity(rounds);
        let mut name = String::new();
        for i in 0..=rounds {
            let mut b = CaptiveDisk::builder("memory").arg("size=1M");
            if let Some(p) = &bin {
                b = b.binary(p);
            }
            let t = Instant::now();
            let disk = b.start().expect("start");
            let r = t.elapsed();
            drop(disk.connect().expect("connect"));
            if name.is_empty() {
                name = disk.command_line().split(' ').next().unwrap_or("").to_string();
            }
            let t = Instant::now();
            drop(disk);
            let d = t.elapsed();
            if i > 0 {
                ready.push(r);
                gone.push(d);
            }
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10}",
            name,
            ms(pct(&mut ready, 50)),
            ms(pct(&mut ready, 90)),
            ms(pct(&mut gone, 50)),
            ms(pct(&mut gone, 90))
        );
    }
}
