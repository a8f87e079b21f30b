use std::time::{Duration, Instant};

use nbdkit_test::client::ZeroFlags;

use crate::util::*;

fn start(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("memory")
        .filter("delay")
        .arg("1M")
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

#[test]
fn each_kind_of_request_waits_at_least_its_delay() {
    let disk = start(&[
        "delay-read=300ms",
        "delay-write=0.3",
        "delay-zero=300ms",
        "delay-trim=300ms",
        "delay-extents=300ms",
        "delay-cache=300ms",
    ]);
    let mut c = disk.connect().unwrap();
    let least = Duration::from_millis(300);
    assert!(timed(|| c.read(0, 1).unwrap()).1 >= least);
    assert!(timed(|| c.write(0, b"x").unwrap()).1 >= least);
    assert!(timed(|| c.zero(0, 512).unwrap()).1 >= least);
    assert!(timed(|| c.trim(0, 512).unwrap()).1 >= least);
    assert!(timed(|| c.block_status(0, 512).unwrap()).1 >= least);
    assert!(timed(|| c.cache(0, 512).unwrap()).1 >= least);
    // Flush has no delay.
    assert!(timed(|| c.flush().unwrap()).1 < least);
}

#[test]
fn wdelay_and_rdelay_are_the_short_forms() {
    let disk = start(&["rdelay=200ms", "wdelay=200ms"]);
    let mut c = disk.connect().unwrap();
    let least = Duration::from_millis(200);
    assert!(timed(|| c.read(0, 1).unwrap()).1 >= least);
    assert!(timed(|| c.write(0, b"x").unwrap()).1 >= least);
    assert!(timed(|| c.trim(0, 512).unwrap()).1 >= least);
}

#[test]
fn a_delayed_request_holds_up_no_other_client() {
    let disk = start(&["delay-write=3"]);
    let mut slow = disk.connect().unwrap();
    let writer = std::thread::spawn(move || slow.write(0, b"late").unwrap());
    let mut c = disk.connect().unwrap();
    let (_, took) = timed(|| c.read(4096, 8).unwrap());
    assert!(took < Duration::from_secs(2), "{took:?}");
    writer.join().unwrap();
}

#[test]
fn open_and_close_delays() {
    let disk = start(&["delay-open=400ms"]);
    let (c, took) = timed(|| disk.connect().unwrap());
    assert!(took >= Duration::from_millis(400), "{took:?}");
    drop(c);
    let disk = start(&["delay-close=400ms"]);
    let c = disk.connect().unwrap();
    // disconnect() waits for the server to close the connection.
    let (_, took) = timed(|| c.disconnect().unwrap());
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[test]
fn fast_zero_can_fail_at_once() {
    let fast = ZeroFlags { fast: true, ..Default::default() };
    let disk = start(&["delay-zero=2", "delay-fast-zero=false"]);
    let mut c = disk.connect().unwrap();
    let (r, took) = timed(|| c.zero_with(0, 512, fast));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOTSUP));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[rstest::rstest]
#[case(&["delay-read=soon"], "delay: delay-read=soon: expected seconds or NNms")]
#[case(&["wdelay=-1"], "delay: wdelay=-1")]
#[case(&["delay-fast-zero=perhaps"], "delay-fast-zero")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=delay", "memory", "1M"], args, msg);
}

/// `nbdkit -f -U sock --filter=noparallel --filter=delay null 1M
/// serialize=connections rdelay=60 ARGS`: one client at a time, each read
/// a minute long.
fn slow_server() -> Server {
    Server::start(&[
        "--filter=noparallel",
        "--filter=delay",
        "null",
        "1M",
        "serialize=connections",
        "rdelay=60",
    ])
}

/// Connect, and leave a read waiting in the server.
fn send_a_read(s: &Server) -> Raw {
    let (mut raw, _, _) = Raw::open(s.connect(), false);
    raw.request(0, 0, 1, 0, 512, &[]);
    raw
}

#[test]
fn a_waiting_read_ends_when_its_client_goes() {
    let s = slow_server();
    let raw = send_a_read(&s);
    std::thread::sleep(Duration::from_millis(300));
    drop(raw);
    // The next client is served at once, not after a minute.
    let (r, took) = timed(|| {
        let (mut raw, size, _) = Raw::open(s.connect(), false);
        raw.request(3, 0, 2, 0, 0, &[]); // NBD_CMD_FLUSH
        size
    });
    assert_eq!(r, 1 << 20);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_waiting_read_ends_when_the_server_stops() {
    let s = slow_server();
    let mut raw = send_a_read(&s);
    std::thread::sleep(Duration::from_millis(300));
    signal(s.pid(), libc::SIGTERM);
    // The read gives up at once, with ESHUTDOWN, as C's does.
    let (reply, took) = timed(|| raw.reply(0));
    assert_eq!(reply.error, 108, "NBD_ESHUTDOWN");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (st, took) = timed(|| s.stop());
    assert!(st.success(), "{st:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
