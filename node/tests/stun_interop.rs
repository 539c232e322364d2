//! STUN (issue 4) against implementations that are not ours, on real processes:
//! stock clients (coturn's `turnutils_stunclient`, Python's `aioice`) against our
//! server, and `cirrus stun` against coturn's `turnserver`.
//!
//! coturn and aioice are not mocked: when they are missing the tests fail and say
//! that `scripts/test.sh` installs them. Nothing waits a fixed time: conditions are
//! polled until they hold or [`TIMEOUT`] passes.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use support::stun::*;
use support::*;

const INSTALL_HINT: &str = "scripts/test.sh installs it (apt-get install coturn; python3 -m pip install aioice); run that script or install it by hand";

// ---------------------------------------------------------------------------
// Tools from outside the project
// ---------------------------------------------------------------------------

/// The path of `program` on PATH, or a failure that says how to get it.
fn require_program(program: &str, package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` (Debian package {package}) is not installed: {INSTALL_HINT}")
        })
}

fn require_aioice() {
    let out = Command::new("python3")
        .args(["-c", "import aioice.stun"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "the Python package aioice is not importable ({}): {INSTALL_HINT}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A loopback address of this turnserver's own (127.251.X.Y, from the process id
/// and a counter), on which STUN's port 3478 is free whatever else runs: no port
/// is found free and then taken before turnserver binds it.
fn own_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("127.251.{}.{}", std::process::id() % 250, n % 250 + 1)
}

/// coturn's `turnserver`, STUN only, on a loopback port; killed on drop (also when
/// the test panics).
struct Turnserver {
    child: Child,
    ip: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Turnserver {
    fn start() -> Turnserver {
        let bin = require_program("turnserver", "coturn");
        let dir = tempfile::tempdir().unwrap();
        let (ip, port) = (own_ip(), 3478);
        let child = Command::new(bin)
            .arg("-n") // no config file: only these options
            .args(["--listening-ip", &ip])
            .args(["--listening-port", &port.to_string()])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-auth",
                "--stun-only",
                "--no-cli",
            ])
            .args(["--log-file", "stdout", "--simple-log"])
            .arg("--pidfile")
            .arg(dir.path().join("turnserver.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start turnserver ({e}): {INSTALL_HINT}"));
        Turnserver {
            child,
            ip,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn assert_running(&mut self) -> Result<(), String> {
        match self.child.try_wait().unwrap() {
            None => Ok(()),
            Some(status) => panic!("turnserver on port {} exited: {status}", self.port),
        }
    }
}

impl Drop for Turnserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cirrus_stun(server: &str, tcp: bool) -> Output {
    let mut args = vec!["stun", server, "--timeout", "2"];
    if tcp {
        args.push("--tcp");
    }
    cirrus(&args)
}

// ---------------------------------------------------------------------------
// a. Stock clients against our server
// ---------------------------------------------------------------------------

#[test]
fn coturn_stunclient_gets_its_udp_address_from_our_server() {
    let client = require_program("turnutils_stunclient", "coturn");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let port = stun_port(&node);

    let out = Command::new(client)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("run turnutils_stunclient");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "turnutils_stunclient failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = stdout
        .split("UDP reflexive addr: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("no \"UDP reflexive addr\" in turnutils_stunclient's output: {stdout}")
        });
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("turnutils_stunclient printed {addr:?}: {e}"));
    assert_eq!(addr.ip(), LOOPBACK, "{stdout}");
    assert_ne!(addr.port(), 0, "{stdout}");
    assert_ne!(
        addr.port(),
        port,
        "the client's port, not the server's: {stdout}"
    );
}

/// aioice's own STUN codec: builds a Binding request with FINGERPRINT, sends it over
/// TCP or UDP, parses the answer (checking its FINGERPRINT) and prints what it saw.
const AIOICE_CLIENT: &str = r#"
import json, socket, sys
from aioice import stun

transport, port = sys.argv[1], int(sys.argv[2])
req = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
req.add_fingerprint()
if transport == "tcp":
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(bytes(req))
    data = b""
    while len(data) < 20 or len(data) < 20 + int.from_bytes(data[2:4], "big"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("the server closed the connection after %r" % data)
        data += chunk
    data = data[: 20 + int.from_bytes(data[2:4], "big")]
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.bind(("127.0.0.1", 0))
    s.sendto(bytes(req), ("127.0.0.1", port))
    data, _ = s.recvfrom(4096)
resp = stun.parse_message(data)
local = s.getsockname()
print(json.dumps({
    "local": "%s:%d" % local,
    "class": resp.message_class.name,
    "method": resp.message_method.name,
    "sameTransaction": resp.transaction_id == req.transaction_id,
    "xorMapped": "%s:%d" % resp.attributes["XOR-MAPPED-ADDRESS"],
    "mapped": "%s:%d" % resp.attributes["MAPPED-ADDRESS"],
    "software": resp.attributes.get("SOFTWARE"),
    "fingerprint": "FINGERPRINT" in resp.attributes,
}))
"#;

fn aioice_binding(transport: &str, port: u16) -> Value {
    require_aioice();
    let out = Command::new("python3")
        .args(["-c", AIOICE_CLIENT, transport, &port.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the aioice client over {transport} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the aioice client prints JSON")
}

#[test]
fn aioice_gets_its_address_from_our_server_over_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path());
    let port = stun_port(&node);
    for transport in ["tcp", "udp"] {
        let r = aioice_binding(transport, port);
        assert_eq!(r["class"], "RESPONSE", "{transport}: {r}");
        assert_eq!(r["method"], "BINDING", "{transport}: {r}");
        assert_eq!(r["sameTransaction"], true, "{transport}: {r}");
        assert_eq!(r["fingerprint"], true, "{transport}: {r}");
        assert_eq!(
            r["xorMapped"], r["local"],
            "{transport}: XOR-MAPPED-ADDRESS must be the client socket's address: {r}"
        );
        assert_eq!(r["mapped"], r["local"], "{transport}: MAPPED-ADDRESS: {r}");
        assert!(
            r["software"]
                .as_str()
                .is_some_and(|s| s.starts_with("cirrus/")),
            "{transport}: SOFTWARE: {r}"
        );
    }
}

// ---------------------------------------------------------------------------
// b. `cirrus stun` against coturn
// ---------------------------------------------------------------------------

#[test]
fn cirrus_stun_gets_its_address_from_coturn_over_udp_and_tcp() {
    let mut turn = Turnserver::start();
    let server = turn.addr();
    for tcp in [false, true] {
        let name = if tcp { "TCP" } else { "UDP" };
        // Poll until turnserver is up; then the answer itself is checked.
        let out = wait_until(
            &format!("turnserver answers `cirrus stun` over {name}"),
            || {
                turn.assert_running()?;
                let out = cirrus_stun(&server, tcp);
                if out.status.success() {
                    Ok(out)
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let addr: SocketAddr = stdout.trim().parse().unwrap_or_else(|e| {
            panic!("`cirrus stun {server}` over {name} printed {stdout:?}: {e}")
        });
        assert_eq!(addr.ip(), LOOPBACK, "over {name}: {stdout}");
        assert_ne!(addr.port(), 0, "over {name}: {stdout}");
        assert_ne!(addr.port(), turn.port, "over {name}: {stdout}");
    }
}
