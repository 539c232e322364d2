//! The client side of one UDP API call, sans-IO: the request padded so that the
//! answer fits the server's budget for a stranger, retransmission, reassembly of a
//! fragmented answer, and the retry with the cookie when the server asks for one.
//! Shared by the client library and the rendezvous client, which sends the same
//! datagram to several endpoints of a peer at once.

use std::time::{Duration, Instant};

use super::cookie::{cookie_asked, with_cookie};
use super::fragment::Reassembler;
use super::{MAX_DATAGRAM, MIN_REQUEST};

/// When to send the request again while no answer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmit {
    /// After this long, then doubling (RFC 8489 §6.2.1's rule).
    Doubling(Duration),
    /// Every this long (while punching: each send also keeps a NAT mapping fresh).
    Every(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the request is {0} bytes, more than one UDP datagram carries ({MAX_DATAGRAM})")]
    TooLarge(usize),
    #[error("the request is not a JSON object or array")]
    NotJson,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the node kept asking for a cookie")]
    CookieLoop,
}

/// What a datagram did to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing yet (a fragment, a stale answer, noise).
    Waiting,
    /// The server asked for a cookie; the retry is due now.
    CookieTaken,
    /// The whole answer.
    Answer(Vec<u8>),
}

/// Cookie answers a call takes before giving up: the first, and one more in case
/// the server's epoch turned between them.
const MAX_COOKIES: u8 = 2;

#[derive(Debug)]
pub struct UdpCall {
    /// The request as the caller gave it.
    request: Vec<u8>,
    /// What goes on the wire: padded, with the cookie once we have one.
    datagram: Vec<u8>,
    cookie: Option<String>,
    cookies: u8,
    parts: Reassembler,
    retransmit: Retransmit,
    interval: Duration,
    next_send: Instant,
    started: Instant,
    deadline: Instant,
}

impl UdpCall {
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        timeout: Duration,
        retransmit: Retransmit,
    ) -> Result<UdpCall, CallError> {
        let interval = match retransmit {
            Retransmit::Doubling(d) | Retransmit::Every(d) => d,
        };
        let mut call = UdpCall {
            datagram: Vec::new(),
            request,
            cookie: None,
            cookies: 0,
            parts: Reassembler::default(),
            retransmit,
            interval,
            next_send: now,
            started: now,
            deadline: now + timeout,
        };
        call.datagram = call.frame(None)?;
        Ok(call)
    }

    fn frame(&self, cookie: Option<&str>) -> Result<Vec<u8>, CallError> {
        let mut d = match cookie {
            Some(c) => with_cookie(&self.request, c).ok_or(CallError::NotJson)?,
            None => self.request.clone(),
        };
        if d.len() > MAX_DATAGRAM {
            return Err(CallError::TooLarge(d.len()));
        }
        // JSON whitespace: a node answers a stranger with at most three times what
        // it got, and the cookie answer must fit.
        d.resize(d.len().max(MIN_REQUEST), b' ');
        Ok(d)
    }

    /// The datagram to send now, if a send is due; schedules the next one.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if now < self.next_send || now >= self.deadline {
            return None;
        }
        self.next_send = now + self.interval;
        if let Retransmit::Doubling(_) = self.retransmit {
            self.interval *= 2;
        }
        Some(&self.datagram)
    }

    /// The datagram as it stands, to send to an endpoint learned mid-call.
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }

    /// When to call [`poll_transmit`](Self::poll_transmit) or
    /// [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_send.min(self.deadline)
    }

    /// An error once the call's time is up.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), CallError> {
        if now >= self.deadline {
            Err(CallError::TimedOut(self.deadline - self.started))
        } else {
            Ok(())
        }
    }

    /// A datagram from the server (not STUN; the caller filters by source).
    pub fn on_datagram(&mut self, now: Instant, bytes: &[u8]) -> Result<Progress, CallError> {
        let Some(msg) = self.parts.push(bytes) else {
            return Ok(Progress::Waiting);
        };
        let Some(asked) = cookie_asked(&msg) else {
            return Ok(Progress::Answer(msg));
        };
        // Asking for the very cookie we send: a late answer to a copy sent before we
        // had it. (A server that no longer takes our cookie sends a new one.)
        if self.cookie.as_deref() == Some(asked.as_str()) {
            return Ok(Progress::Waiting);
        }
        if self.cookies >= MAX_COOKIES {
            return Err(CallError::CookieLoop);
        }
        self.cookies += 1;
        self.datagram = self.frame(Some(&asked))?;
        self.cookie = Some(asked);
        self.next_send = now;
        if let Retransmit::Doubling(d) = self.retransmit {
            self.interval = d;
        }
        Ok(Progress::CookieTaken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{cookie_answer, datagrams, strip_cookie};

    const REQ: &[u8] = br#"{"jsonrpc":"2.0","method":"getdbhash","params":{},"id":1}"#;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retransmits_with_doubling_intervals_until_the_deadline() {
        let t0 = Instant::now();
        let mut c =
            UdpCall::new(t0, REQ.to_vec(), 1000 * MS, Retransmit::Doubling(100 * MS)).unwrap();
        let mut sent = Vec::new();
        let mut now = t0;
        while c.handle_timeout(now).is_ok() {
            if c.poll_transmit(now).is_some() {
                sent.push((now - t0).as_millis());
            }
            now = c.poll_timeout();
        }
        assert_eq!(sent, vec![0, 100, 300, 700]);
        assert_eq!(c.handle_timeout(now), Err(CallError::TimedOut(1000 * MS)));
        assert!(c.datagram().len() >= MIN_REQUEST, "padded");
    }

    #[test]
    fn takes_a_cookie_once_ignores_its_echo_and_reassembles_the_answer() {
        let t0 = Instant::now();
        let mut c =
            UdpCall::new(t0, REQ.to_vec(), 5000 * MS, Retransmit::Doubling(250 * MS)).unwrap();
        assert!(c.poll_transmit(t0).is_some());
        let asked = cookie_answer(1.into(), "c0ffee");
        let t1 = t0 + 10 * MS;
        assert_eq!(c.on_datagram(t1, &asked), Ok(Progress::CookieTaken));
        let retry = c
            .poll_transmit(t1)
            .expect("the retry is due at once")
            .to_vec();
        assert_eq!(strip_cookie(&retry).cookie.as_deref(), Some("c0ffee"));
        // The answer to a copy sent before the cookie arrives late: not the answer.
        assert_eq!(c.on_datagram(t1, &asked), Ok(Progress::Waiting));
        // A fragmented answer, out of order.
        let json = vec![b'7'; 3000];
        let mut parts = datagrams(5, &json);
        parts.reverse();
        let mut got = None;
        for p in &parts {
            if let Progress::Answer(m) = c.on_datagram(t1, p).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(json));
    }

    #[test]
    fn a_server_that_keeps_asking_is_given_up_on() {
        let t0 = Instant::now();
        let mut c = UdpCall::new(t0, REQ.to_vec(), 5000 * MS, Retransmit::Every(250 * MS)).unwrap();
        assert_eq!(
            c.on_datagram(t0, &cookie_answer(1.into(), "a")),
            Ok(Progress::CookieTaken)
        );
        assert_eq!(
            c.on_datagram(t0, &cookie_answer(1.into(), "b")),
            Ok(Progress::CookieTaken)
        );
        assert_eq!(
            c.on_datagram(t0, &cookie_answer(1.into(), "c")),
            Err(CallError::CookieLoop)
        );
    }

    #[test]
    fn a_request_too_large_for_a_datagram_is_refused_up_front() {
        let big = vec![b' '; MAX_DATAGRAM + 1];
        let e = UdpCall::new(Instant::now(), big, MS, Retransmit::Every(MS)).unwrap_err();
        assert_eq!(e, CallError::TooLarge(MAX_DATAGRAM + 1));
    }
}
