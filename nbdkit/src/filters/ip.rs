//! `ip`: allow or deny clients by address.
//!
//! - `allow=LIST`, `deny=LIST`: comma-separated rules; a client matching
//!   an `allow` rule is let in, else one matching a `deny` rule is refused,
//!   else it is let in. Rules: `all`/`any`, `allipv4`/`anyipv4`,
//!   `allipv6`/`anyipv6`, `allunix`/`anyunix`, `A.B.C.D[/NN]`,
//!   `A:B::C[/NN]`, and for clients on a Unix socket `pid:PID`, `uid:UID`
//!   and `gid:GID` (the client's credentials when it connected). vsock
//!   rules are refused. A refused client is disconnected before the
//!   handshake.
//!
//! Example: `nbdkit --filter=ip -p 10809 memory 1G allow=127.0.0.1,::1 deny=all`

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Client, Errno, Error, Filter, Handle, Next, OpenArgs, Peer, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `ip` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "ip",
    description: "filter clients by IP address",
    config_help: "allow=addr[,addr...]         Set allow list.\n\
                  deny=addr[,addr...]          Set deny list.",
    build,
};

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Any,
    AnyV4,
    AnyV6,
    AnyUnix,
    Net(IpAddr, u8),
    Pid(i64),
    Uid(i64),
    Gid(i64),
}

impl Rule {
    fn parse(s: &str) -> Result<Rule, String> {
        Ok(match s {
            "all" | "any" => Rule::Any,
            "allipv4" | "anyipv4" => Rule::AnyV4,
            "allipv6" | "anyipv6" => Rule::AnyV6,
            "allunix" | "anyunix" => Rule::AnyUnix,
            s if s.len() >= 4
                && ["pid:", "uid:", "gid:"].iter().any(|p| s[..4].eq_ignore_ascii_case(p)) =>
            {
                let kind = s[..3].to_ascii_lowercase();
                // As C: a pid is positive, a uid or gid not negative.
                let out_of_range = || format!("{kind}: parameter out of range");
                if s[4..].trim_start().starts_with('-') {
                    return Err(out_of_range());
                }
                let n = crate::params::parse_uint(&format!("{kind}:"), &s[4..], i64::MAX as u64)?
                    as i64;
                if n == 0 && kind == "pid" {
                    return Err(out_of_range());
                }
                match kind.as_str() {
                    "pid" => Rule::Pid(n),
                    "uid" => Rule::Uid(n),
                    _ => Rule::Gid(n),
                }
            }
            s if s.contains("vsock") => {
                return Err(format!("{s}: vsock is not supported by this nbdkit"))
            }
            s => {
                let (addr, bits) = match s.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (s, None),
                };
                let ip: IpAddr =
                    addr.parse().map_err(|_| format!("{s}: not an address or keyword"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    None => max,
                    Some(b) => b
                        .parse::<u8>()
                        .ok()
                        .filter(|&n| n <= max)
                        .ok_or_else(|| format!("{s}: bad prefix length"))?,
                };
                Rule::Net(ip, bits)
            }
        })
    }

    fn matches(&self, peer: &Peer) -> bool {
        let ip = match peer {
            Peer::Tcp(a) => Some(normal(a.ip())),
            _ => None,
        };
        let cred = match peer {
            Peer::Unix(c) => *c,
            _ => None,
        };
        match (self, ip) {
            (Rule::Any, _) => true,
            (Rule::AnyUnix, None) => matches!(peer, Peer::Unix(_)),
            (Rule::Pid(n), None) => cred.is_some_and(|c| i64::from(c.pid) == *n),
            (Rule::Uid(n), None) => cred.is_some_and(|c| i64::from(c.uid) == *n),
            (Rule::Gid(n), None) => cred.is_some_and(|c| i64::from(c.gid) == *n),
            (Rule::AnyV4, Some(IpAddr::V4(_))) => true,
            (Rule::AnyV6, Some(IpAddr::V6(_))) => true,
            (Rule::Net(net, bits), Some(ip)) => within(*net, *bits, ip),
            _ => false,
        }
    }
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`.
fn normal(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn within(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

struct IpFilter {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

fn rules(p: &mut Params, key: &str) -> Result<Vec<Rule>, StartError> {
    let mut out = Vec::new();
    for v in p.take_all(key) {
        for r in v.split(',').filter(|r| !r.is_empty()) {
            out.push(Rule::parse(r).map_err(|m| StartError(format!("ip: {key}: {m}")))?);
        }
    }
    Ok(out)
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(IpFilter { allow: rules(p, "allow")?, deny: rules(p, "deny")? }))
}

impl IpFilter {
    fn check(&self, client: &Client) -> Result<()> {
        let allowed = self.allow.iter().any(|r| r.matches(&client.peer))
            || !self.deny.iter().any(|r| r.matches(&client.peer));
        if allowed {
            Ok(())
        } else {
            Err(Error::new(Errno::Perm, format!("ip: client {:?} denied", client.peer)))
        }
    }
}

#[async_trait]
impl Filter for IpFilter {
    /// Refused before the handshake, as C does: a denied client cannot
    /// even list the exports.
    async fn preconnect(&self, next: &Next, readonly: bool, client: &Client) -> Result<()> {
        self.check(client)?;
        next.preconnect(readonly, client).await
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { client, .. } = *args;
        let allowed = self.allow.iter().any(|r| r.matches(&client.peer))
            || !self.deny.iter().any(|r| r.matches(&client.peer));
        if !allowed {
            return Err(Error::new(Errno::Perm, format!("ip: client {:?} denied", client.peer)));
        }
        Ok(next.open(args).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> Peer {
        Peer::Tcp(s.parse().unwrap())
    }

    #[test]
    fn rules_match() {
        let r = |s: &str| Rule::parse(s).unwrap();
        assert!(r("127.0.0.0/8").matches(&tcp("127.1.2.3:5")));
        assert!(!r("10.0.0.0/8").matches(&tcp("127.1.2.3:5")));
        assert!(r("127.0.0.1").matches(&tcp("[::ffff:127.0.0.1]:5")));
        assert!(r("::1").matches(&tcp("[::1]:5")));
        assert!(r("fe80::/10").matches(&tcp("[fe80::1]:5")));
        assert!(r("anyipv4").matches(&tcp("1.2.3.4:1")));
        assert!(!r("anyipv4").matches(&tcp("[::2]:1")));
        assert!(r("anyunix").matches(&Peer::Unix(None)));
        assert!(!r("anyipv6").matches(&Peer::Unix(None)));
        let me = Peer::Unix(Some(crate::backend::Cred { pid: 42, uid: 1000, gid: 100 }));
        assert!(r("pid:42").matches(&me));
        assert!(r("UID:1000").matches(&me));
        assert!(r("gid:100").matches(&me));
        assert!(!r("uid:0").matches(&me));
        assert!(!r("uid:1000").matches(&Peer::Unix(None)));
        assert!(Rule::parse("pid:0").is_err());
        assert!(Rule::parse("gid:-1").is_err());
        assert!(r("all").matches(&Peer::Unknown));
        assert!(Rule::parse("1.2.3.4/33").is_err());
        assert!(Rule::parse("uid:0").is_ok());
        assert!(Rule::parse("nonsense").is_err());
    }
}
