use crate::util::*;

fn start(tcp: bool, rules: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut b = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("ip")
        .arg("1M")
        .args(rules)
        .binary(bin());
    if tcp {
        b = b.tcp();
    }
    b.start().unwrap()
}

#[test]
fn allow_is_checked_before_deny_and_unmatched_clients_get_in() {
    for (tcp, rules, ok) in [
        (true, &["allow=127.0.0.1", "deny=all"][..], true),
        (true, &["deny=127.0.0.0/8"][..], false),
        (true, &["allow=anyipv6", "deny=all"][..], false),
        (true, &["allow=10.0.0.0/8,127.0.0.0/24", "deny=any"][..], true),
        (true, &["deny=anyunix"][..], true),
        (false, &["deny=anyunix"][..], false),
        (false, &["allow=allunix", "deny=all"][..], true),
        (false, &[][..], true),
    ] {
        let disk = start(tcp, rules);
        assert_eq!(disk.connect().is_ok(), ok, "tcp={tcp} {rules:?}");
    }
}

/// Unix socket clients by the credentials they connect with: pid, uid
/// and gid rules (ours is the test process).
#[test]
fn unix_clients_by_pid_uid_and_gid() {
    // SAFETY: these calls have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let pid = std::process::id();
    for (rules, ok) in [
        (vec![format!("allow=uid:{uid}"), "deny=all".into()], true),
        (vec![format!("allow=uid:{}", uid + 1), "deny=all".into()], false),
        (vec![format!("allow=gid:{gid}"), "deny=all".into()], true),
        (vec![format!("deny=gid:{gid}")], false),
        (vec![format!("allow=pid:{pid}"), "deny=all".into()], true),
        (vec![format!("deny=pid:{pid}")], false),
    ] {
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let disk = start(false, &rules);
        assert_eq!(disk.connect().is_ok(), ok, "{rules:?}");
    }
    // Over TCP there are no credentials: a uid rule never matches.
    let disk = start(true, &[&format!("deny=uid:{uid}")]);
    assert!(disk.connect().is_ok());
}

#[rstest::rstest]
#[case("allow=1.2.3.4/40", "ip: allow: 1.2.3.4/40: bad prefix length")]
#[case("deny=pid:0", "pid: parameter out of range")]
#[case("deny=uid:-1", "uid: parameter out of range")]
#[case("deny=nowhere", "nowhere: not an address or keyword")]
fn bad_rules(#[case] rule: &str, #[case] msg: &str) {
    let out = nbdkit()
        .args(["-U", "-", "--filter=ip", "memory", "1M", rule, "--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(msg), "{err}");
}
