//! nbdkit's size syntax: a decimal number with an optional one-letter scale.
//!
//! `512`, `1b` (bytes), `1s` (512-byte sectors), `1k`/`1K` (KiB), `M`, `G`,
//! `T`, `P`, `E` (powers of 1024). Leading blanks and a `+` are accepted, as
//! `strtoimax` does in C nbdkit. The result is at most `i64::MAX`.

use crate::error::StartError;

/// Parse a size string as C nbdkit's `nbdkit_parse_size` does.
pub fn parse_size(s: &str) -> Result<u64, StartError> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(StartError(format!("could not parse size string ({s})")));
    }
    let (num, suffix) = t.split_at(digits);
    if neg {
        return Err(StartError(format!("size cannot be negative ({s})")));
    }
    let too_big = || StartError(format!("size ({s}) exceeds maximum value"));
    let n: u64 = num.parse().map_err(|_| too_big())?;
    if n > i64::MAX as u64 {
        return Err(too_big());
    }
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "s" | "S" => 9,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(StartError(format!("could not parse size: unknown suffix '{suffix}'"))),
    };
    if n > (i64::MAX as u64) >> shift {
        return Err(too_big());
    }
    Ok(n << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn good_sizes() {
        for (s, v) in [
            ("0", 0),
            ("512", 512),
            ("1b", 1),
            ("1B", 1),
            ("1s", 512),
            ("2S", 1024),
            ("1k", 1024),
            ("1K", 1024),
            ("1M", 1 << 20),
            ("1G", 1 << 30),
            ("1T", 1 << 40),
            ("1P", 1 << 50),
            ("1E", 1 << 60),
            ("7E", 7 << 60),
            (" +10", 10),
            ("9223372036854775807", i64::MAX as u64),
        ] {
            assert_eq!(parse_size(s).unwrap(), v, "{s}");
        }
    }

    #[test]
    fn bad_sizes() {
        for (s, msg) in [
            ("", "could not parse"),
            ("abc", "could not parse"),
            ("-1", "negative"),
            ("1X", "unknown suffix 'X'"),
            ("1KB", "unknown suffix 'KB'"),
            ("1.5G", "unknown suffix '.5G'"),
            ("8E", "exceeds maximum"),
            ("9223372036854775808", "exceeds maximum"),
            ("99999999999999999999999", "exceeds maximum"),
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(e.0.contains(msg), "{s}: {e}");
        }
    }
}
