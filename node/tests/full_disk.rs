//! A full disk is an error, not a zombie: below the free-space floor writes get
//! -32013 and reads go on; when space comes back the node writes again, without a
//! restart; nothing acknowledged is lost. The first test moves the free space of
//! the real disk with a ballast file around a floor set just above it; the second
//! fills a small tmpfs for real (it needs root, as CI has; elsewhere it says it was
//! skipped, and under CI=true it fails instead).

mod support;

use std::os::fd::AsRawFd;
use std::path::Path;

use serde_json::{Value, json};
use support::*;

/// Bytes free for unprivileged writers on the file system holding `dir`.
fn free(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// A file of `bytes` really allocated (not sparse), so it takes the space.
fn ballast(path: &Path, bytes: u64) -> std::fs::File {
    let f = std::fs::File::create(path).unwrap();
    // SAFETY: fallocate on a file we own, from 0 for `bytes`.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, bytes as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate of {bytes} bytes");
    f
}

fn put(node: &TestNode, n: u64) -> Value {
    let r = doc(&author(40), &format!("k{n}"), 1, &"v".repeat(1000));
    node.call("put", json!({"record": r}))
}

#[test]
fn writes_stop_below_the_floor_and_start_again_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = free(dir.path());
    let room = (2u64 << 30).min(f / 2);
    let floor_mib = (f - room / 2) >> 20;
    let node = TestNode::start_with(dir.path(), &["--min-free-disk", &floor_mib.to_string()]);
    assert!(put(&node, 0).get("result").is_some(), "above the floor");
    let health = |node: &TestNode| {
        reqwest::blocking::get(format!("{}/health", node.url))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health(&node), 200);

    let b = dir.path().join("ballast");
    let held = ballast(&b, room);
    let r = put(&node, 1);
    assert_eq!(error_code(&r), -32013, "below the floor: {r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min-free-disk"),
        "{r}"
    );
    assert_eq!(health(&node), 503, "health says so");
    assert_eq!(node.db()["records"], 1, "reads go on");
    assert_eq!(
        get_record(
            &node,
            &author(40).verifying_key().to_bytes(),
            "k0",
            cirrus_proto::record::Kind::Doc
        )["key"],
        "k0"
    );

    drop(held);
    std::fs::remove_file(&b).unwrap();
    let r = put(&node, 2);
    assert_eq!(r["result"]["status"], "applied", "space is back: {r}");
    assert_eq!(health(&node), 200);
    assert_eq!(node.db()["records"], 2);
}

/// A tmpfs of a few MiB filled to the last byte: redb's commit fails, the node
/// reopens the store and refuses writes while the disk stays full, writes again
/// once a file is deleted, and after a restart holds every acknowledged write.
#[test]
fn a_really_full_disk_then_space_again() {
    if unsafe { libc::geteuid() } != 0 {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "this test needs root (to mount a tmpfs), and CI runs as root"
        );
        eprintln!("SKIPPED a_really_full_disk_then_space_again: it needs root to mount a tmpfs");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs", m])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tmpfs on {m}");
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(m.to_string());
    let data = mnt.path().join("node");
    let node = TestNode::start_with(&data, &["--min-free-disk", "0", "--cache-size", "4"]);
    // Fill what is left with ballast, but for a little room, then write until the
    // disk is full.
    let spare = free(mnt.path()).saturating_sub(2 << 20);
    let held = ballast(&mnt.path().join("ballast"), spare);
    let mut acked = Vec::new();
    let mut refused = 0;
    for n in 0..4000 {
        let r = put(&node, n);
        if r.get("result").is_some() {
            acked.push(n);
        } else {
            assert_eq!(error_code(&r), -32013, "a full disk is -32013: {r}");
            refused += 1;
            if refused >= 5 {
                break;
            }
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled ({} writes acknowledged)",
        acked.len()
    );
    assert!(!acked.is_empty());
    // Reads go on.
    assert_eq!(node.db()["records"].as_u64().unwrap(), acked.len() as u64);

    // Space again: the node writes again, without a restart.
    drop(held);
    std::fs::remove_file(mnt.path().join("ballast")).unwrap();
    let n = wait_until("the node writes again once space is back", || {
        let r = put(&node, 10_000);
        if r.get("result").is_some() {
            Ok(10_000)
        } else {
            Err(r.to_string())
        }
    });
    acked.push(n);

    // Nothing acknowledged is lost, across a restart.
    node.stop();
    let node = TestNode::start_with(&data, &["--min-free-disk", "0"]);
    let a = author(40).verifying_key().to_bytes();
    for n in &acked {
        let got = get_record(&node, &a, &format!("k{n}"), cirrus_proto::record::Kind::Doc);
        assert_eq!(
            got["key"],
            format!("k{n}"),
            "acknowledged write k{n} was lost"
        );
    }
}
