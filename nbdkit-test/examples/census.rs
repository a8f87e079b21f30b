//! A leak census: disks started by test processes that then die at random
//! points, and captive servers killed at random points. Counts what is
//! left behind (server processes, sockets, socket directories); the target
//! is 0 of each.
//!
//! ```sh
//! cargo run --release -p nbdkit-test --example census -- [--children 100] [--disks 10] [--captive 200]
//! ```
//!
//! Part 1: `--children` processes (this example, re-executed) each start
//! `--disks` CaptiveDisks from as many threads at once, then die by
//! SIGKILL (from us), `abort` or `exit` after a random delay, some while
//! disks are still starting. Part 2: `--captive` runs of
//! `nbdkit -U - memory 1M --run CMD` where, after a random delay, we
//! SIGKILL either nbdkit or CMD.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let st = s.rsplit(')').next().unwrap_or("").trim_start();
        !st.starts_with('Z') && !st.starts_with('X')
    })
}

/// Wait until none of `pids` runs (up to 10 s); those still running.
fn survivors(pids: &[u32]) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.iter().filter(|&&p| alive(p)).count()
}

/// The child: start disks from many threads, print each, then die as told.
fn child(disks: usize, how: &str, delay_ms: u64) {
    let mut threads = Vec::new();
    for _ in 0..disks {
        threads.push(std::thread::spawn(|| {
            let disk = nbdkit_test::CaptiveDisk::new(["memory", "size=1M"]).expect("start");
            println!("DISK {} {}", disk.pid(), disk.socket().unwrap().display());
            std::mem::forget(disk); // never dropped: only the crash path cleans up
        }));
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    match how {
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        _ => std::thread::sleep(Duration::from_secs(60)), // killed by the parent
    }
}

fn main() {
    if !arg("--child", "").is_empty() {
        let disks = arg("--disks", "10").parse().unwrap();
        let delay = arg("--delay", "0").parse().unwrap();
        return child(disks, &arg("--child", ""), delay);
    }
    let children: u64 = arg("--children", "100").parse().unwrap();
    let disks: u64 = arg("--disks", "10").parse().unwrap();
    let captive: u64 = arg("--captive", "200").parse().unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let me = std::env::current_exe().unwrap();

    // Part 1.
    let (mut started, mut left_servers, mut left_sockets, mut left_dirs) = (0, 0, 0, 0);
    let t = Instant::now();
    for _ in 0..children {
        let how = ["kill", "abort", "exit"][rng.below(3) as usize];
        let delay = rng.below(400);
        let mut c = Command::new(&me)
            .args(["--child", how, "--disks", &disks.to_string(), "--delay", &delay.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        if how == "kill" {
            std::thread::sleep(Duration::from_millis(delay));
            let _ = c.kill();
        }
        let _ = c.wait();
        let lines = reader.join().unwrap();
        let mut pids = Vec::new();
        let mut sockets = Vec::new();
        for l in lines {
            let mut w = l.split_whitespace().skip(1);
            if let (Some(p), Some(s)) = (w.next(), w.next()) {
                pids.push(p.parse::<u32>().unwrap());
                sockets.push(PathBuf::from(s));
            }
        }
        started += pids.len();
        left_servers += survivors(&pids);
        left_sockets += sockets.iter().filter(|s| s.exists()).count();
        left_dirs += sockets.iter().filter(|s| s.parent().is_some_and(|d| d.exists())).count();
    }
    // Servers still starting when their test process died are not printed;
    // any of those left running would show here.
    let strays = Command::new("pgrep")
        .args(["-f", "--exit-with-parent -U - --print-uri memory size=1M"])
        .output();
    let strays = strays.map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count());
    println!(
        "part 1: {children} test processes, {started} disks seen started ({disks} asked each), {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("        left: {left_servers} servers, {left_sockets} sockets, {left_dirs} directories, {strays} stray servers");

    // Part 2.
    let nbdkit = arg("--server", "");
    let (mut n_servers, mut n_cmds, mut n_dirs) = (0, 0, 0);
    let t = Instant::now();
    for i in 0..captive {
        let mut c = if nbdkit.is_empty() {
            // The embedded server, as nbdkit-test runs it.
            let mut c = Command::new(&me);
            c.env("NBDKIT_TEST_EMBEDDED_SERVER", "serve-v1");
            c
        } else {
            Command::new(&nbdkit)
        };
        let mut child = c
            .args(["-U", "-", "memory", "1M", "--run", "echo $$ $unixsocket; exec sleep 60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let mut w = line.split_whitespace();
        let (Some(cmd), Some(sock)) = (w.next(), w.next()) else {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        };
        let cmd: u32 = cmd.parse().unwrap();
        let dir = PathBuf::from(sock).parent().unwrap().to_path_buf();
        std::thread::sleep(Duration::from_millis(rng.below(20)));
        if i % 2 == 0 {
            let _ = child.kill(); // SIGKILL nbdkit
        } else {
            // SIGKILL the command: nbdkit then exits with its status.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(cmd as i32, libc::SIGKILL) };
        }
        let _ = child.wait();
        n_servers += survivors(&[child.id()]);
        n_cmds += survivors(&[cmd]);
        // The directory goes once the last holder of the server's pipe has
        // gone (the reaper acts on that): give it a moment.
        let settle = Instant::now() + Duration::from_secs(5);
        while dir.exists() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(10));
        }
        n_dirs += usize::from(dir.exists());
    }
    println!(
        "part 2: {captive} captive servers ({} nbdkit SIGKILLed, {} CMD SIGKILLed), {:.1} s",
        captive.div_ceil(2),
        captive / 2,
        t.elapsed().as_secs_f64()
    );
    println!("        left: {n_servers} servers, {n_cmds} commands, {n_dirs} socket directories");
}
