//! A soak: good and hostile clients against one server for a bounded time.
//!
//! ```sh
//! cargo run --release -p nbdkit-test --example soak -- [--minutes M] [--good N] [--hostile K] [--server PATH] [--max-rss-mib R]
//! ```
//!
//! The server (the embedded one by default, or `--server /usr/bin/nbdkit`)
//! serves a 64 MiB memory disk on a Unix socket. Good clients each own a
//! 1 MiB region: they write random blocks and read them back, checking
//! every byte. Hostile clients, in turn: garbage handshakes, truncated
//! handshakes, random option bytes, random and oversized requests,
//! truncated write payloads, slow readers that pipeline reads and never
//! read the replies, and abrupt closes. The soak reports rounds, the
//! server's peak RSS and its open fds before and after, and fails (exit
//! status 1) on a wrong byte, a server that dies, RSS past the bound, or
//! fds left open once every client is gone.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbdkit_test::CaptiveDisk;

/// A small xorshift generator: no dependency, reproducible per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Running, not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let st = s.rsplit(')').next().unwrap_or("").trim_start();
        !st.starts_with('Z') && !st.starts_with('X')
    })
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

const DISK: u64 = 64 << 20;
const REGION: u64 = 1 << 20;
/// Hostile clients write only from here on; good clients (at most 32) own
/// a region each below it.
const HOSTILE: u64 = 32 << 20;

fn good(
    socket: PathBuf, id: u64, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>, bad: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1));
    let base = id * REGION;
    let mut model = vec![0u8; REGION as usize];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut nbd) = nbdkit_test::Client::connect_unix(&socket, "") else {
            errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for _ in 0..50 {
            let len = 512 * (1 + rng.below(64)) as usize;
            let off = 512 * rng.below((REGION - len as u64) / 512);
            let data = rng.bytes(len);
            if nbd.write(base + off, &data).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            model[off as usize..off as usize + len].copy_from_slice(&data);
            let roff = 512 * rng.below((REGION - 65536) / 512);
            match nbd.read(base + roff, 65536) {
                Ok(got) if got == model[roff as usize..roff as usize + 65536] => {}
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {
                    eprintln!("soak: good client {id}: wrong bytes at {}", base + roff);
                    bad.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            rounds.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn opt(o: u32, data: &[u8]) -> Vec<u8> {
    let mut b = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    b.extend_from_slice(&o.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

fn request(cmd: u16, cookie: u64, off: u64, len: u32) -> Vec<u8> {
    let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&cmd.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&off.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// Connect, read the greeting, send the flags and NBD_OPT_GO for "".
fn into_transmission(socket: &PathBuf) -> Option<UnixStream> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).ok()?;
    s.write_all(&3u32.to_be_bytes()).ok()?;
    s.write_all(&opt(7, &[0, 0, 0, 0, 0, 0])).ok()?;
    // Replies to GO: INFO then ACK, each a 20-byte header and data.
    for _ in 0..2 {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).ok()?;
        let n = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let mut d = vec![0u8; n];
        s.read_exact(&mut d).ok()?;
    }
    Some(s)
}

fn hostile(socket: PathBuf, id: u64, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) {
    let mut rng = Rng(0xdead_beef ^ (id + 1) << 20);
    while !stop.load(Ordering::Relaxed) {
        let kind = rng.below(8);
        let _ = (|| -> Option<()> {
            match kind {
                // Garbage instead of a handshake.
                0 => {
                    let mut s = UnixStream::connect(&socket).ok()?;
                    let n = rng.below(4096) as usize;
                    let _ = s.write_all(&rng.bytes(n));
                }
                // A handshake cut short.
                1 => {
                    let mut s = UnixStream::connect(&socket).ok()?;
                    let mut hello = [0u8; 18];
                    s.read_exact(&mut hello).ok()?;
                    s.write_all(&3u32.to_be_bytes()[..rng.below(4) as usize]).ok()?;
                }
                // Random options, some declaring huge lengths.
                2 => {
                    let mut s = UnixStream::connect(&socket).ok()?;
                    let mut hello = [0u8; 18];
                    s.read_exact(&mut hello).ok()?;
                    s.write_all(&3u32.to_be_bytes()).ok()?;
                    for _ in 0..rng.below(20) {
                        let (o_num, o_len) = (rng.below(16) as u32, rng.below(64) as usize);
                        let mut o = opt(o_num, &rng.bytes(o_len));
                        if rng.below(4) == 0 {
                            o[12..16].copy_from_slice(&(rng.next() as u32).to_be_bytes());
                        }
                        s.write_all(&o).ok()?;
                    }
                }
                // Random requests, oversized and out of range.
                3 => {
                    let mut s = into_transmission(&socket)?;
                    for c in 0..rng.below(50) {
                        let cmd = rng.below(10) as u16;
                        // In range, only in the hostile half of the disk:
                        // the good clients' bytes are theirs.
                        let off = if rng.below(2) == 0 {
                            rng.next()
                        } else {
                            HOSTILE + rng.below(DISK - HOSTILE)
                        };
                        let len = if rng.below(3) == 0 { rng.next() as u32 } else { 512 };
                        let mut r = request(cmd, c, off, len);
                        if cmd == 1 && len == 512 {
                            r.extend_from_slice(&[0xAB; 512]);
                        }
                        s.write_all(&r).ok()?;
                    }
                }
                // A write whose payload never fully arrives.
                4 => {
                    let mut s = into_transmission(&socket)?;
                    s.write_all(&request(1, 1, 60 << 20, 1 << 20)).ok()?;
                    let n = rng.below(1 << 20) as usize;
                    s.write_all(&rng.bytes(n)).ok()?;
                }
                // A slow reader: many reads pipelined, replies never read.
                5 => {
                    let mut s = into_transmission(&socket)?;
                    s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
                    for c in 0..256 {
                        s.write_all(&request(0, c, 0, 4 << 20)).ok()?;
                    }
                    std::thread::sleep(Duration::from_millis(rng.below(300)));
                }
                // Abrupt close in the middle of a read reply.
                6 => {
                    let mut s = into_transmission(&socket)?;
                    s.write_all(&request(0, 1, 0, 32 << 20)).ok()?;
                    let mut b = vec![0u8; rng.below(65536) as usize];
                    let _ = s.read(&mut b);
                }
                // Connect and say nothing at all.
                _ => {
                    let _s = UnixStream::connect(&socket).ok()?;
                    std::thread::sleep(Duration::from_millis(rng.below(50)));
                }
            }
            Some(())
        })();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    let minutes: f64 = arg("--minutes", "1").parse().expect("--minutes");
    let good_n: u64 = arg("--good", "4").parse::<u64>().expect("--good").min(HOSTILE / REGION);
    let hostile_n: u64 = arg("--hostile", "8").parse().expect("--hostile");
    let max_rss_mib: u64 = arg("--max-rss-mib", "1536").parse().expect("--max-rss-mib");
    let server = arg("--server", "");
    let mut b = CaptiveDisk::builder("memory").arg(format!("size={DISK}"));
    if !server.is_empty() {
        b = b.binary(&server);
    }
    let disk = b.start().expect("the server starts");
    let pid = disk.pid();
    let socket = disk.socket().unwrap().to_path_buf();
    let fds_before = fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let (good_rounds, hostile_rounds, bad, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut threads = Vec::new();
    for id in 0..good_n {
        let (s, st, r, b, e) =
            (socket.clone(), stop.clone(), good_rounds.clone(), bad.clone(), errors.clone());
        threads.push(std::thread::spawn(move || good(s, id, st, r, b, e)));
    }
    for id in 0..hostile_n {
        let (s, st, r) = (socket.clone(), stop.clone(), hostile_rounds.clone());
        threads.push(std::thread::spawn(move || hostile(s, id, st, r)));
    }
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut peak = 0;
    let mut died = false;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        if !running(pid) {
            died = true;
            break;
        }
        peak = peak.max(rss_kib(pid));
        if bad.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // Let the server notice the last closes, then count its fds.
    let settle = Instant::now() + Duration::from_secs(10);
    while fds(pid) > fds_before && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fds_after = fds(pid);
    let alive = !died && running(pid);
    println!("server            {}", disk.command_line().split(' ').next().unwrap_or(""));
    println!("minutes           {minutes}");
    println!("good rounds       {}", good_rounds.load(Ordering::Relaxed));
    println!("hostile rounds    {}", hostile_rounds.load(Ordering::Relaxed));
    println!("wrong bytes       {}", bad.load(Ordering::Relaxed));
    println!("good-client errors {}", errors.load(Ordering::Relaxed));
    println!("server alive      {alive}");
    println!("peak RSS          {} MiB (bound {max_rss_mib} MiB)", peak / 1024);
    println!("open fds          {fds_before} before, {fds_after} after");
    let ok = alive
        && bad.load(Ordering::Relaxed) == 0
        && errors.load(Ordering::Relaxed) == 0
        && peak / 1024 <= max_rss_mib
        && fds_after <= fds_before;
    println!("result            {}", if ok { "PASS" } else { "FAIL" });
    drop(disk);
    std::process::exit(if ok { 0 } else { 1 });
}
