//! The STUN transaction machine in virtual time: its retransmission schedule, what
//! ends it and what does not, and a client against the Binding server through a
//! lossy link and an address-rewriting NAT. No sockets and no sleeping: `now` is
//! an `Instant` the test moves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cirrus_proto::stun::transaction::{Schedule, Transaction, TransactionError};
use cirrus_proto::stun::{Attribute, Class, Message, StunError, binding_request, handle_binding};
use proptest::prelude::*;

const SERVER: &str = "198.18.1.2:38084";
const MAPPED: &str = "198.18.11.2:51000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tx(now: Instant, txid: [u8; 12], schedule: Schedule) -> Transaction {
    Transaction::new(
        now,
        addr(SERVER),
        txid,
        binding_request(txid, "test", None),
        schedule,
    )
}

/// Run `t` with nothing ever answering; the times (ms after `t0`) of its sends,
/// and when and how it ended.
fn unanswered(t0: Instant, mut t: Transaction) -> (Vec<u128>, u128, TransactionError) {
    let mut sends = Vec::new();
    let mut now = t0;
    loop {
        t.handle_timeout(now);
        while t.poll_transmit(now).is_some() {
            sends.push((now - t0).as_millis());
        }
        if let Some(out) = t.poll_event() {
            return (sends, (now - t0).as_millis(), out.unwrap_err());
        }
        now = t.poll_timeout().expect("a live transaction has a timeout");
    }
}

#[test]
fn rfc8489_schedule_then_timeout() {
    let t0 = Instant::now();
    let (sends, ended, why) = unanswered(t0, tx(t0, [1; 12], Schedule::RFC8489));
    assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(ended, 39_500);
    assert_eq!(
        why,
        TransactionError::Timeout(Duration::from_millis(39_500))
    );
}

#[test]
fn a_total_limit_cuts_the_doubling() {
    let t0 = Instant::now();
    let (sends, ended, _) = unanswered(
        t0,
        tx(t0, [2; 12], Schedule::within(Duration::from_secs(2))),
    );
    assert_eq!(sends, [0, 500, 1500]);
    assert_eq!(ended, 2000);
}

#[test]
fn a_late_wakeup_does_not_stretch_the_schedule() {
    let t0 = Instant::now();
    let mut t = tx(t0, [3; 12], Schedule::RFC8489);
    assert!(t.poll_transmit(t0).is_some());
    // The driver oversleeps by 300 ms: the next send goes at once, and the one
    // after keeps to the original times.
    let late = t0 + Duration::from_millis(800);
    assert!(t.poll_transmit(late).is_some());
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_millis(1500)));
}

#[test]
fn only_our_answer_from_our_server_ends_it() {
    let t0 = Instant::now();
    let txid = [4; 12];
    let mut t = tx(t0, txid, Schedule::RFC8489);
    let req = t.poll_transmit(t0).unwrap().contents.to_vec();
    let answer = handle_binding(&req, addr(MAPPED), "srv").reply.unwrap();
    let other_tx = handle_binding(&binding_request([9; 12], "x", None), addr(MAPPED), "srv")
        .reply
        .unwrap();
    let now = t0 + Duration::from_millis(10);
    // From elsewhere, another transaction's, garbage, a torn copy: none of it.
    assert!(!t.handle_packet(now, addr("198.18.9.9:38084"), &answer));
    assert!(!t.handle_packet(now, addr(SERVER), &other_tx));
    assert!(!t.handle_packet(now, addr(SERVER), b"\x00\x01garbage"));
    assert!(!t.handle_packet(now, addr(SERVER), &answer[..answer.len() - 4]));
    assert!(!t.handle_packet(now, addr(SERVER), &[]));
    assert_eq!(t.poll_event(), None);
    assert!(t.handle_packet(now, addr(SERVER), &answer));
    assert_eq!(t.poll_event(), Some(Ok(addr(MAPPED))));
    // Reported once; nothing more to send or wait for; a duplicate is not ours.
    assert_eq!(t.poll_event(), None);
    assert_eq!(t.poll_timeout(), None);
    assert!(t.poll_transmit(now + Duration::from_secs(1)).is_none());
    assert!(!t.handle_packet(now, addr(SERVER), &answer));
}

#[test]
fn an_error_answer_ends_it() {
    let t0 = Instant::now();
    let txid = [5; 12];
    let mut t = tx(t0, txid, Schedule::RFC8489);
    t.poll_transmit(t0);
    let err = Message::new(Class::Error, cirrus_proto::stun::BINDING, txid)
        .with(Attribute::ErrorCode {
            code: 420,
            reason: "Unknown Attribute".into(),
        })
        .encode(true);
    assert!(t.handle_packet(t0, addr(SERVER), &err));
    assert_eq!(
        t.poll_event(),
        Some(Err(TransactionError::Stun(StunError::ServerError {
            code: 420,
            reason: "Unknown Attribute".into()
        })))
    );
    // A success without any address, with our id, ends it too.
    let mut t = tx(t0, [6; 12], Schedule::RFC8489);
    t.poll_transmit(t0);
    let bare = Message::new(Class::Success, cirrus_proto::stun::BINDING, [6; 12]).encode(true);
    assert!(t.handle_packet(t0, addr(SERVER), &bare));
    assert!(matches!(
        t.poll_event(),
        Some(Err(TransactionError::Stun(_)))
    ));
}

/// A link that delivers after `delay`, dropping the packets whose index is in
/// `lost` (requests and answers counted separately), through a NAT that rewrites
/// the client's source to [`MAPPED`].
struct Link {
    delay: Duration,
    lost_requests: u64,
    lost_answers: u64,
    requests: u32,
    answers: u32,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
}

impl Link {
    fn next_delivery(&self) -> Option<Instant> {
        let a = self.to_server.front().map(|p| p.0);
        let b = self.to_client.front().map(|p| p.0);
        a.into_iter().chain(b).min()
    }
}

/// Drive a client transaction against the server over `link`; the outcome and
/// how many requests went out.
fn through(link: &mut Link, schedule: Schedule) -> (Result<SocketAddr, TransactionError>, u32) {
    let t0 = Instant::now();
    let mut t = tx(t0, [7; 12], schedule);
    let mut now = t0;
    let mut reports = 0;
    let mut outcome = None;
    for _ in 0..10_000 {
        t.handle_timeout(now);
        while let Some(out) = t.poll_transmit(now) {
            assert_eq!(out.destination, addr(SERVER));
            let i = link.requests;
            link.requests += 1;
            if i >= 64 || link.lost_requests & (1 << i) == 0 {
                link.to_server
                    .push_back((now + link.delay, out.contents.to_vec()));
            }
        }
        while link.to_server.front().is_some_and(|p| p.0 <= now) {
            let (_, req) = link.to_server.pop_front().unwrap();
            // The server sees the NAT's address, and answers it.
            if let Some(reply) = handle_binding(&req, addr(MAPPED), "srv").reply {
                let i = link.answers;
                link.answers += 1;
                if i >= 64 || link.lost_answers & (1 << i) == 0 {
                    link.to_client.push_back((now + link.delay, reply));
                }
            }
        }
        while link.to_client.front().is_some_and(|p| p.0 <= now) {
            let (_, reply) = link.to_client.pop_front().unwrap();
            t.handle_packet(now, addr(SERVER), &reply);
        }
        while let Some(out) = t.poll_event() {
            reports += 1;
            outcome = Some(out);
        }
        let wake = t
            .poll_timeout()
            .into_iter()
            .chain(link.next_delivery())
            .min();
        match wake {
            Some(w) => now = w.max(now),
            None => break,
        }
        if outcome.is_some() && link.next_delivery().is_none() {
            break;
        }
    }
    assert_eq!(reports, 1, "the outcome is reported exactly once");
    (outcome.unwrap(), t.sent())
}

#[test]
fn through_a_nat_the_answer_names_the_mapping() {
    let mut link = Link {
        delay: Duration::from_millis(40),
        lost_requests: 0b11,
        lost_answers: 0,
        requests: 0,
        answers: 0,
        to_server: VecDeque::new(),
        to_client: VecDeque::new(),
    };
    let (out, sent) = through(&mut link, Schedule::RFC8489);
    assert_eq!(out, Ok(addr(MAPPED)));
    assert_eq!(sent, 3, "two requests lost, the third answered");
}

proptest! {
    /// Whatever is lost, the transaction never sends more than its tries, reports
    /// once, and succeeds exactly when some request and its answer both got
    /// through in time.
    #[test]
    fn any_loss_pattern(lost_requests in any::<u64>(), lost_answers in any::<u64>(),
                        delay_ms in 0u64..3000, tries in 1u32..8) {
        let schedule = Schedule { tries, ..Schedule::RFC8489 };
        let mut link = Link {
            delay: Duration::from_millis(delay_ms),
            lost_requests, lost_answers, requests: 0, answers: 0,
            to_server: VecDeque::new(), to_client: VecDeque::new(),
        };
        let (out, sent) = through(&mut link, schedule);
        prop_assert!(sent <= tries);
        // Send k goes at RTO·(2^k − 1); its answer is back 2·delay later.
        let rto = schedule.rto.as_millis() as u64;
        let mut answered = 0u32;
        let mut in_time = false;
        for k in 0..sent {
            if lost_requests & (1 << k) != 0 {
                continue;
            }
            let first_answer = lost_answers & (1 << answered) == 0;
            answered += 1;
            let back = rto * ((1u64 << k) - 1) + 2 * delay_ms;
            if first_answer && back < schedule.give_up_after.as_millis() as u64 {
                in_time = true;
                break;
            }
        }
        prop_assert_eq!(out.is_ok(), in_time, "outcome {:?}", out);
        if let Ok(m) = out {
            prop_assert_eq!(m, addr(MAPPED));
        }
    }
}
