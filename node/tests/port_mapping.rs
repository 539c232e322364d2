//! Port mapping against a UPnP gateway on loopback that the test runs itself: an
//! SSDP responder and an HTTP server speaking the IGD description and SOAP. The
//! honest one checks what a node asks for (its own address and ports, a finite
//! lease) and that it removes its mappings when it stops; the hostile ones send
//! endless or deeply nested answers, answers from other addresses, and a private
//! external address. The lab runs the same code against stock miniupnpd
//! (`testnet/natlab.sh --smoke --port-mapping`).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cirrus_node::portmap::{LEASE_SECS, MAX_BODY};
use serde_json::Value;
use support::*;

const EXTERNAL: &str = "203.0.113.7";

#[derive(Clone, Copy, PartialEq)]
enum Gateway {
    Honest,
    /// The device description never ends.
    EndlessDescription,
    /// A description nested deeper than a node parses (within the tag limit).
    DeepDescription,
    /// GetExternalIPAddress answers without end.
    EndlessSoap,
    /// The gateway says its external address is a private one.
    PrivateExternal,
    /// GetExternalIPAddress answers with entities that expand into deep markup.
    EntitySoap,
}

/// What the gateway saw.
#[derive(Default)]
struct Seen {
    /// SOAP action and body, in order.
    soap: Mutex<Vec<(String, String)>>,
    /// GETs of the service description.
    scpd_gets: AtomicUsize,
    /// Where each HTTP connection came from.
    http_from: Mutex<Vec<std::net::IpAddr>>,
    /// Bytes of an endless answer written before the node hung up.
    endless_written: AtomicU64,
    endless_done: AtomicUsize,
}

struct Igd {
    ssdp: SocketAddr,
    seen: Arc<Seen>,
}

impl Igd {
    fn start(kind: Gateway) -> Igd {
        Self::start_with(kind, Vec::new())
    }

    /// `first`: SSDP answers sent before the true one, each from its own socket.
    fn start_with(kind: Gateway, first: Vec<(UdpSocket, String)>) -> Igd {
        let ssdp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ssdp_at, http_at) = (ssdp.local_addr().unwrap(), http.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = ssdp.recv_from(&mut buf) {
                if !String::from_utf8_lossy(&buf[..n]).starts_with("M-SEARCH") {
                    continue;
                }
                for (sock, location) in &first {
                    let _ = sock.send_to(ssdp_answer(location).as_bytes(), from);
                }
                let location = format!("http://{http_at}/rootDesc.xml");
                let _ = ssdp.send_to(ssdp_answer(&location).as_bytes(), from);
            }
        });
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in http.incoming().flatten() {
                let s = s.clone();
                if let Ok(peer) = conn.peer_addr() {
                    s.http_from.lock().unwrap().push(peer.ip());
                }
                std::thread::spawn(move || serve(conn, kind, &s));
            }
        });
        Igd {
            ssdp: ssdp_at,
            seen,
        }
    }

    fn actions(&self) -> Vec<String> {
        let soap = self.seen.soap.lock().unwrap();
        soap.iter().map(|(a, _)| a.clone()).collect()
    }
}

fn ssdp_answer(location: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
         USN: uuid:test::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: {location}\r\n\r\n"
    )
}

const DESCRIPTION: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>"#;

fn scpd() -> String {
    let action = |name: &str, args: &[&str]| {
        let args: String = args
            .iter()
            .map(|a| format!("<argument><name>{a}</name><direction>in</direction></argument>"))
            .collect();
        format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
    };
    let add = [
        "NewRemoteHost",
        "NewExternalPort",
        "NewProtocol",
        "NewInternalPort",
        "NewInternalClient",
        "NewEnabled",
        "NewPortMappingDescription",
        "NewLeaseDuration",
    ];
    format!(
        "<?xml version=\"1.0\"?><scpd><actionList>{}{}{}</actionList></scpd>",
        action("AddPortMapping", &add),
        action(
            "DeletePortMapping",
            &["NewRemoteHost", "NewExternalPort", "NewProtocol"]
        ),
        action("GetExternalIPAddress", &[]),
    )
}

fn soap_answer(action: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
         <u:{action}Response xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">{inner}</u:{action}Response>\
         </s:Body></s:Envelope>"
    )
}

fn serve(conn: TcpStream, kind: Gateway, seen: &Seen) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let (mut length, mut action) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "soapaction" => action = value.trim().trim_matches('"').to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let answer = match (path.as_str(), kind) {
        ("/rootDesc.xml", Gateway::EndlessDescription) => return endless(w, seen),
        ("/rootDesc.xml", Gateway::DeepDescription) => format!(
            "<root>{}{}</root>",
            "<device>".repeat(1500),
            "</device>".repeat(1500)
        ),
        ("/rootDesc.xml", _) => DESCRIPTION.to_string(),
        ("/scpd.xml", _) => {
            seen.scpd_gets.fetch_add(1, Ordering::SeqCst);
            scpd()
        }
        ("/ctl", _) => {
            let name = action.rsplit('#').next().unwrap_or("").to_string();
            seen.soap
                .lock()
                .unwrap()
                .push((name.clone(), String::from_utf8_lossy(&body).into_owned()));
            match (name.as_str(), kind) {
                ("GetExternalIPAddress", Gateway::EndlessSoap) => return endless(w, seen),
                // Three `<` that a parser expanding entities would nest 300,000
                // deep (and so overflow its stack), under xml-rs's own 1 MB
                // expansion limit and within 64 KiB.
                ("GetExternalIPAddress", Gateway::EntitySoap) => format!(
                    "<!DOCTYPE r [<!ENTITY e \"{}\">]><r>{}</r>",
                    "&#60;a&#62;".repeat(5000),
                    "&e;".repeat(60)
                ),
                ("GetExternalIPAddress", Gateway::PrivateExternal) => soap_answer(
                    &name,
                    "<NewExternalIPAddress>10.9.8.7</NewExternalIPAddress>",
                ),
                ("GetExternalIPAddress", _) => soap_answer(
                    &name,
                    &format!("<NewExternalIPAddress>{EXTERNAL}</NewExternalIPAddress>"),
                ),
                _ => soap_answer(&name, ""),
            }
        }
        _ => String::new(),
    };
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// Offer 256 MiB of XML-looking bytes; record how much got out before the node
/// hung up.
fn endless(mut w: TcpStream, seen: &Seen) {
    let _ = w
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n<root>");
    let chunk = "<a/>".repeat(16 * 1024);
    let mut written = 0u64;
    while written < 256 << 20 {
        match w.write(chunk.as_bytes()) {
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    seen.endless_written.store(written, Ordering::SeqCst);
    seen.endless_done.fetch_add(1, Ordering::SeqCst);
}

fn start_node(igd: &Igd) -> (tempfile::TempDir, TestNode) {
    start_node_on("127.0.0.1", igd)
}

fn start_node_on(ip: &str, igd: &Igd) -> (tempfile::TempDir, TestNode) {
    let dir = tempfile::tempdir().unwrap();
    let gw = igd.ssdp.to_string();
    let node = TestNode::start_on(ip, dir.path(), &["--port-mapping-gateway", &gw]);
    (dir, node)
}

fn forwarded(info: &Value, t: &str) -> Vec<Value> {
    info["stun"][t]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["via"] == "upnp")
        .cloned()
        .collect()
}

fn arg(body: &str, name: &str) -> String {
    let start = body.find(&format!("<{name}>")).unwrap() + name.len() + 2;
    let end = body[start..].find('<').unwrap();
    body[start..start + end].to_string()
}

#[test]
fn maps_both_api_ports_and_removes_them_on_stop() {
    // The node on an address of its own: it must ask from there, for there.
    const NODE_IP: &str = "127.0.0.61";
    let igd = Igd::start(Gateway::Honest);
    let (_dir, node) = start_node_on(NODE_IP, &igd);
    let udp_port = node.udp.parse::<SocketAddr>().unwrap().port();
    let ws_port: u16 = node.ws.rsplit(':').next().unwrap().parse().unwrap();
    let info = wait_until("both mappings listed with via upnp", || {
        let info = node.info();
        let (u, t) = (forwarded(&info, "udp"), forwarded(&info, "tcp"));
        if u.len() == 1 && t.len() == 1 {
            Ok(info)
        } else {
            Err(format!("stun: {}", info["stun"]))
        }
    });
    for (t, port) in [("udp", udp_port), ("tcp", ws_port)] {
        let m = &forwarded(&info, t)[0];
        assert_eq!(m["address"], EXTERNAL, "{m}");
        assert_eq!(m["port"], port, "same port outside when free: {m}");
        assert_eq!(m["localPort"], port, "{m}");
    }
    for t in ["udp", "tcp"] {
        assert_eq!(node.metric("cirrus_port_mapped", &[("transport", t)]), 1.0);
        assert_eq!(
            node.metric("cirrus_stun_mappings", &[("transport", t)]),
            0.0
        );
    }
    let adds: Vec<(String, String)> = igd
        .seen
        .soap
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == "AddPortMapping")
        .cloned()
        .collect();
    assert_eq!(adds.len(), 2, "{:?}", igd.actions());
    for (_, body) in &adds {
        assert_eq!(arg(body, "NewInternalClient"), NODE_IP);
        assert_eq!(arg(body, "NewLeaseDuration"), LEASE_SECS.to_string());
    }
    let protocols: Vec<String> = adds.iter().map(|(_, b)| arg(b, "NewProtocol")).collect();
    assert_eq!(protocols, ["UDP", "TCP"]);
    let from = igd.seen.http_from.lock().unwrap().clone();
    assert!(
        !from.is_empty() && from.iter().all(|ip| ip.to_string() == NODE_IP),
        "HTTP to the gateway came from {from:?}"
    );

    node.stop();
    let deletes: Vec<(String, String)> = igd
        .seen
        .soap
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == "DeletePortMapping")
        .cloned()
        .collect();
    let mut removed: Vec<(String, String)> = deletes
        .iter()
        .map(|(_, b)| (arg(b, "NewProtocol"), arg(b, "NewExternalPort")))
        .collect();
    removed.sort();
    let mut want = vec![
        ("TCP".to_string(), ws_port.to_string()),
        ("UDP".to_string(), udp_port.to_string()),
    ];
    want.sort();
    assert_eq!(removed, want, "{:?}", igd.actions());
}

#[test]
fn answers_from_elsewhere_are_never_followed() {
    // A second HTTP server that must never be asked: one SSDP answer names it,
    // one comes from another address, before the gateway's own answer.
    let foreign = TcpListener::bind("127.0.0.2:0").unwrap();
    let foreign_at = foreign.local_addr().unwrap();
    foreign.set_nonblocking(true).unwrap();
    let other_source = UdpSocket::bind("127.0.0.2:0").unwrap();
    let same_source = UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = vec![
        (same_source, format!("http://{foreign_at}/rootDesc.xml")),
        (other_source, format!("http://{foreign_at}/rootDesc.xml")),
    ];
    // The answer from the gateway's address but another port is from the gateway
    // host; its LOCATION is on another host, so it is refused as well.
    let igd = Igd::start_with(Gateway::Honest, first);
    let (_dir, node) = start_node(&igd);
    wait_until("mapped through the gateway's own answer", || {
        let info = node.info();
        if forwarded(&info, "udp").len() == 1 {
            Ok(())
        } else {
            Err(format!("stun: {}", info["stun"]))
        }
    });
    assert!(
        foreign.accept().is_err(),
        "the node connected to a host the gateway did not name"
    );
    node.stop();
}

/// Wait until the node has given up one round with its gateway.
fn wait_failed(node: &TestNode) {
    wait_until("a failed port-mapping round", || {
        let n = node.metric("cirrus_port_mappings_total", &[("result", "failed")]);
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n} failed rounds"))
        }
    });
}

#[test]
fn endless_answers_are_cut_at_the_body_limit() {
    for kind in [Gateway::EndlessDescription, Gateway::EndlessSoap] {
        let igd = Igd::start(kind);
        let (_dir, node) = start_node(&igd);
        wait_failed(&node);
        wait_until("the gateway saw the node hang up", || {
            if igd.seen.endless_done.load(Ordering::SeqCst) > 0 {
                Ok(())
            } else {
                Err("still writing".into())
            }
        });
        let written = igd.seen.endless_written.load(Ordering::SeqCst);
        // What the node read is at most MAX_BODY; the rest of what got out sat in
        // the two kernels' socket buffers (a few MiB on loopback at most).
        assert!(
            written < (MAX_BODY as u64) + (16 << 20),
            "{written} bytes went out of 256 MiB offered"
        );
        let info = node.info();
        assert!(forwarded(&info, "udp").is_empty(), "{}", info["stun"]);
        if kind == Gateway::EndlessSoap {
            assert_eq!(igd.actions(), ["GetExternalIPAddress"]);
        }
        node.stop();
    }
}

#[test]
fn deep_descriptions_and_private_addresses_map_nothing() {
    let deep = Igd::start(Gateway::DeepDescription);
    let private = Igd::start(Gateway::PrivateExternal);
    let bomb = Igd::start(Gateway::EntitySoap);
    let (_d1, n1) = start_node(&deep);
    let (_d2, n2) = start_node(&private);
    let (_d3, mut n3) = start_node(&bomb);
    wait_failed(&n3);
    assert!(n3.running(), "the entity answer brought the node down");
    assert_eq!(bomb.actions(), ["GetExternalIPAddress"]);
    n3.stop();
    // Each node gave up its first round: the deep one never went on to the
    // service description, the private one asked only for the address.
    wait_failed(&n1);
    wait_failed(&n2);
    n1.stop();
    assert_eq!(deep.seen.scpd_gets.load(Ordering::SeqCst), 0);
    assert!(deep.actions().is_empty(), "{:?}", deep.actions());
    let info = n2.info();
    assert!(forwarded(&info, "udp").is_empty(), "{}", info["stun"]);
    n2.stop();
    assert_eq!(private.actions(), ["GetExternalIPAddress"]);
}

#[test]
fn a_gateway_that_is_not_ip_port_is_refused_at_start() {
    for bad in ["10.0.0.1", "gateway:1900", "[::1]", "10.0.0.1:99999"] {
        let err = must_not_start(&["--port-mapping-gateway", bad]);
        assert!(
            err.contains("port-mapping-gateway") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}
