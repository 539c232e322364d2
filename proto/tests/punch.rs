//! The UDP punch in virtual time: the client's opening and probe
//! (`punch::opening`, `PathProbe`) and the target's rounds (`punch::Rounds`) and UDP
//! API (`udp::Endpoint`), through simulated NAT routers with conntrack-like state.
//! The races docs/nat.md describes from the lab run here in milliseconds: a router
//! whose own stack takes an unsolicited packet keeps a conntrack entry that makes
//! the next flow on that port pair take another port; the TTL-2 opening avoids that
//! where a router stands between the NATs, and cannot where the NATs share a
//! segment.
//!
//! The model (Linux masquerade, as the lab's routers): a new flow takes the
//! external port of its socket's newest flow (its source port for the first)
//! unless another entry holds the same (remote endpoint, external port), and a
//! random one then ("endpoint-independent", the lab's eim-pdf: once one flow of a
//! socket got another port, the socket's later flows follow it), or takes a random
//! port whatever (`fully-random`, symmetric); an inbound packet passes only if it matches a flow's
//! reply (port-dependent filtering), else it is dropped or, with `answers`, taken by
//! the router's stack, which leaves an entry behind. A packet whose TTL runs out
//! at a router is dropped before NAT, so it opens nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cirrus_proto::api::Guess;
use cirrus_proto::punch::spray::ports_from;
use cirrus_proto::punch::{
    Nats, Opening, PathChoice, PathProbe, ProbeEvent, Rounds, Spray, Transmit, opening,
};
use cirrus_proto::stun::nat::Nat as NatType;
use cirrus_proto::stun::{binding_indication, is_stun};
use cirrus_proto::udp::{Endpoint, Incoming, Reply};

const HOP: Duration = Duration::from_micros(100);
/// The rendezvous node relays `punch` to the target, and its answer back.
const RELAY: Duration = Duration::from_millis(2);
const PEER: &str = "12D3KooWTarget";
const TARGET_LOCAL: &str = "10.1.0.2:50000";
const CLIENT_LOCAL: &str = "10.2.0.2:40000";
const TARGET_EXT: &str = "198.18.12.2";
const CLIENT_EXT: &str = "198.18.22.2";
const RENDEZVOUS_STUN: &str = "198.18.1.2:38084";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = xorshift(*seed);
            (*seed >> 24) as u8
        })
        .collect()
}

/// Deliver every packet due now: to the target's API, or to the client's probe.
fn deliver(lab: &mut Lab, api: &mut Endpoint, mut probe: Option<&mut PathProbe>) {
    while lab
        .queue
        .first_key_value()
        .is_some_and(|((at, _), _)| *at <= lab.now)
    {
        let Some((side, pkt)) = lab.step() else {
            continue;
        };
        match side {
            Side::Target => target_answers(lab, api, &pkt),
            Side::Client => {
                if let Some(p) = probe.as_deref_mut() {
                    p.handle_packet(lab.now, pkt.src, &pkt.bytes);
                }
            }
        }
    }
}

/// The target's UDP API answers a probe that reached one of its sockets, from that
/// socket.
fn target_answers(lab: &mut Lab, api: &mut Endpoint, pkt: &Packet) {
    if is_stun(&pkt.bytes) {
        return;
    }
    if let Incoming::Rpc(rpc) = api.on_datagram(lab.now, pkt.src, &pkt.bytes) {
        let answer =
            format!(r#"{{"jsonrpc":"2.0","id":"cirrus-link","result":{{"peerId":"{PEER}"}}}}"#);
        let reply = api.respond(lab.now, &rpc, Reply::Json(answer.into_bytes()));
        for d in reply.datagrams {
            let t = Transmit {
                destination: pkt.src,
                contents: d,
                ttl: None,
            };
            lab.send(Side::Target, pkt.dst, t);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mapping {
    /// Endpoint-independent: the source port is kept when free.
    Independent,
    /// A new random port per flow.
    PerFlow,
}

struct Nat {
    external: IpAddr,
    mapping: Mapping,
    /// The router's own stack takes unsolicited packets (and keeps an entry).
    answers: bool,
    /// (internal, remote) -> external port.
    flows: HashMap<(SocketAddr, SocketAddr), u16>,
    /// (remote, external port) -> internal: replies of those flows.
    replies: HashMap<(SocketAddr, u16), SocketAddr>,
    /// (remote, external port) the router's stack took: no flow may use the pair.
    taken: Vec<(SocketAddr, u16)>,
    /// internal -> external port of its newest flow (Linux's `find_appropriate_src`
    /// finds the newest entry of the same source first).
    newest: HashMap<SocketAddr, u16>,
    /// xorshift64 state: the same ports every run.
    rng: u64,
}

impl Nat {
    fn new(external: &str, mapping: Mapping, answers: bool) -> Nat {
        Nat {
            external: external.parse().unwrap(),
            mapping,
            answers,
            flows: HashMap::new(),
            replies: HashMap::new(),
            taken: Vec::new(),
            newest: HashMap::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn used(&self, remote: SocketAddr, port: u16) -> bool {
        self.replies.contains_key(&(remote, port)) || self.taken.contains(&(remote, port))
    }

    /// SNAT of a packet from `from` (inside) to `to`.
    fn outbound(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        if let Some(p) = self.flows.get(&(from, to)) {
            return SocketAddr::new(self.external, *p);
        }
        let mut port = match self.mapping {
            Mapping::Independent => self.newest.get(&from).copied().unwrap_or(from.port()),
            Mapping::PerFlow => self.random(),
        };
        while self.used(to, port) {
            port = self.random();
        }
        self.newest.insert(from, port);
        self.flows.insert((from, to), port);
        self.replies.insert((to, port), from);
        SocketAddr::new(self.external, port)
    }

    /// A port of 1024..=65535, where Linux NATs allocate.
    fn random(&mut self) -> u16 {
        self.rng = xorshift(self.rng);
        1024 + (self.rng % 64_512) as u16
    }

    /// A packet from `from` to our external `port`: the host it goes to, if any.
    fn inbound(&mut self, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        if let Some(host) = self.replies.get(&(from, port)) {
            return Some(*host);
        }
        if self.answers && !self.taken.contains(&(from, port)) {
            self.taken.push((from, port));
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Client,
    Target,
}

/// A packet on its way: where it is next delivered.
#[derive(Clone)]
struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u32,
    bytes: Vec<u8>,
}

#[derive(Clone)]
enum Hop {
    /// Leaving a host behind the NAT of `Side`.
    OutOf(Side),
    /// The core router between the NATs.
    Core,
    /// Arriving at the public address of `Side`'s NAT.
    Into(Side),
    /// At a host.
    Host(Side),
}

struct Lab {
    client_nat: Option<Nat>,
    target_nat: Nat,
    /// A router between the NATs (the Internet); without it they share a segment.
    core: bool,
    now: Instant,
    queue: BTreeMap<(Instant, u64), (Hop, Packet)>,
    seq: u64,
}

impl Lab {
    fn send(&mut self, side: Side, from: SocketAddr, t: Transmit) {
        let p = Packet {
            src: from,
            dst: t.destination,
            ttl: t.ttl.unwrap_or(64),
            bytes: t.contents,
        };
        let first = match side {
            Side::Client if self.client_nat.is_none() => self.after_nat(),
            side => Hop::OutOf(side),
        };
        self.push(first, p);
    }

    fn after_nat(&self) -> Hop {
        if self.core {
            Hop::Core
        } else {
            Hop::Into(Side::Target)
        }
    }

    fn push(&mut self, hop: Hop, p: Packet) {
        self.seq += 1;
        self.queue.insert((self.now + HOP, self.seq), (hop, p));
    }

    fn nat(&mut self, side: Side) -> Option<&mut Nat> {
        match side {
            Side::Client => self.client_nat.as_mut(),
            Side::Target => Some(&mut self.target_nat),
        }
    }

    fn side_of(&self, ip: IpAddr) -> Side {
        if ip == self.target_nat.external {
            Side::Target
        } else {
            Side::Client
        }
    }

    /// Move the next packet one hop; a packet that reached a host is returned.
    fn step(&mut self) -> Option<(Side, Packet)> {
        let ((at, _), (hop, mut p)) = self.queue.pop_first()?;
        self.now = self.now.max(at);
        match hop {
            Hop::OutOf(side) => {
                // A router: the TTL first, then NAT (Linux drops an expiring packet
                // in forwarding, before its flow is confirmed).
                p.ttl -= 1;
                if p.ttl == 0 {
                    return None;
                }
                let nat = self.nat(side).expect("a NAT on this side");
                p.src = nat.outbound(p.src, p.dst);
                let next = if self.core {
                    Hop::Core
                } else {
                    Hop::Into(self.side_of(p.dst.ip()))
                };
                self.push(next, p);
            }
            Hop::Core => {
                p.ttl -= 1;
                if p.ttl == 0 {
                    return None;
                }
                let side = self.side_of(p.dst.ip());
                self.push(Hop::Into(side), p);
            }
            Hop::Into(side) => match self.nat(side) {
                // A public client: the packet is at the host.
                None => return Some((side, p)),
                Some(nat) => {
                    if let Some(host) = nat.inbound(p.src, p.dst.port()) {
                        p.dst = host;
                        self.push(Hop::Host(side), p);
                    }
                }
            },
            Hop::Host(side) => return Some((side, p)),
        }
        None
    }
}

struct Case {
    client: Option<Mapping>,
    target: Mapping,
    answers: bool,
    core: bool,
    opening: bool,
}

/// One punch: the probe's outcome, and the endpoint the target listed.
fn punch(c: Case) -> (ProbeEvent, SocketAddr) {
    let t0 = Instant::now();
    let target_local = addr(TARGET_LOCAL);
    let client_local = if c.client.is_some() {
        addr(CLIENT_LOCAL)
    } else {
        addr(&format!("{CLIENT_EXT}:40000"))
    };
    let mut lab = Lab {
        client_nat: c.client.map(|m| Nat::new(CLIENT_EXT, m, c.answers)),
        target_nat: Nat::new(TARGET_EXT, c.target, c.answers),
        core: c.core,
        now: t0,
        queue: BTreeMap::new(),
        seq: 0,
    };
    // Both sides' STUN traffic to the rendezvous node made their mappings: the
    // target's is the endpoint it lists, the client's is `mine`.
    let stun = addr(RENDEZVOUS_STUN);
    let listed = lab.target_nat.outbound(target_local, stun);
    let mine = match lab.client_nat.as_mut() {
        Some(n) => n.outbound(client_local, stun),
        None => client_local,
    };
    let indication = binding_indication([7; 12]);
    if c.opening && c.client.is_some() {
        for t in opening(&[listed], &indication) {
            lab.send(Side::Client, client_local, t);
        }
    }
    let mut api = Endpoint::new([1; 32], 100.0, "sim", t0);
    let mut rounds: Option<Rounds> = None;
    let mut probe: Option<PathProbe> = None;
    let punch_at = t0 + RELAY;
    let probe_at = punch_at + RELAY;
    let request = br#"{"jsonrpc":"2.0","id":"cirrus-link","method":"getnodeinfo"}"#.to_vec();
    let end = t0 + Duration::from_secs(10);
    while lab.now < end {
        let now = lab.now;
        if rounds.is_none() && now >= punch_at {
            rounds = Some(Rounds::new(now));
        }
        if let Some(r) = rounds.as_mut()
            && r.poll_round(now)
        {
            let t = Transmit {
                destination: mine,
                contents: indication.clone(),
                ttl: None,
            };
            lab.send(Side::Target, target_local, t);
        }
        if probe.is_none() && now >= probe_at {
            let p = PathProbe::new(
                now,
                request.clone(),
                vec![listed],
                None,
                PEER,
                Duration::from_secs(4),
                Duration::from_millis(250),
            );
            probe = Some(p.unwrap());
        }
        if let Some(p) = probe.as_mut() {
            p.handle_timeout(now);
            while let Some(t) = p.poll_transmit(now) {
                lab.send(Side::Client, client_local, t);
            }
            if let Some(e) = p.poll_event() {
                return (e, listed);
            }
        }
        deliver(&mut lab, &mut api, probe.as_mut());
        // Wake at the next event.
        let wakes = [
            lab.queue.first_key_value().map(|((at, _), _)| *at),
            rounds.as_ref().and_then(Rounds::poll_timeout),
            probe.as_ref().and_then(PathProbe::poll_timeout),
            (probe.is_none()).then_some(probe_at),
            (rounds.is_none()).then_some(punch_at),
        ];
        match wakes.into_iter().flatten().min() {
            Some(w) if w > lab.now => lab.now = w,
            Some(_) => {}
            None => break,
        }
    }
    panic!("the probe did not end in 10 s of virtual time");
}

/// Whether the path opened, at the listed endpoint.
fn opened((e, listed): &(ProbeEvent, SocketAddr)) -> bool {
    *e == ProbeEvent::Open(*listed)
}

fn failed((e, _): &(ProbeEvent, SocketAddr)) -> bool {
    matches!(e, ProbeEvent::NoAnswer { .. })
}

const EIM: Option<Mapping> = Some(Mapping::Independent);

/// Two endpoint-independent, port-filtering NATs (the lab's eim-pdf).
fn eim_pair(answers: bool, core: bool, opening: bool) -> Case {
    Case {
        client: EIM,
        target: Mapping::Independent,
        answers,
        core,
        opening,
    }
}

#[test]
fn eim_both_sides_go_direct_with_silent_routers() {
    for core in [true, false] {
        let e = punch(eim_pair(false, core, true));
        assert!(opened(&e), "core {core}: {e:?}");
    }
}

#[test]
fn answering_routers_need_the_opening_and_a_router_between() {
    // With a router between the NATs, the TTL-2 opening opens the client's NAT
    // and dies before the target's: direct.
    let e = punch(eim_pair(true, true, true));
    assert!(opened(&e), "{e:?}");
    // Without the opening, the target's first punch reaches the client's NAT
    // before the client has sent: its stack takes the pair, the client's probes
    // leave from another port, and the target's NAT drops them.
    let e = punch(eim_pair(true, true, false));
    assert!(failed(&e), "{e:?}");
    // On one segment the opening itself reaches the target's NAT, whose stack
    // takes the pair: the same loss on the other side (docs/nat.md, issue 15.6).
    let e = punch(eim_pair(true, false, true));
    assert!(failed(&e), "{e:?}");
}

#[test]
fn a_symmetric_client_cannot_punch_a_port_filtering_target() {
    let e = punch(Case {
        client: Some(Mapping::PerFlow),
        target: Mapping::Independent,
        answers: false,
        core: true,
        opening: true,
    });
    assert!(failed(&e), "{e:?}");
}

#[test]
fn a_public_client_learns_a_symmetric_targets_port_from_its_punch() {
    let (e, listed) = punch(Case {
        client: None,
        target: Mapping::PerFlow,
        answers: false,
        core: true,
        opening: true,
    });
    // The path is the port the target's punch came from, not the listed one.
    match e {
        ProbeEvent::Open(at) => {
            assert_eq!(at.ip(), listed.ip());
            assert_ne!(at, listed);
        }
        other => panic!("{other:?}"),
    }
}

/// A port guess toward a symmetric target, as `Opening::TargetOpens` runs it: the
/// target opens `Guess::SOCKETS` sockets, each sending one TTL-2 indication toward
/// the client's mapping (past its NAT, not as far as the client's); the client
/// sprays `Guess::PROBES` probes from its one socket to random ports of the target's
/// address and takes the first that answers. The probe's outcome, and the external
/// ports the target's sockets got.
fn guess(seed: &mut u64) -> (ProbeEvent, Vec<u16>) {
    let t0 = Instant::now();
    let mut target_nat = Nat::new(TARGET_EXT, Mapping::PerFlow, false);
    target_nat.rng = xorshift(*seed | 1);
    let mut lab = Lab {
        client_nat: Some(Nat::new(CLIENT_EXT, Mapping::Independent, false)),
        target_nat,
        core: true,
        now: t0,
        queue: BTreeMap::new(),
        seq: 0,
    };
    let client_local = addr(CLIENT_LOCAL);
    let mine = lab
        .client_nat
        .as_mut()
        .unwrap()
        .outbound(client_local, addr(RENDEZVOUS_STUN));
    let indication = binding_indication([8; 12]);
    let mut opened = Vec::new();
    for i in 0..Guess::SOCKETS as u16 {
        let local = SocketAddr::new(addr(TARGET_LOCAL).ip(), 51_000 + i);
        opened.push(lab.target_nat.outbound(local, mine).port());
        let t = Transmit {
            destination: mine,
            contents: indication.clone(),
            ttl: Some(2),
        };
        lab.send(Side::Target, local, t);
    }
    let mut api = Endpoint::new([2; 32], 100.0, "sim", t0);
    let request = br#"{"jsonrpc":"2.0","id":"cirrus-link","method":"getnodeinfo"}"#.to_vec();
    let start = t0 + RELAY;
    let ext: IpAddr = TARGET_EXT.parse().unwrap();
    let mut probe = PathProbe::new(
        start,
        request,
        Vec::new(),
        Some(ext),
        PEER,
        Duration::from_secs(2),
        Duration::from_millis(250),
    )
    .unwrap();
    let mut spray = Spray::new(start, ports_from(&noise(seed, 2 * Guess::PROBES)));
    lab.now = start;
    loop {
        let now = lab.now;
        while let Some(port) = spray.poll_transmit(now) {
            let t = Transmit {
                destination: SocketAddr::new(ext, port),
                contents: probe.datagram().to_vec(),
                ttl: None,
            };
            lab.send(Side::Client, client_local, t);
        }
        probe.handle_timeout(now);
        while let Some(t) = probe.poll_transmit(now) {
            lab.send(Side::Client, client_local, t);
        }
        if let Some(e) = probe.poll_event() {
            return (e, opened);
        }
        deliver(&mut lab, &mut api, Some(&mut probe));
        let wakes = [
            lab.queue.first_key_value().map(|((at, _), _)| *at),
            spray.poll_timeout(),
            probe.poll_timeout(),
        ];
        match wakes.into_iter().flatten().min() {
            Some(w) if w > lab.now => lab.now = w,
            Some(_) => {}
            None => panic!("nothing left to happen and no outcome"),
        }
    }
}

#[test]
fn a_port_guess_through_a_symmetric_nat_opens_at_one_of_its_ports() {
    let mut seed = 0xfeed;
    let trials = 50;
    let mut open = 0;
    for _ in 0..trials {
        match guess(&mut seed) {
            (ProbeEvent::Open(at), ports) => {
                assert_eq!(at.ip().to_string(), TARGET_EXT);
                assert!(
                    ports.contains(&at.port()),
                    "{at} is not one of the target's sockets"
                );
                open += 1;
            }
            (ProbeEvent::NoAnswer { .. }, _) => {}
            (other, _) => panic!("{other:?}"),
        }
    }
    // 98.3% each in theory: at least 45 of 50 (the seeds make it the same every run).
    assert!(open >= 45, "{open} of {trials} guesses opened a path");
}

/// A symmetric client guessing toward an eim-pdf target whose router's stack takes
/// unsolicited packets (the lab's `--wan-input accept`), the round opened as
/// `PathChoice` says for what the client knows of its own NAT. Whether one of the
/// client's 256 sockets heard the target's probes, and the ports the probes left
/// the target's NAT from.
///
/// The target's spray is given its ports: first the one a plain punch left behind
/// (if there was one), then one of the client's 256, so that the run shows in two
/// probes what the lab's CI run showed after thousands (docs/nat.md, "What the lab
/// found").
fn symmetric_client_guesses(ours: NatType) -> (bool, Vec<u16>) {
    let t0 = Instant::now();
    let mut lab = Lab {
        client_nat: Some(Nat::new(CLIENT_EXT, Mapping::PerFlow, true)),
        target_nat: Nat::new(TARGET_EXT, Mapping::Independent, true),
        core: true,
        now: t0,
        queue: BTreeMap::new(),
        seq: 0,
    };
    let drain = |lab: &mut Lab| {
        let mut heard = false;
        while !lab.queue.is_empty() {
            if let Some((Side::Client, _)) = lab.step() {
                heard = true;
            }
        }
        heard
    };
    let target_local = addr(TARGET_LOCAL);
    let listed = lab.target_nat.outbound(target_local, addr(RENDEZVOUS_STUN));
    let indication = binding_indication([9; 12]);
    let nats = Nats {
        target: NatType::EndpointIndependent,
        ours,
    };
    let mut choice = PathChoice::new(t0, true);
    assert!(choice.poll_start(t0));
    let mut left_behind = Vec::new();
    if choice.opening(nats) == Opening::Plain {
        // The plain punch's probe leaves the client's NAT from a port of its own,
        // which the target never sent to: its router's stack takes it.
        let client_local = addr(CLIENT_LOCAL);
        let sent = lab
            .client_nat
            .as_mut()
            .unwrap()
            .outbound(client_local, listed);
        let t = Transmit {
            destination: listed,
            contents: indication.clone(),
            ttl: None,
        };
        lab.send(Side::Client, client_local, t);
        assert!(!drain(&mut lab));
        left_behind.push(sent.port());
        let next = choice.failed(lab.now, cirrus_proto::punch::Miss::NoAnswer, nats);
        assert_eq!(next, cirrus_proto::punch::Change::Guessing(Opening::WeOpen));
    }
    assert_eq!(choice.opening(nats), Opening::WeOpen);
    // Our half of the guess: 256 sockets, each opening our NAT toward the target's
    // mapping with TTL 2.
    let mut ours_open = Vec::new();
    for i in 0..Guess::SOCKETS as u16 {
        let local = SocketAddr::new(addr(CLIENT_LOCAL).ip(), 52_000 + i);
        let nat = lab.client_nat.as_mut().unwrap();
        ours_open.push(nat.outbound(local, listed).port());
        let t = Transmit {
            destination: listed,
            contents: indication.clone(),
            ttl: Some(2),
        };
        lab.send(Side::Client, local, t);
    }
    assert!(!drain(&mut lab));
    // The target's half: its probes from the socket whose mapping we aimed at.
    let mut ports = left_behind;
    ports.push(ours_open[100]);
    let mut spray = Spray::new(lab.now, ports);
    let ext: IpAddr = CLIENT_EXT.parse().unwrap();
    let mut from = Vec::new();
    while let Some(port) = spray.poll_transmit(lab.now) {
        let to = SocketAddr::new(ext, port);
        from.push(lab.target_nat.outbound(target_local, to).port());
        let t = Transmit {
            destination: to,
            contents: indication.clone(),
            ttl: None,
        };
        lab.send(Side::Target, target_local, t);
    }
    (drain(&mut lab), from)
}

#[test]
fn a_symmetric_client_that_knows_it_guesses_first_and_its_guess_is_not_spoiled() {
    let listed = Nat::new(TARGET_EXT, Mapping::Independent, true)
        .outbound(addr(TARGET_LOCAL), addr(RENDEZVOUS_STUN))
        .port();
    // Knowing its NAT maps per destination, the client skips the plain punch: the
    // target's probes leave from the mapping its sockets aim at, and one is heard.
    let (heard, from) = symmetric_client_guesses(NatType::EndpointDependent);
    assert!(heard);
    assert_eq!(from, [listed]);
    // Not knowing, it punches plainly first. The probe to the port that punch left
    // behind takes another port, the next probe follows it, and none is heard.
    let (heard, from) = symmetric_client_guesses(NatType::Unknown);
    assert!(!heard);
    assert_eq!(from.len(), 2);
    assert!(from.iter().all(|p| *p != listed), "{from:?}");
    assert_eq!(
        from[0], from[1],
        "the socket's later flows follow its newest"
    );
}
