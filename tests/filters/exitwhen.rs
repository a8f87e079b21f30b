use std::time::Duration;

use crate::util::*;

fn start(args: &[String]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("memory")
        .filter("exitwhen")
        .arg("1M")
        .args(args)
        .binary(bin())
        .start()
        .unwrap()
}

#[test]
fn a_created_file_refuses_new_clients_and_exits_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    let disk = start(&[format!("exit-when-file-created={}", stop.display())]);
    let pid = disk.pid() as i32;
    let mut a = disk.connect().unwrap();
    std::fs::write(&stop, b"").unwrap();
    // The event is checked as clients come: this one is refused...
    assert!(disk.connect().is_err());
    // ...while the connected one is still served.
    a.write(0, b"still").unwrap();
    assert!(alive(pid));
    a.disconnect().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    assert!(disk.shutdown().unwrap().success());
}

#[test]
fn idle_servers_notice_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("present");
    std::fs::write(&flag, b"").unwrap();
    // Killed and reaped whatever happens to the test.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sleeper = Reaped(std::process::Command::new("sleep").arg("60").spawn().unwrap());
    for event in [
        format!("exit-when-file-deleted={}", flag.display()),
        format!("exit-when-process-exits={}", sleeper.0.id()),
        "exit-when-script=test -e /nonexistent || exit 88".to_string(),
    ] {
        let is_script = event.starts_with("exit-when-script");
        let disk = start(&[event.clone(), "exit-when-poll=1".into()]);
        let pid = disk.pid() as i32;
        if !is_script {
            assert!(!wait_until(Duration::from_millis(1500), || !alive(pid)), "{event}");
        }
        if event.contains("deleted") {
            std::fs::remove_file(&flag).unwrap();
        } else if event.contains("process") {
            sleeper.0.kill().unwrap();
            sleeper.0.wait().unwrap();
        }
        assert!(wait_until(Duration::from_secs(10), || !alive(pid)), "{event}");
    }
}

#[rstest::rstest]
#[case(&["exit-when-pipe-closed=1"], "exitwhen: exit-when-pipe-closed=1: not a file descriptor above 2")]
#[case(&["exit-when-process-exits=x"], "exit-when-process-exits=x: not a process ID")]
#[case(&["exit-when-poll=0"], "exit-when-poll=0: not a number of seconds")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=exitwhen", "memory", "1M"], args, msg);
}
