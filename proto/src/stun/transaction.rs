//! One STUN Binding transaction over UDP, sans-IO (RFC 8489 §6.2.1). The request
//! goes out at once and again after RTO, 2·RTO, 4·RTO and so on, at most
//! [`Schedule::tries`] times; the transaction ends with the first answer of its id
//! from its server, or fails when [`Schedule::give_up_after`] has passed since it
//! began. Time and datagrams go in; datagrams to send, when to wake, and the
//! outcome come out, with the shape of quinn-proto's and str0m's machines:
//! [`handle_packet`](Transaction::handle_packet),
//! [`handle_timeout`](Transaction::handle_timeout),
//! [`poll_transmit`](Transaction::poll_transmit),
//! [`poll_timeout`](Transaction::poll_timeout),
//! [`poll_event`](Transaction::poll_event).
//!
//! What does not end a transaction: datagrams from another address, datagrams that
//! are not STUN or do not decode, and answers to another transaction (an
//! off-path sender does not know the id). An error answer with our id does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Message, StunError, parse_binding_response};

/// When to send and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The first wait; each later one doubles.
    pub rto: Duration,
    /// Most sends, the first included.
    pub tries: u32,
    /// The transaction fails this long after it began.
    pub give_up_after: Duration,
}

impl Schedule {
    /// RFC 8489's defaults (RTO 500 ms, Rc = 7, Rm = 16): sends at 0, 0.5, 1.5,
    /// 3.5, 7.5, 15.5 and 31.5 s, failure at 39.5 s.
    pub const RFC8489: Schedule = Schedule {
        rto: Duration::from_millis(500),
        tries: 7,
        give_up_after: Duration::from_millis(39_500),
    };

    /// Doubling from 500 ms for as long as `total` allows.
    pub fn within(total: Duration) -> Schedule {
        Schedule {
            rto: Duration::from_millis(500),
            tries: u32::MAX,
            give_up_after: total,
        }
    }
}

/// Why a transaction got no mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Stun(#[from] StunError),
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub destination: SocketAddr,
    pub contents: &'a [u8],
}

#[derive(Debug)]
pub struct Transaction {
    txid: [u8; 12],
    request: Vec<u8>,
    server: SocketAddr,
    schedule: Schedule,
    started: Instant,
    sent: u32,
    /// When the next send is due (none left: `None`).
    next_send: Option<Instant>,
    outcome: Option<Result<SocketAddr, TransactionError>>,
    reported: bool,
}

impl Transaction {
    /// A transaction sending `request` (a Binding request of id `txid`) to
    /// `server`; its first send is due at `now`.
    pub fn new(
        now: Instant,
        server: SocketAddr,
        txid: [u8; 12],
        request: Vec<u8>,
        schedule: Schedule,
    ) -> Transaction {
        Transaction {
            txid,
            request,
            server,
            schedule,
            started: now,
            sent: 0,
            next_send: (schedule.tries > 0).then_some(now),
            outcome: None,
            reported: false,
        }
    }

    fn deadline(&self) -> Instant {
        self.started + self.schedule.give_up_after
    }

    fn done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The request, if a send is due at `now`; schedules the next one.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if self.done() || now >= self.deadline() {
            return None;
        }
        let due = self.next_send?;
        if now < due {
            return None;
        }
        self.sent += 1;
        self.next_send = (self.sent < self.schedule.tries).then(|| {
            // RTO · 2^(sent - 1) after this send, measured from when it was due, so
            // a late wake-up does not stretch the schedule.
            let wait = self
                .schedule
                .rto
                .saturating_mul(1u32 << (self.sent - 1).min(20));
            due + wait
        });
        Some(Transmit {
            destination: self.server,
            contents: &self.request,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has something to do; `None` once the
    /// transaction has ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done() {
            return None;
        }
        let deadline = self.deadline();
        Some(self.next_send.map_or(deadline, |n| n.min(deadline)))
    }

    /// Time passed: fail once the transaction's time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.done() && now >= self.deadline() {
            self.outcome = Some(Err(TransactionError::Timeout(self.schedule.give_up_after)));
        }
    }

    /// A datagram arrived from `from`. Whether it was this transaction's answer.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        self.handle_timeout(now);
        if self.done() || from != self.server {
            return false;
        }
        // Only a message that decodes and carries our id is ours; what it says then
        // (a mapping, an error, no address) ends the transaction.
        match Message::decode(bytes) {
            Ok(msg) if msg.transaction_id == self.txid => {}
            _ => return false,
        }
        self.outcome =
            Some(parse_binding_response(bytes, &self.txid).map_err(TransactionError::from));
        true
    }

    /// The outcome, once, when the transaction has ended.
    pub fn poll_event(&mut self) -> Option<Result<SocketAddr, TransactionError>> {
        if self.reported {
            return None;
        }
        let out = self.outcome.clone()?;
        self.reported = true;
        Some(out)
    }

    /// How many times the request went out.
    pub fn sent(&self) -> u32 {
        self.sent
    }
}
