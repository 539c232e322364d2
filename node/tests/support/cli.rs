//! Running the `cirrus` command line: always in a temp HOME, never for longer than
//! [`TIMEOUT`], and with no `CIRRUS_*` setting from the machine's environment.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use super::{BIN, POLL, TIMEOUT};

/// Run `cirrus ARGS` in a fresh temp HOME.
pub fn cirrus(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    cirrus_in(home.path(), args)
}

/// Run `cirrus ARGS` with `home` as HOME; a run that outlives [`TIMEOUT`] is killed
/// and fails the test (no command may hang, whatever it is given).
pub fn cirrus_in(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("HOME", home);
    for (k, _) in std::env::vars() {
        if k.starts_with("CIRRUS_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cirrus");
    // Read both pipes on threads, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cirrus {args:?}` still running after {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `cirrus run ARGS` must refuse to start: exit status 1 (a setting the node
/// refuses) or 2 (a flag that does not parse), not a panic's 101, within the
/// timeout. Flags ARGS does not give are set so that a wrongly
/// started node would harm nothing: loopback, port 0 everywhere, a temp data dir.
/// Returns stderr.
pub fn must_not_start(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let data = data.to_str().unwrap();
    let mut all: Vec<&str> = vec!["run"];
    let defaults = [
        ("--bind", "127.0.0.1"),
        ("--http-port", "0"),
        ("--p2p-port", "0"),
        ("--stun-port", "0"),
        ("--ws-port", "0"),
        ("--udp-port", "0"),
        ("--data-dir", data),
    ];
    for (flag, value) in defaults {
        let given = args
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        if !given {
            all.extend([flag, value]);
        }
    }
    all.extend(args);
    let out = cirrus_in(home.path(), &all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "`cirrus {all:?}` should have refused to start: {}\nstderr: {err}",
        out.status
    );
    err
}

/// A client command must fail as a command does: exit status 1 with a message on
/// stderr (not a panic's 101). Returns stderr.
pub fn fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1: {}\nstderr: {err}",
        out.status
    );
    assert!(!err.trim().is_empty(), "a failure says why");
    err
}
