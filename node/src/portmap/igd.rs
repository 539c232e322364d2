//! Finding the LAN's UPnP Internet Gateway Device with every answer bounded. The
//! SSDP search goes unicast to our default gateway and takes answers only from it;
//! the device description and the service description are read up to
//! [`MAX_BODY`] bytes from that same address; SOAP answers likewise, through
//! [`Bounded`]. igd-next formats and parses the SOAP calls; its own search is not
//! used because it takes the first multicast answer from anyone and reads the
//! descriptions whole.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use igd_next::RequestError;
use igd_next::aio::{Gateway, Provider};
use reqwest::Url;
use tokio::net::UdpSocket;
use xmltree::{Element, XMLNode};

/// SSDP's port (UPnP Device Architecture 2.0, §1.3).
pub const SSDP_PORT: u16 = 1900;
/// Most bytes read of one HTTP answer from the gateway. Real descriptions are a
/// few KiB (miniupnpd's service description: about 6 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Most tags in one XML document.
pub const MAX_TAGS: usize = 4096;
/// Deepest element nesting parsed: the XML parser builds the tree, and the tree is
/// dropped, by recursion (2,000 levels overflow a 2 MiB stack in a debug build).
/// An IGD description nests about 9 deep.
pub const MAX_DEPTH: usize = 32;
/// Most SSDP datagrams read while waiting for the gateway's answer.
const MAX_DATAGRAMS: usize = 16;
/// How long the gateway has to answer the search, and each HTTP exchange.
const ANSWER_FOR: Duration = Duration::from_secs(3);

/// The service types whose SOAP actions igd-next speaks.
const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("SSDP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no SSDP answer from {0}")]
    NoAnswer(SocketAddr),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("an answer of more than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the description: {0}")]
    Description(&'static str),
}

/// Search for the IGD at `at` (our gateway's SSDP port) from `bind`, and read its
/// descriptions.
pub async fn find(bind: IpAddr, at: SocketAddr) -> Result<Gateway<Bounded>, FindError> {
    let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
    let search = format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {at}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\
         ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
    );
    sock.send_to(search.as_bytes(), at).await?;
    let location = tokio::time::timeout(ANSWER_FOR, async {
        let mut buf = [0u8; 1500];
        for _ in 0..MAX_DATAGRAMS {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if from.ip() != at.ip() {
                continue;
            }
            if let Some(url) = location(&buf[..n], at.ip()) {
                return Ok(url);
            }
        }
        Err(FindError::NoAnswer(at))
    })
    .await
    .map_err(|_| FindError::NoAnswer(at))??;
    let addr = SocketAddr::new(at.ip(), location.port_or_known_default().unwrap_or(80));
    let description = get(&location).await?;
    let (scpd, control) = service(&description)?;
    let scpd_url = location
        .join(&scpd)
        .map_err(|_| FindError::Description("a bad SCPDURL"))?;
    let control_url = same_host(&location, &control)?;
    let schema = actions(&get(&same_host_url(&location, &scpd_url)?).await?)?;
    Ok(Gateway {
        addr,
        root_url: location.path().to_string(),
        control_url,
        control_schema_url: scpd_url.path().to_string(),
        control_schema: schema,
        provider: Bounded,
    })
}

/// The LOCATION of an SSDP answer, if it is an http URL on `gateway` itself (we talk
/// HTTP only to the device we asked).
pub fn location(datagram: &[u8], gateway: IpAddr) -> Option<Url> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut lines = text.lines();
    if !lines.next()?.starts_with("HTTP/1.1 200") {
        return None;
    }
    let value = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("location")
            .then(|| value.trim())
    })?;
    let url = Url::parse(value).ok()?;
    let host: IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    (url.scheme() == "http" && host == gateway).then_some(url)
}

/// A URL of the description, as a path on the description's own host; absolute
/// URLs elsewhere are refused.
fn same_host(base: &Url, url: &str) -> Result<String, FindError> {
    let joined = base
        .join(url)
        .map_err(|_| FindError::Description("a bad controlURL"))?;
    same_host_url(base, &joined)?;
    Ok(match joined.query() {
        Some(q) => format!("{}?{q}", joined.path()),
        None => joined.path().to_string(),
    })
}

fn same_host_url(base: &Url, url: &Url) -> Result<Url, FindError> {
    if url.scheme() == "http"
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
    {
        Ok(url.clone())
    } else {
        Err(FindError::Description("a URL on another host"))
    }
}

/// GET `url`, reading at most [`MAX_BODY`] bytes.
async fn get(url: &Url) -> Result<Vec<u8>, FindError> {
    let http = |e: reqwest::Error| FindError::Http(e.to_string());
    let resp = client().get(url.clone()).send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(FindError::Http(format!("status {}", resp.status())));
    }
    read_capped(resp).await
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, FindError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FindError::Http(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FindError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

tokio::task_local! {
    /// The address the node is bound to. HTTP to the gateway leaves from it when it
    /// is a specific one, so that the gateway sees the address it is asked to map
    /// to (miniupnpd's secure mode maps only to the address that asks). A task
    /// local, because igd-next calls [`Bounded`] without a receiver.
    static BIND: IpAddr;
}

/// Run `f` with HTTP to the gateway leaving from `bind`.
pub async fn bound<F: std::future::Future>(bind: IpAddr, f: F) -> F::Output {
    BIND.scope(bind, f).await
}

/// A client for one exchange (there are a few an hour).
fn client() -> reqwest::Client {
    let local = BIND.try_with(|b| *b).ok().filter(|b| !b.is_unspecified());
    reqwest::Client::builder()
        .timeout(ANSWER_FOR)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(local)
        .build()
        .expect("a plain HTTP client builds")
}

/// Parse XML of at most [`MAX_TAGS`] tags nested at most [`MAX_DEPTH`] deep.
fn parse(body: &[u8]) -> Result<Element, FindError> {
    check(body).map_err(FindError::Description)?;
    Element::parse(body).map_err(|_| FindError::Description("not XML"))
}

/// Whether `xml` may be handed to the parser: no document type declaration (the
/// parser expands the entities one declares, and their text is parsed as markup,
/// so three `<` can nest 300,000 deep within 64 KiB; UPnP descriptions and SOAP
/// carry none), at
/// most [`MAX_TAGS`] tags, at most [`MAX_DEPTH`] levels.
fn check(xml: &[u8]) -> Result<(), &'static str> {
    if xml.windows(9).any(|w| w.eq_ignore_ascii_case(b"<!DOCTYPE"))
        || xml.windows(8).any(|w| w.eq_ignore_ascii_case(b"<!ENTITY"))
    {
        return Err("a document type declaration");
    }
    if xml.iter().filter(|&&b| b == b'<').count() > MAX_TAGS {
        return Err("too many tags");
    }
    if depth(xml) > MAX_DEPTH {
        return Err("nested too deep");
    }
    Ok(())
}

/// The deepest element nesting of `xml`, counted without parsing it: comments,
/// CDATA, declarations and quoted attribute values are skipped, so none of them
/// can hide an open tag. Malformed input counts as whatever it looks like; the
/// parser refuses it afterwards.
fn depth(xml: &[u8]) -> usize {
    let find = |from: &[u8], what: &[u8]| {
        from.windows(what.len())
            .position(|w| w == what)
            .map_or(from.len(), |i| i + what.len())
    };
    let (mut i, mut d, mut deepest) = (0, 0usize, 0);
    while i < xml.len() {
        if xml[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &xml[i..];
        if rest.starts_with(b"<!--") {
            i += find(rest, b"-->");
            continue;
        }
        if rest.starts_with(b"<![CDATA[") {
            i += find(rest, b"]]>");
            continue;
        }
        let (mut j, mut quote, mut last) = (1, None, 0u8);
        while j < rest.len() {
            let c = rest[j];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => break,
                None => last = c,
            }
            j += 1;
        }
        match rest.get(1) {
            Some(b'/') => d = d.saturating_sub(1),
            Some(b'?' | b'!') => {}
            _ if last == b'/' => {}
            _ => {
                d += 1;
                deepest = deepest.max(d);
            }
        }
        i += j + 1;
    }
    deepest
}

fn children<'a>(e: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
    e.children
        .iter()
        .filter_map(XMLNode::as_element)
        .filter(move |c| c.name == name)
}

fn text(e: &Element, child: &str) -> Option<String> {
    Some(e.get_child(child)?.get_text()?.trim().to_string())
}

/// The first WAN connection service of the device tree: its (SCPDURL, controlURL).
pub fn service(description: &[u8]) -> Result<(String, String), FindError> {
    let root = parse(description)?;
    // Devices nest (root device > WANDevice > WANConnectionDevice): walk them with
    // a list rather than recursion.
    let mut devices: Vec<&Element> = children(&root, "device").collect();
    while let Some(d) = devices.pop() {
        for list in children(d, "serviceList") {
            for s in children(list, "service") {
                if let (Some(kind), Some(scpd), Some(control)) = (
                    text(s, "serviceType"),
                    text(s, "SCPDURL"),
                    text(s, "controlURL"),
                ) && SERVICES.contains(&kind.as_str())
                {
                    return Ok((scpd, control));
                }
            }
        }
        for list in children(d, "deviceList") {
            devices.extend(children(list, "device"));
        }
    }
    Err(FindError::Description("no WAN connection service"))
}

/// The service description's actions and their input arguments, in order (what
/// igd-next formats its SOAP calls from).
pub fn actions(scpd: &[u8]) -> Result<HashMap<String, Vec<String>>, FindError> {
    let root = parse(scpd)?;
    let mut out = HashMap::new();
    for list in children(&root, "actionList") {
        for a in children(list, "action") {
            let Some(name) = text(a, "name") else {
                continue;
            };
            let args = children(a, "argumentList")
                .flat_map(|l| children(l, "argument"))
                .filter(|arg| text(arg, "direction").as_deref() == Some("in"))
                .filter_map(|arg| text(arg, "name"))
                .collect();
            out.insert(name, args);
        }
    }
    if out.contains_key("AddPortMapping") {
        Ok(out)
    } else {
        Err(FindError::Description("no AddPortMapping action"))
    }
}

/// igd-next's SOAP transport with the answer read up to [`MAX_BODY`] bytes, within
/// a timeout, and without redirects.
#[derive(Debug, Clone, Copy)]
pub struct Bounded;

impl Provider for Bounded {
    async fn send_async(url: &str, action: &str, body: &str) -> Result<String, RequestError> {
        let io = |e: String| RequestError::IoError(std::io::Error::other(e));
        let resp = client()
            .post(url)
            .header("SOAPAction", action)
            .header("Content-Type", "text/xml")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| io(e.to_string()))?;
        let body = read_capped(resp).await.map_err(|e| io(e.to_string()))?;
        check(&body).map_err(|why| RequestError::InvalidResponse(why.into()))?;
        String::from_utf8(body).map_err(|e| RequestError::InvalidResponse(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, 1));

    #[test]
    fn location_only_from_the_gateway_over_http() {
        let ok = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nLocation: http://10.1.0.1:5000/rootDesc.xml\r\n\r\n";
        assert_eq!(
            location(ok, GW).map(|u| u.to_string()),
            Some("http://10.1.0.1:5000/rootDesc.xml".into())
        );
        let elsewhere = b"HTTP/1.1 200 OK\r\nLOCATION: http://192.0.2.7/x.xml\r\n\r\n";
        assert_eq!(location(elsewhere, GW), None);
        let https = b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n";
        assert_eq!(location(https, GW), None);
        assert_eq!(
            location(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://10.1.0.1/\r\n", GW),
            None
        );
        assert_eq!(location(&[0xff, 0xfe, 0], GW), None);
    }

    #[test]
    fn nested_devices_and_foreign_urls() {
        let desc = br#"<?xml version="1.0"?><root><device><deviceList><device>
            <deviceList><device><serviceList><service>
            <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
            <SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL>
            </service></serviceList></device></deviceList></device></deviceList></device></root>"#;
        assert_eq!(
            service(desc).unwrap(),
            ("/WANIPCn.xml".into(), "/ctl/IPConn".into())
        );
        let base = Url::parse("http://10.1.0.1:5000/rootDesc.xml").unwrap();
        assert_eq!(same_host(&base, "/ctl/IPConn").unwrap(), "/ctl/IPConn");
        assert!(same_host(&base, "http://192.0.2.7:5000/ctl").is_err());
        assert!(same_host(&base, "http://10.1.0.1:80/ctl").is_err());
    }

    #[test]
    fn deep_or_huge_xml_is_refused_without_recursion() {
        let deep = "<a>".repeat(MAX_TAGS + 1);
        assert!(matches!(
            service(deep.as_bytes()),
            Err(FindError::Description(_))
        ));
        let nested = format!("{}{}", "<a>".repeat(2000), "</a>".repeat(2000));
        assert!(matches!(
            service(nested.as_bytes()),
            Err(FindError::Description("nested too deep"))
        ));
        // Nothing hides an open tag from the count.
        let hidden = format!(
            "<root><!-- {c} --><x a=\"/>{c}\"/>{o}{cl}</root>",
            c = "</a>".repeat(40),
            o = "<a>".repeat(40),
            cl = "</a>".repeat(40)
        );
        assert_eq!(depth(hidden.as_bytes()), 41);
        // Three `<` whose entities would nest 300,000 deep: refused unparsed (the
        // parse overflowed a node's stack; node/tests/port_mapping.rs).
        let bomb = format!(
            "<!DOCTYPE r [<!ENTITY e \"{}\">]><r>{}</r>",
            "&#60;a&#62;".repeat(5000),
            "&e;".repeat(60)
        );
        assert!(matches!(
            service(bomb.as_bytes()),
            Err(FindError::Description("a document type declaration"))
        ));
        assert!(check(b"<!doctype x><x/>").is_err());
        assert_eq!(depth(b"<?xml version=\"1.0\"?><a><b/><c>t</c></a>"), 2);
        assert!(actions(b"<scpd><actionList></actionList></scpd>").is_err());
    }

    #[test]
    fn scpd_in_arguments_in_order() {
        let scpd = br#"<scpd><actionList><action><name>AddPortMapping</name><argumentList>
            <argument><name>NewRemoteHost</name><direction>in</direction></argument>
            <argument><name>NewExternalPort</name><direction>in</direction></argument>
            <argument><name>NewOut</name><direction>out</direction></argument>
            </argumentList></action></actionList></scpd>"#;
        let a = actions(scpd).unwrap();
        assert_eq!(
            a["AddPortMapping"],
            vec!["NewRemoteHost", "NewExternalPort"]
        );
    }
}
