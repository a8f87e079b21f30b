use crate::util::*;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const REP_SERVER: u32 = 2;
const OLD_MAGIC: u64 = 0x0000_4202_8186_1253;
const EF_HAS_FLAGS: u16 = 1;
const EF_READ_ONLY: u16 = 1 << 1;
const EF_SEND_FLUSH: u16 = 1 << 2;
const EF_SEND_FUA: u16 = 1 << 3;
const EF_SEND_TRIM: u16 = 1 << 5;
const EF_SEND_WRITE_ZEROES: u16 = 1 << 6;
const EF_SEND_CACHE: u16 = 1 << 10;
const EF_SEND_FAST_ZERO: u16 = 1 << 11;

// ------------------------------------------------------------------ helpers

fn mem() -> Server {
    Server::start(&["memory", "size=1M"])
}

fn client(srv: &Server, structured: bool) -> Raw {
    Raw::open(srv.connect(), structured).0
}

/// Deterministic, position-dependent bytes (never all zero).
fn fill(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i.wrapping_mul(31) ^ seed.wrapping_mul(131)) % 251 + 1) as u8)
        .collect()
}

/// Send one request with a distinctive cookie; check the cookie comes back;
/// return (error, data).
fn ask(r: &mut Raw, cmd: u16, flags: u16, offset: u64, len: u32, data: &[u8]) -> (u32, Vec<u8>) {
    const COOKIE: u64 = 0xdead_beef_0bad_cafe;
    r.request(cmd, flags, COOKIE, offset, len, data);
    let rl = if cmd == CMD_READ { len as usize } else { 0 };
    let rep = r.reply(rl);
    assert_eq!(rep.cookie, COOKIE, "reply to cmd {cmd} has the wrong cookie");
    (rep.error, rep.data)
}

fn err(r: &mut Raw, cmd: u16, flags: u16, offset: u64, len: u32, data: &[u8]) -> u32 {
    ask(r, cmd, flags, offset, len, data).0
}

fn write_ok(r: &mut Raw, offset: u64, data: &[u8]) {
    let e = err(r, CMD_WRITE, 0, offset, data.len() as u32, data);
    assert_eq!(e, 0, "write at {offset} len {}", data.len());
}

fn read_ok(r: &mut Raw, offset: u64, len: u32) -> Vec<u8> {
    let (e, d) = ask(r, CMD_READ, 0, offset, len, &[]);
    assert_eq!(e, 0, "read at {offset} len {len}");
    assert_eq!(d.len(), len as usize);
    d
}

/// A good request on a connection that just saw an error.
fn still_good(r: &mut Raw) {
    let d = read_ok(r, 0, 512);
    assert_eq!(d.len(), 512);
}

/// A good write + read-back on a memory connection.
fn still_good_rw(r: &mut Raw, offset: u64, seed: u64) {
    let d = fill(seed, 777);
    write_ok(r, offset, &d);
    assert_eq!(read_ok(r, offset, 777), d);
}

/// The server is alive and serves a brand new client correctly.
fn fresh_client_works(srv: &Server, seed: u64) {
    assert!(alive(srv.pid()), "server died");
    let mut r = client(srv, seed.is_multiple_of(2));
    still_good_rw(&mut r, 300_000 + seed * 1000, seed);
    assert!(alive(srv.pid()), "server died");
}

/// The server closes this connection (EOF or reset) within a few seconds;
/// anything it still sends before is drained.
fn expect_closed(s: &mut UnixStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: server did not close the connection: {e}"),
        }
    }
}

/// Read the 18-byte newstyle greeting and send `cflags`.
fn hello_with(r: &mut Raw, cflags: u32) {
    assert_eq!(r.u64(), NBDMAGIC);
    assert_eq!(r.u64(), IHAVEOPT);
    assert_eq!(r.u16(), 3);
    r.send(&cflags.to_be_bytes());
}

fn info_payload(name: &str) -> Vec<u8> {
    let mut p = (name.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p
}

/// Block status descriptors: (length, flags).
fn descriptors(data: &[u8]) -> Vec<(u32, u32)> {
    assert_eq!(data.len() % 8, 0, "block status payload {data:?}");
    data.chunks(8)
        .map(|c| {
            (
                u32::from_be_bytes(c[0..4].try_into().unwrap()),
                u32::from_be_bytes(c[4..8].try_into().unwrap()),
            )
        })
        .collect()
}

fn wait_exit(srv: &mut Server, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut st = None;
    wait_until(limit, || {
        st = srv.child.try_wait().unwrap();
        st.is_some()
    });
    st
}

// ------------------------------------------------------------- round trips

fn round_trips(structured: bool) {
    let srv = mem();
    let (mut r, size, flags) = Raw::open(srv.connect(), structured);
    assert_eq!(size, MIB);
    for f in [
        EF_HAS_FLAGS,
        EF_SEND_FLUSH,
        EF_SEND_FUA,
        EF_SEND_TRIM,
        EF_SEND_WRITE_ZEROES,
        EF_SEND_CACHE,
        EF_SEND_FAST_ZERO,
    ] {
        assert_ne!(flags & f, 0, "memory export flags {flags:#x} lack {f:#x}");
    }
    assert_eq!(flags & EF_READ_ONLY, 0);

    // Unaligned write straddling a 32 KiB page boundary, read back exactly
    // and with one byte of (still zero) margin each side.
    let d = fill(1, 5000);
    let off = 32768 - 1234;
    write_ok(&mut r, off, &d);
    assert_eq!(read_ok(&mut r, off, 5000), d);
    let wide = read_ok(&mut r, off - 1, 5002);
    assert_eq!(wide[0], 0);
    assert_eq!(&wide[1..5001], &d[..]);
    assert_eq!(wide[5001], 0);
    // A read inside the written range, unaligned both ends.
    assert_eq!(read_ok(&mut r, off + 17, 333), d[17..350].to_vec());

    // FUA write.
    let d2 = fill(2, 4099);
    assert_eq!(err(&mut r, CMD_WRITE, CMD_FLAG_FUA, 100_003, 4099, &d2), 0);
    assert_eq!(read_ok(&mut r, 100_003, 4099), d2);

    // Flush.
    assert_eq!(err(&mut r, CMD_FLUSH, 0, 0, 0, &[]), 0);

    // Trim, then the range reads as zeros; bytes around it survive.
    assert_eq!(err(&mut r, CMD_TRIM, 0, off + 100, 1000, &[]), 0);
    let after = read_ok(&mut r, off, 5000);
    assert_eq!(&after[..100], &d[..100]);
    assert!(after[100..1100].iter().all(|&b| b == 0), "trimmed range not zero");
    assert_eq!(&after[1100..], &d[1100..]);

    // Write zeroes, then zeros; neighbours survive.
    assert_eq!(err(&mut r, CMD_WRITE_ZEROES, 0, 100_003 + 10, 2000, &[]), 0);
    let z = read_ok(&mut r, 100_003, 4099);
    assert_eq!(&z[..10], &d2[..10]);
    assert!(z[10..2010].iter().all(|&b| b == 0), "zeroed range not zero");
    assert_eq!(&z[2010..], &d2[2010..]);

    // Write zeroes with FUA.
    assert_eq!(err(&mut r, CMD_WRITE_ZEROES, CMD_FLAG_FUA, 100_003, 10, &[]), 0);
    assert!(read_ok(&mut r, 100_003, 10).iter().all(|&b| b == 0));

    // Cache.
    assert_eq!(err(&mut r, CMD_CACHE, 0, 0, 65536, &[]), 0);
    assert_eq!(err(&mut r, CMD_CACHE, 0, off, 5000, &[]), 0);

    // Whole-disk read and the last byte.
    assert_eq!(read_ok(&mut r, 0, MIB as u32).len(), MIB as usize);
    assert_eq!(read_ok(&mut r, MIB - 1, 1), vec![0]);

    // Clean disconnect; the server goes on.
    r.request(CMD_DISC, 0, 9, 0, 0, &[]);
    expect_closed(&mut r.s, "NBD_CMD_DISC");
    fresh_client_works(&srv, 1);
}

#[test]
fn round_trips_simple_replies() {
    round_trips(false);
}

#[test]
fn round_trips_structured_replies() {
    round_trips(true);
}

#[test]
fn block_status_on_memory() {
    let srv = mem();
    let mut r = client(&srv, true);
    // Two whole 32 KiB pages at 64 KiB.
    write_ok(&mut r, 65536, &fill(3, 65536));

    let (e, d) = ask(&mut r, CMD_BLOCK_STATUS, 0, 0, MIB as u32, &[]);
    assert_eq!(e, 0);
    let ds = descriptors(&d);
    assert!(ds.len() >= 2, "descriptors {ds:?}");
    assert_eq!(ds[0], (65536, 3), "unwritten start is hole|zero: {ds:?}");
    assert_eq!(ds[1], (65536, 0), "written pages are data: {ds:?}");
    if ds.len() > 2 {
        assert_eq!(ds[2].1, 3, "{ds:?}");
    }
    let total: u64 = ds.iter().map(|&(l, _)| u64::from(l)).sum();
    assert!(total <= MIB, "descriptors exceed the request: {ds:?}");
    assert!(ds.iter().all(|&(l, _)| l > 0), "{ds:?}");

    // REQ_ONE: exactly one descriptor, no longer than asked.
    for (off, len, want) in [
        (0u64, MIB as u32, 3u32),
        (0, 1000, 3),
        (65536, MIB as u32 - 65536, 0),
        (65536 + 100, 200, 0),
        (200_000, 4096, 3),
    ] {
        let (e, d) = ask(&mut r, CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, off, len, &[]);
        assert_eq!(e, 0);
        let ds = descriptors(&d);
        assert_eq!(ds.len(), 1, "REQ_ONE at {off}+{len}: {ds:?}");
        assert!(ds[0].0 > 0 && ds[0].0 <= len, "REQ_ONE at {off}+{len}: {ds:?}");
        assert_eq!(ds[0].1, want, "REQ_ONE at {off}+{len}: {ds:?}");
    }
    // Without REQ_ONE on a small range: the extent goes on to the end of
    // its 32 KiB page, past the request, as C reports it.
    let (e, d) = ask(&mut r, CMD_BLOCK_STATUS, 0, 65536 + 100, 200, &[]);
    assert_eq!(e, 0);
    let ds = descriptors(&d);
    assert_eq!(ds, vec![(32768 - 100, 0)]);
    still_good(&mut r);
}

fn pipelined(structured: bool) {
    let srv = mem();
    let mut r = client(&srv, structured);
    const N: u64 = 64;
    // 64 pipelined writes to distinct unaligned regions.
    let region = |i: u64| (i * 9000 + i * 7 + 3, 1000 + (i as u32) * 13);
    let mut out = Vec::new();
    for i in 0..N {
        let (off, len) = region(i);
        let d = fill(100 + i, len as usize);
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&CMD_WRITE.to_be_bytes());
        b.extend_from_slice(&(5000 + i).to_be_bytes());
        b.extend_from_slice(&off.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&d);
        out.extend_from_slice(&b);
    }
    r.send(&out);
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let rep = r.reply(0);
        assert_eq!(rep.error, 0);
        let i = rep
            .cookie
            .checked_sub(5000)
            .filter(|&i| i < N)
            .unwrap_or_else(|| panic!("unexpected cookie {}", rep.cookie));
        assert!(!seen[i as usize], "two replies for cookie {}", rep.cookie);
        seen[i as usize] = true;
    }

    // 64 pipelined reads, sent before reading any reply. Simple replies do
    // not say their length, so then every read has the same length.
    let rlen = |i: u64| if structured { region(i).1 } else { 1000 };
    for i in 0..N {
        r.request(CMD_READ, 0, 7000 + i, region(i).0, rlen(i), &[]);
    }
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let rep = r.reply(1000);
        assert_eq!(rep.error, 0);
        let i = rep
            .cookie
            .checked_sub(7000)
            .filter(|&i| i < N)
            .unwrap_or_else(|| panic!("unexpected cookie {}", rep.cookie));
        assert!(!seen[i as usize], "two replies for cookie {}", rep.cookie);
        seen[i as usize] = true;
        let want = fill(100 + i, region(i).1 as usize);
        assert_eq!(rep.data, want[..rlen(i) as usize], "data for cookie {}", rep.cookie);
    }
    still_good(&mut r);
}

#[test]
fn pipelined_requests_simple() {
    pipelined(false);
}

#[test]
fn pipelined_requests_structured() {
    pipelined(true);
}

// ------------------------------------------------------------------ errors

#[test]
fn range_and_command_errors() {
    let srv = mem();
    for structured in [false, true] {
        let mut r = client(&srv, structured);
        // (what, command, flags, offset, length, payload, expected errno)
        type Case = (&'static str, u16, u16, u64, u32, Vec<u8>, u32);
        let cases: Vec<Case> = vec![
            ("read past end", CMD_READ, 0, MIB - 10, 20, vec![], EINVAL),
            ("read beyond end", CMD_READ, 0, MIB, 1, vec![], EINVAL),
            ("read offset overflow", CMD_READ, 0, u64::MAX - 5, 10, vec![], EINVAL),
            ("write past end", CMD_WRITE, 0, MIB - 10, 20, vec![7; 20], ENOSPC),
            ("zeroes past end", CMD_WRITE_ZEROES, 0, MIB - 10, 20, vec![], ENOSPC),
            ("trim past end", CMD_TRIM, 0, MIB - 10, 20, vec![], EINVAL),
            ("cache past end", CMD_CACHE, 0, MIB - 10, 20, vec![], EINVAL),
            ("zero-length read", CMD_READ, 0, 0, 0, vec![], EINVAL),
            ("zero-length write", CMD_WRITE, 0, 0, 0, vec![], ENOSPC),
            ("unknown command 42", 42, 0, 0, 512, vec![], EINVAL),
            ("unknown flag 0x100", CMD_READ, 0x100, 0, 512, vec![], EINVAL),
            ("flush with offset", CMD_FLUSH, 0, 1, 0, vec![], EINVAL),
            ("flush with length", CMD_FLUSH, 0, 0, 1, vec![], EINVAL),
            ("FAST_ZERO on read", CMD_READ, CMD_FLAG_FAST_ZERO, 0, 512, vec![], EINVAL),
            ("REQ_ONE on read", CMD_READ, CMD_FLAG_REQ_ONE, 0, 512, vec![], EINVAL),
        ];
        for (what, cmd, flags, off, len, data, want) in cases {
            let (e, _) = ask(&mut r, cmd, flags, off, len, &data);
            assert_eq!(e, want, "{what} (structured={structured})");
            still_good(&mut r);
        }
        // The refused write changed nothing at the end of the disk.
        assert_eq!(read_ok(&mut r, MIB - 10, 10), vec![0; 10]);

        // BLOCK_STATUS: EINVAL without structured replies.
        let (e, d) = ask(&mut r, CMD_BLOCK_STATUS, 0, 0, 4096, &[]);
        if structured {
            assert_eq!(e, 0);
            assert!(!descriptors(&d).is_empty());
        } else {
            assert_eq!(e, EINVAL, "BLOCK_STATUS without structured replies");
        }
        still_good(&mut r);

        // FAST_ZERO works on memory.
        write_ok(&mut r, 4000, &fill(5, 3000));
        let e = err(&mut r, CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 4100, 2000, &[]);
        assert_eq!(e, 0, "FAST_ZERO on memory");
        let z = read_ok(&mut r, 4000, 3000);
        assert!(z[100..2100].iter().all(|&b| b == 0));
        assert_eq!(&z[2100..], &fill(5, 3000)[2100..]);
        still_good_rw(&mut r, 50_000, 6);
    }
    fresh_client_works(&srv, 2);
}

#[test]
fn read_only_errors() {
    // -r on memory.
    let srv = Server::start(&["-r", "memory", "size=1M"]);
    for structured in [false, true] {
        let (mut r, size, flags) = Raw::open(srv.connect(), structured);
        assert_eq!(size, MIB);
        assert_ne!(flags & EF_READ_ONLY, 0, "-r flags {flags:#x}");
        let cases: Vec<(&str, u16, u64, u32, Vec<u8>)> = vec![
            ("write", CMD_WRITE, 0, 16, vec![1; 16]),
            ("write out of range", CMD_WRITE, MIB - 4, 16, vec![1; 16]),
            ("write far out of range", CMD_WRITE, 1 << 40, 16, vec![1; 16]),
            ("trim", CMD_TRIM, 0, 16, vec![]),
            ("write zeroes", CMD_WRITE_ZEROES, 0, 16, vec![]),
        ];
        for (what, cmd, off, len, data) in cases {
            assert_eq!(err(&mut r, cmd, 0, off, len, &data), EPERM, "-r {what}");
            still_good(&mut r);
        }
        assert_eq!(read_ok(&mut r, 0, 16), vec![0; 16]);
        assert_eq!(err(&mut r, CMD_FLUSH, 0, 0, 0, &[]), 0, "flush on -r");
    }

    // pattern is read-only by nature.
    let srv = Server::start(&["pattern", "size=1M"]);
    for structured in [false, true] {
        let (mut r, size, flags) = Raw::open(srv.connect(), structured);
        assert_eq!(size, MIB);
        assert_ne!(flags & EF_READ_ONLY, 0, "pattern flags {flags:#x}");
        assert_eq!(err(&mut r, CMD_WRITE, 0, 8, 8, &[9; 8]), EPERM);
        assert_eq!(read_ok(&mut r, 8, 8), 8u64.to_be_bytes().to_vec());
        assert_eq!(read_ok(&mut r, 12_345, 4321), pattern(12_345, 4321));
        assert_eq!(read_ok(&mut r, MIB - 3, 3), pattern(MIB - 3, 3));
        assert_eq!(err(&mut r, CMD_READ, 0, MIB - 3, 4, &[]), EINVAL);
        assert_eq!(read_ok(&mut r, 0, 64), pattern(0, 64));
    }
}

#[test]
fn oversized_requests_enomem() {
    let srv = Server::start(&["memory", "size=1G"]);
    let big: u32 = (64 << 20) + 1;
    for structured in [false, true] {
        let mut r = client(&srv, structured);
        assert_eq!(err(&mut r, CMD_READ, 0, 0, big, &[]), ENOMEM, "64M+1 read");
        still_good(&mut r);
        // 64 MiB exactly is allowed.
        if structured {
            assert_eq!(read_ok(&mut r, 0, 64 << 20).len(), 64 << 20);
        }

        // The payload of a refused write is skipped, not taken for requests.
        // Make it look like request headers, to catch a server that parses it.
        let mut h = REQUEST_MAGIC.to_be_bytes().to_vec();
        h.extend_from_slice(&0u16.to_be_bytes());
        h.extend_from_slice(&CMD_WRITE_ZEROES.to_be_bytes());
        h.extend_from_slice(&77u64.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes());
        h.extend_from_slice(&4096u32.to_be_bytes());
        let mut payload = h.repeat(big as usize / h.len() + 1);
        payload.truncate(big as usize);
        write_ok(&mut r, 0, &fill(7, 4096));
        let e = err(&mut r, CMD_WRITE, 0, 0, big, &payload);
        assert_eq!(e, ENOMEM, "64M+1 write");
        // The next request on the same connection works, and the disk is
        // unchanged (the payload was neither written nor parsed).
        assert_eq!(read_ok(&mut r, 0, 4096), fill(7, 4096));
        still_good_rw(&mut r, 1 << 29, 8);
    }
    fresh_client_works(&srv, 3);
}

// --------------------------------------------------------------- handshake

#[test]
fn handshake_options() {
    let srv = mem();
    let mut r = Raw::new(srv.connect());
    r.hello();

    // LIST: the default export "", then ACK.
    r.option(OPT_LIST, b"");
    let (t, d) = r.opt_reply(OPT_LIST);
    assert_eq!(t, REP_SERVER, "LIST reply {t:#x} {d:?}");
    assert!(d.len() >= 4);
    let n = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
    assert_eq!(n, 0, "default export name");
    assert_eq!(r.opt_reply(OPT_LIST).0, REP_ACK);

    // Unknown option: ERR_UNSUP, with its payload consumed.
    r.option(99, b"some payload");
    assert_eq!(r.opt_reply(99).0, REP_ERR_UNSUP);

    // STARTTLS without TLS: policy refusal.
    r.option(OPT_STARTTLS, b"");
    assert_eq!(r.opt_reply(OPT_STARTTLS).0, REP_ERR_POLICY);

    // INFO: the size and flags, then ACK.
    r.option(OPT_INFO, &info_payload(""));
    let (t, d) = r.opt_reply(OPT_INFO);
    assert_eq!(t, REP_INFO);
    assert_eq!(d.len(), 12);
    assert_eq!(u16::from_be_bytes(d[0..2].try_into().unwrap()), 0);
    assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), MIB);
    assert_ne!(u16::from_be_bytes(d[10..12].try_into().unwrap()) & EF_HAS_FLAGS, 0);
    assert_eq!(r.opt_reply(OPT_INFO).0, REP_ACK);

    // And after all that, GO and transmission.
    let (size, _) = r.go("", true);
    assert_eq!(size, MIB);
    still_good_rw(&mut r, 1000, 9);
}

#[test]
fn handshake_export_names() {
    let srv = mem();
    // GO on any name works for memory.
    let mut r = Raw::new(srv.connect());
    r.hello();
    let (size, _) = r.go("x", true);
    assert_eq!(size, MIB);
    still_good_rw(&mut r, 2000, 10);
    drop(r);

    // EXPORT_NAME, the old way: size, flags, and 124 zero bytes unless the
    // client set NO_ZEROES.
    for cflags in [1u32, 3] {
        let mut r = Raw::new(srv.connect());
        hello_with(&mut r, cflags);
        r.option(OPT_EXPORT_NAME, b"");
        assert_eq!(r.u64(), MIB, "size (client flags {cflags})");
        let f = r.u16();
        assert_ne!(f & EF_HAS_FLAGS, 0);
        assert_eq!(f & EF_READ_ONLY, 0);
        if cflags & 2 == 0 {
            assert_eq!(r.bytes(124), vec![0; 124]);
        }
        // The next bytes must be a simple reply: no stray zeros.
        still_good_rw(&mut r, 3000 + u64::from(cflags), 11 + u64::from(cflags));
    }
    // EXPORT_NAME with a name.
    let mut r = Raw::new(srv.connect());
    r.hello();
    r.option(OPT_EXPORT_NAME, b"anything");
    assert_eq!(r.u64(), MIB);
    let _ = r.u16();
    still_good(&mut r);
}

#[test]
fn handshake_abort() {
    let srv = mem();
    let mut r = Raw::new(srv.connect());
    r.hello();
    r.option(OPT_ABORT, b"");
    let (t, d) = r.opt_reply(OPT_ABORT);
    assert_eq!(t, REP_ACK);
    assert!(d.is_empty());
    expect_closed(&mut r.s, "after ABORT");
    fresh_client_works(&srv, 4);
}

#[test]
fn no_sr_refuses_structured_replies() {
    let srv = Server::start(&["--no-sr", "memory", "size=1M"]);
    let mut r = Raw::new(srv.connect());
    r.hello();
    r.option(OPT_STRUCTURED_REPLY, b"");
    assert_eq!(r.opt_reply(OPT_STRUCTURED_REPLY).0, REP_ERR_UNSUP);
    let (size, _) = r.go("", false);
    assert_eq!(size, MIB);
    // Simple replies, and no block status.
    still_good_rw(&mut r, 4000, 12);
    assert_eq!(err(&mut r, CMD_BLOCK_STATUS, 0, 0, 4096, &[]), EINVAL);
    still_good(&mut r);
}

#[test]
fn oldstyle_handshake() {
    let srv = Server::start(&["-o", "memory", "size=1M"]);
    for i in 0..2u64 {
        let mut r = Raw::new(srv.connect());
        assert_eq!(r.u64(), NBDMAGIC);
        assert_eq!(r.u64(), OLD_MAGIC);
        assert_eq!(r.u64(), MIB);
        let flags = r.u32();
        assert_ne!(flags & u32::from(EF_HAS_FLAGS), 0, "flags {flags:#x}");
        assert_eq!(flags & u32::from(EF_READ_ONLY), 0, "flags {flags:#x}");
        assert_eq!(flags >> 16, 0, "flags {flags:#x}");
        assert_eq!(r.bytes(124), vec![0; 124]);
        // Simple replies.
        still_good_rw(&mut r, 5000 + i * 1000, 13 + i);
        assert_eq!(err(&mut r, CMD_READ, 0, MIB, 1, &[]), EINVAL);
        still_good(&mut r);
    }

    let srv = Server::start(&["-o", "pattern", "size=1M"]);
    let mut r = Raw::new(srv.connect());
    assert_eq!(r.u64(), NBDMAGIC);
    assert_eq!(r.u64(), OLD_MAGIC);
    assert_eq!(r.u64(), MIB);
    assert_ne!(r.u32() & u32::from(EF_READ_ONLY), 0);
    assert_eq!(r.bytes(124), vec![0; 124]);
    assert_eq!(read_ok(&mut r, 1001, 999), pattern(1001, 999));
}

// --------------------------------------------------------- hostile clients

#[test]
fn hostile_handshake_clients() {
    let srv = mem();

    // Garbage right after connect.
    let mut s = srv.connect();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 37 + 11) as u8).collect();
    let _ = s.write_all(&garbage);
    expect_closed(&mut s, "garbage");
    drop(s);
    fresh_client_works(&srv, 10);

    // Close right after connect.
    drop(srv.connect());
    fresh_client_works(&srv, 11);

    // Truncated handshake: 2 of the 4 client-flag bytes.
    let mut r = Raw::new(srv.connect());
    assert_eq!(r.u64(), NBDMAGIC);
    r.bytes(10);
    r.send(&[0, 0]);
    drop(r);
    fresh_client_works(&srv, 12);

    // Client flags with unknown bits: the server closes.
    for cflags in [0x8000_0003u32, 0x4, 0xffff_ffff] {
        let mut r = Raw::new(srv.connect());
        hello_with(&mut r, cflags);
        expect_closed(&mut r.s, "unknown client flags");
        fresh_client_works(&srv, 13);
    }

    // An option with bad magic: the server closes.
    let mut r = Raw::new(srv.connect());
    r.hello();
    let mut b = 0x1122_3344_5566_7788u64.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_GO.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    r.send(&b);
    expect_closed(&mut r.s, "bad option magic");
    fresh_client_works(&srv, 14);
}

#[test]
fn hostile_option_lengths() {
    let srv = mem();

    // An option header claiming ~4 GiB, then close.
    let mut r = Raw::new(srv.connect());
    r.hello();
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_INFO.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    b.extend_from_slice(&[0; 100]);
    r.send(&b);
    drop(r);
    fresh_client_works(&srv, 20);

    // Same for EXPORT_NAME.
    let mut r = Raw::new(srv.connect());
    r.hello();
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    r.send(&b);
    drop(r);
    fresh_client_works(&srv, 21);

    // An option of 100000 bytes, payload actually sent: TOO_BIG, and the
    // handshake goes on.
    for opt in [OPT_INFO, 99, OPT_LIST] {
        let mut r = Raw::new(srv.connect());
        r.hello();
        let mut p = vec![0u8; 100_000];
        // Make the payload look like option headers, to catch a server that
        // parses it instead of skipping it.
        for c in p.chunks_exact_mut(16) {
            c[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
            c[8..12].copy_from_slice(&OPT_ABORT.to_be_bytes());
            c[12..16].copy_from_slice(&0u32.to_be_bytes());
        }
        r.option(opt, &p);
        let (t, _) = r.opt_reply(opt);
        assert_eq!(t, REP_ERR_TOO_BIG, "100000-byte option {opt}");
        let (size, _) = r.go("", opt != 99);
        assert_eq!(size, MIB);
        still_good_rw(&mut r, 6000, 22);
    }
    fresh_client_works(&srv, 23);
}

#[test]
fn hostile_transmission_clients() {
    let srv = mem();

    // A request with bad magic: the server closes that connection.
    for structured in [false, true] {
        let mut r = client(&srv, structured);
        still_good(&mut r);
        let mut b = 0x1234_5678u32.to_be_bytes().to_vec();
        b.extend_from_slice(&[0; 24]);
        r.send(&b);
        expect_closed(&mut r.s, "bad request magic");
        fresh_client_works(&srv, 30);
    }

    // A WRITE announcing 1 MiB, then 10 bytes, then gone.
    for structured in [false, true] {
        let mut r = client(&srv, structured);
        r.request(CMD_WRITE, 0, 1, 0, MIB as u32, &[0x55; 10]);
        drop(r);
        fresh_client_works(&srv, 31);
        // Nothing of the half-sent write landed.
        let mut r = client(&srv, structured);
        assert_eq!(read_ok(&mut r, 0, 10), vec![0; 10]);
    }

    // A truncated request header, then gone.
    let mut r = client(&srv, true);
    r.send(&REQUEST_MAGIC.to_be_bytes());
    r.send(&[0; 7]);
    drop(r);
    fresh_client_works(&srv, 32);

    // Requests then gone without reading the replies.
    let mut r = client(&srv, false);
    for i in 0..32 {
        r.request(CMD_READ, 0, i, 0, 65536, &[]);
    }
    drop(r);
    fresh_client_works(&srv, 33);
}

#[test]
fn parallel_clients() {
    let srv = mem();
    let sock = srv.socket.clone().unwrap();
    let threads: Vec<_> = (0..20u64)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut r = Raw::open(UnixStream::connect(&sock).unwrap(), i % 2 == 0).0;
                for round in 0..5u64 {
                    let off = i * 40_000 + round * 7001 + 3;
                    let d = fill(i * 100 + round, 5000 + i as usize);
                    write_ok(&mut r, off, &d);
                    assert_eq!(read_ok(&mut r, off, d.len() as u32), d, "client {i} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    // Everything every client wrote is there for a new client.
    let mut r = client(&srv, true);
    for i in 0..20u64 {
        for round in 0..5u64 {
            let off = i * 40_000 + round * 7001 + 3;
            let d = fill(i * 100 + round, 5000 + i as usize);
            assert_eq!(read_ok(&mut r, off, d.len() as u32), d, "client {i} round {round}");
        }
    }
    fresh_client_works(&srv, 40);
}

// ---------------------------------------------------------------- shutdown

#[test]
fn sigterm_with_idle_client_exits_cleanly() {
    let mut srv = mem();
    let sock = srv.socket.clone().unwrap();
    let mut r = client(&srv, true);
    still_good(&mut r);
    let t0 = Instant::now();
    signal(srv.pid(), libc::SIGTERM);
    let st = wait_exit(&mut srv, Duration::from_secs(4));
    let st = st.unwrap_or_else(|| panic!("server still running {:?} after SIGTERM", t0.elapsed()));
    assert!(st.success(), "exit status {st:?}");
    assert!(!sock.exists(), "socket {sock:?} left behind");
    // The idle client was disconnected.
    expect_closed(&mut r.s, "idle client after shutdown");
}

/// Send a read; `None` if the connection is closed instead of a reply.
fn try_read_error(r: &mut Raw, cookie: u64) -> Option<u32> {
    if r.s
        .write_all(&{
            let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
            b.extend_from_slice(&0u16.to_be_bytes());
            b.extend_from_slice(&CMD_READ.to_be_bytes());
            b.extend_from_slice(&cookie.to_be_bytes());
            b.extend_from_slice(&0u64.to_be_bytes());
            b.extend_from_slice(&512u32.to_be_bytes());
            b
        })
        .is_err()
    {
        return None;
    }
    let mut h = [0u8; 16];
    r.s.read_exact(&mut h).ok()?;
    assert_eq!(u32::from_be_bytes(h[0..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
    let e = u32::from_be_bytes(h[4..8].try_into().unwrap());
    assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), cookie);
    if e == 0 {
        let mut d = [0u8; 512];
        r.s.read_exact(&mut d).ok()?;
    }
    Some(e)
}

#[test]
fn request_after_sigterm_gets_eshutdown() {
    let mut srv = mem();
    let sock = srv.socket.clone().unwrap();
    let mut r = client(&srv, false);
    still_good(&mut r);
    let t0 = Instant::now();
    signal(srv.pid(), libc::SIGTERM);
    // Requests on the open connection, within the grace period: each gets
    // 0 until the server has seen the signal, then ESHUTDOWN (or the
    // connection is closed). Polled, as the signal's arrival is no event
    // a client can wait on.
    let mut cookie = 100;
    let mut outcome = None;
    while t0.elapsed() < Duration::from_millis(1500) {
        cookie += 1;
        match try_read_error(&mut r, cookie) {
            Some(0) => std::thread::sleep(Duration::from_millis(10)),
            other => {
                outcome = Some(other);
                break;
            }
        }
    }
    match outcome {
        Some(Some(e)) => {
            assert_eq!(e, ESHUTDOWN, "request after SIGTERM");
            // And it stays that way.
            let again = try_read_error(&mut r, 1);
            assert!(matches!(again, None | Some(ESHUTDOWN)), "then {again:?}");
        }
        Some(None) => eprintln!("connection closed instead of an ESHUTDOWN reply"),
        None => panic!("requests still served normally 1.5 s after SIGTERM"),
    }
    let st = wait_exit(&mut srv, Duration::from_secs(4)).expect("server did not exit");
    assert!(st.success(), "exit status {st:?}");
    assert!(!sock.exists());
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn pipelined_huge_reads_do_not_grow_memory_without_bound() {
    // Three clients each queue 16 reads of 64 MiB (3 GiB in all) before
    // reading any reply. The server's data budget (1 GiB) must hold its
    // memory well below what the clients asked for.
    let srv = Server::start(&["null", "1G"]);
    const LEN: u32 = 64 << 20;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (mut c, _, _) = Raw::open(srv.connect(), false);
            for i in 0..16u64 {
                c.request(CMD_READ, 0, i, i * u64::from(LEN) % (1 << 30), LEN, b"");
            }
            c
        })
        .collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                for _ in 0..16 {
                    let r = c.reply(LEN as usize);
                    assert_eq!(r.error, 0);
                    assert_eq!(r.data.len(), LEN as usize);
                    assert!(r.data.iter().step_by(4096).all(|&b| b == 0));
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let peak = peak_rss(srv.pid());
    assert!(peak < 2 << 30, "server peak RSS {} MiB", peak >> 20);
}

#[test]
fn a_client_that_stops_reading_cannot_starve_the_others() {
    // One client queues 16 reads of 64 MiB (the whole server budget, were
    // it allowed) and reads no reply. Another client is still served.
    let srv = Server::start(&["null", "1G"]);
    const LEN: u32 = 64 << 20;
    let (mut greedy, _, _) = Raw::open(srv.connect(), false);
    for i in 0..16u64 {
        greedy.request(CMD_READ, 0, i, 0, LEN, b"");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = srv.connect();
    std::thread::spawn(move || {
        let (mut c, _, _) = Raw::open(sock, false);
        tx.send(c.call(CMD_READ, 0, 0, 4096, b"").error).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(20)),
        Ok(0),
        "the other client was not served"
    );
    drop(greedy);
}

/// With structured replies negotiated, only READ and BLOCK_STATUS get
/// structured replies; every other command, error or not, gets a simple
/// reply, as C nbdkit sends them.
#[test]
fn only_reads_and_block_status_get_structured_replies() {
    let srv = mem();
    let mut r = client(&srv, true);
    let magic_of = |r: &mut Raw, cmd: u16, offset: u64, len: u32, data: &[u8]| {
        r.request(cmd, 0, 7, offset, len, data);
        let magic = r.u32();
        let rest = if magic == SIMPLE_REPLY_MAGIC {
            let e = r.u32();
            assert_eq!(r.u64(), 7);
            e
        } else {
            let _flags = r.u16();
            let _ty = r.u16();
            assert_eq!(r.u64(), 7);
            let n = r.u32() as usize;
            r.bytes(n);
            0
        };
        (magic, rest)
    };
    assert_eq!(magic_of(&mut r, CMD_WRITE, 0, 3, b"abc"), (SIMPLE_REPLY_MAGIC, 0));
    assert_eq!(magic_of(&mut r, CMD_FLUSH, 0, 0, b"").0, SIMPLE_REPLY_MAGIC);
    assert_eq!(magic_of(&mut r, CMD_TRIM, 0, 512, b"").0, SIMPLE_REPLY_MAGIC);
    assert_eq!(magic_of(&mut r, CMD_WRITE_ZEROES, 0, 512, b"").0, SIMPLE_REPLY_MAGIC);
    // An error on a write (past the end) is simple too.
    let (m, e) = magic_of(&mut r, CMD_TRIM, MIB, 512, b"");
    assert_eq!(m, SIMPLE_REPLY_MAGIC);
    assert_ne!(e, 0);
    assert_eq!(magic_of(&mut r, CMD_READ, 0, 3, b"").0, STRUCTURED_REPLY_MAGIC);
    assert_eq!(magic_of(&mut r, CMD_BLOCK_STATUS, 0, 512, b"").0, STRUCTURED_REPLY_MAGIC);
    // A read error is a structured error chunk.
    assert_eq!(magic_of(&mut r, CMD_READ, MIB, 512, b"").0, STRUCTURED_REPLY_MAGIC);
    still_good(&mut r);
}

// -------------------------------------------------------- extended headers

/// (length, status) descriptors of a BLOCK_STATUS_EXT payload.
fn wide_extents(d: &[u8]) -> Vec<(u64, u64)> {
    d.chunks_exact(16)
        .map(|p| {
            let n = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().unwrap());
            (n(0), n(8))
        })
        .collect()
}

#[test]
fn extended_headers_carry_64_bit_lengths() {
    let dir = scratch();
    let log = dir.path().join("log");
    let srv =
        Server::start(&["--filter=log", "memory", "8G", &format!("logfile={}", log.display())]);
    let (mut r, size, _) = Raw::open_extended(srv.connect());
    assert_eq!(size, 8 << 30);
    let data = fill(1, MIB as usize);
    r.request64(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 1, 0, MIB, &data);
    assert_eq!(r.reply(0).error, 0);
    // 5 GiB of zeroes, and then status of the whole 8 GiB, each as one
    // request (a compact header cannot say either length).
    r.request64(CMD_WRITE_ZEROES, 0, 2, 2 * MIB, 5 << 30, &[]);
    assert_eq!(r.reply(0).error, 0);
    r.request64(CMD_BLOCK_STATUS, 0, 3, 0, 8 << 30, &[]);
    let rep = r.reply(0);
    assert_eq!((rep.cookie, rep.error), (3, 0));
    let ext = wide_extents(&rep.data);
    assert_eq!(ext[0], (MIB, 0), "{ext:?}");
    assert_eq!(ext[1], ((8 << 30) - MIB, u64::from(STATE_HOLE | STATE_ZERO)), "{ext:?}");
    assert_eq!(read_ok(&mut r, 0, MIB as u32), data);
    // The plugin saw one zero request of 5 GiB.
    drop(r);
    srv.stop();
    let zeroes: Vec<String> =
        slurp(&log).lines().filter(|l| l.contains("Zero ")).map(String::from).collect();
    assert_eq!(zeroes.len(), 2, "{zeroes:?}"); // on the way down and back up
    assert!(zeroes[0].contains("offset=0x200000 count=0x140000000"), "{zeroes:?}");
}

#[test]
fn malformed_extended_requests_get_the_specs_errors() {
    let srv = Server::start(&["memory", "8G"]);
    let (mut r, _, _) = Raw::open_extended(srv.connect());
    // The spec has a write say PAYLOAD_LEN, qemu leaves it out: either way
    // the payload is read.
    r.request64(CMD_WRITE, 0, 1, 0, 512, &[0xaa; 512]);
    assert_eq!(r.reply(0).error, 0);
    // A payload on a command that takes none is read and refused.
    r.request64(CMD_READ, CMD_FLAG_PAYLOAD_LEN, 2, 0, 16, &[0xee; 16]);
    assert_eq!(r.reply(0).error, EINVAL);
    // Reads keep the 64 MiB limit; ranges are checked in 64 bits.
    r.request64(CMD_READ, 0, 3, 0, 65 * MIB, &[]);
    assert_eq!(r.reply(0).error, ENOMEM);
    r.request64(CMD_TRIM, 0, 4, 1 << 30, 8 << 30, &[]);
    assert_eq!(r.reply(0).error, EINVAL);
    r.request64(CMD_WRITE_ZEROES, 0, 5, u64::MAX - 1, 4, &[]);
    assert_eq!(r.reply(0).error, ENOSPC);
    // The connection is still in step.
    let d = fill(2, 4096);
    r.request64(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 6, 4096, 4096, &d);
    assert_eq!(r.reply(0).error, 0);
    assert_eq!(read_ok(&mut r, 4096, 4096), d);

    // A payload beyond the maximum: a hard disconnect, as the spec says.
    r.request64(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 7, 0, 1 << 40, &[]);
    let mut b = [0u8; 1];
    assert_eq!(r.s.read(&mut b).unwrap(), 0, "the server should hang up");

    // A compact header once extended headers are on (here followed by
    // the next one's first bytes): a hang-up too.
    // (The server may hang up before the last bytes are sent: then they
    // meet a closed socket.)
    let (mut r, _, _) = Raw::open_extended(srv.connect());
    r.extended = false;
    r.request(CMD_READ, 0, 8, 0, 512, &[]);
    let _ = r.s.write_all(&REQUEST_MAGIC.to_be_bytes());
    assert!(matches!(r.s.read(&mut b), Ok(0) | Err(_)), "the server should hang up");
    fresh_client_works(&srv, 8);
}

#[test]
fn reads_of_holes_come_back_as_hole_chunks() {
    // Memory pages are 32 KiB: write into the third one only.
    let srv = Server::start(&["memory", "1M"]);
    for extended in [false, true] {
        let (mut r, _, _) = if extended {
            Raw::open_extended(srv.connect())
        } else {
            Raw::open(srv.connect(), true)
        };
        let d = fill(3, 4096);
        write_ok(&mut r, 64 << 10, &d);
        r.request(CMD_READ, 0, 1, 0, 256 << 10, &[]);
        let mut chunks = Vec::new();
        loop {
            let (done, c) = r.chunk(0);
            chunks.push(c.data);
            if done {
                break;
            }
        }
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, [64 << 10, 32 << 10, 160 << 10], "extended={extended}");
        assert!(chunks[0].iter().chain(&chunks[2]).all(|&b| b == 0));
        assert_eq!(&chunks[1][..4096], &d[..]);
        // DF: one data chunk, zeroes included.
        let (e, all) = ask(&mut r, CMD_READ, CMD_FLAG_DF, 0, 256 << 10, &[]);
        assert_eq!(e, 0);
        assert_eq!(&all[64 << 10..(64 << 10) + 4096], &d[..]);
    }
    // Simple replies cannot carry holes: the zeroes are sent.
    let mut r = client(&srv, false);
    assert_eq!(read_ok(&mut r, 0, 64 << 10), vec![0; 64 << 10]);
}

#[test]
fn a_null_read_is_one_hole_chunk() {
    let srv = Server::start(&["null", "64M"]);
    let (mut r, _, _) = Raw::open(srv.connect(), true);
    r.request(CMD_READ, 0, 1, 0, 64 << 20, &[]);
    let (done, c) = r.chunk(0);
    assert!(done);
    assert_eq!(c.data.len(), 64 << 20);
    // Behind a filter that may change data, reads are data again.
    let srv = Server::start(&["--filter=swab", "null", "1M"]);
    let (mut r, _, _) = Raw::open(srv.connect(), true);
    r.request(CMD_READ, 0, 1, 0, 4096, &[]);
    let mut b = [0u8; 8];
    r.s.read_exact(&mut b).unwrap();
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_OFFSET_DATA);
}

/// One request may now cover an exabyte: the memory plugin's zero and
/// block status cost what is allocated, not the range (a hostile client
/// cannot tie a thread up for hours with one request).
#[test]
fn exabyte_requests_cost_what_is_allocated() {
    let srv = Server::start(&["memory", "1E"]);
    let (mut r, size, _) = Raw::open_extended(srv.connect());
    assert_eq!(size, 1 << 60);
    let d = fill(5, 4096);
    r.request64(CMD_WRITE, CMD_FLAG_PAYLOAD_LEN, 1, 1 << 59, 4096, &d);
    assert_eq!(r.reply(0).error, 0);
    let t = Instant::now();
    r.request64(CMD_BLOCK_STATUS, 0, 2, 0, 1 << 60, &[]);
    let ext = wide_extents(&r.reply(0).data);
    assert_eq!(ext[0], (1 << 59, u64::from(STATE_HOLE | STATE_ZERO)), "{ext:?}");
    assert_eq!(ext[1].1, 0, "{ext:?}");
    r.request64(CMD_WRITE_ZEROES, 0, 3, 0, 1 << 60, &[]);
    assert_eq!(r.reply(0).error, 0);
    r.request64(CMD_CACHE, 0, 4, 0, 1 << 60, &[]);
    assert_eq!(r.reply(0).error, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(read_ok(&mut r, 1 << 59, 4096), vec![0; 4096]);
}
