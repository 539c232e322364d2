//! Which records a node sends together, and when, sans-IO: the driver pushes each
//! record it has to send (written here, or new to it from a peer) and sends what
//! [`Outbox::push`] or [`Outbox::handle_timeout`] hands back.
//!
//! A record waits at most [`LINGER`] for others to share its batch; a batch goes
//! at once when it holds [`MAX_BATCH_RECORDS`] or the next record would take it
//! over [`BATCH_BUDGET`]. A client's write is in a hurry ([`Outbox::hurry`]): its
//! batch goes at once, or [`HURRY_GAP`] after the last hurried one, whichever
//! is later.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{BATCH_BUDGET, Batch, MAX_BATCH_RECORDS};

/// How long a record waits for company. Every hop adds at most this; a node that
/// sees 100 records a second sends at most 40 batches a second instead of 100. At 10 ms
/// ten nodes writing 100 records a second used 15 to 20% more CPU (BENCHMARKS.md
/// 3.1, "A longer linger").
pub const LINGER: Duration = Duration::from_millis(25);

/// The least time between two hurried batches. Without it every commit with a
/// client's write would send a batch, and a client making single puts (9,000
/// commits a second) would make us send 9,000 small batches a second to every
/// mesh peer; with it a hurried write waits at most this, and we send at most
/// 1 s / `HURRY_GAP` + 1 s / [`LINGER`] batches a second that are not full.
pub const HURRY_GAP: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub struct Outbox {
    linger: Duration,
    records: Vec<Vec<u8>>,
    bytes: usize,
    /// When the oldest waiting record came.
    since: Option<Instant>,
    /// When a hurried batch last went, and when the next may go if one waits.
    hurried: Option<Instant>,
    hurry_due: Option<Instant>,
    /// Serials are a keyed hash of a count, so no peer can tell the next one.
    key: [u8; 32],
    count: u64,
}

impl Outbox {
    /// `key` (random, the node's secret) makes the batches' serials: distinct
    /// from another node's and from this one's before a restart, and not to be
    /// foretold. A peer that knew our next serial could send us the batch we are
    /// about to send, and gossipsub would then refuse our publish of the same
    /// bytes as a message it has seen.
    pub fn new(linger: Duration, key: [u8; 32]) -> Self {
        Outbox {
            linger,
            records: Vec::new(),
            bytes: 0,
            since: None,
            hurried: None,
            hurry_due: None,
            key,
            count: 0,
        }
    }

    fn next_serial(&mut self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(self.count.to_be_bytes());
        self.count += 1;
        u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 of 32 bytes"))
    }

    /// Queue a record's canonical bytes. Returns a batch to send now: the records
    /// already waiting, if this one would take them over the budget (it then
    /// starts the next batch), or the batch this record fills. A record that
    /// could never fit a batch is not queued.
    pub fn push(&mut self, now: Instant, record: Vec<u8>) -> Option<Vec<u8>> {
        if record.is_empty() || record.len() > BATCH_BUDGET {
            return None;
        }
        let full = if self.bytes + record.len() > BATCH_BUDGET {
            self.take()
        } else {
            None
        };
        self.since.get_or_insert(now);
        self.bytes += record.len();
        self.records.push(record);
        if self.records.len() >= MAX_BATCH_RECORDS {
            debug_assert!(full.is_none(), "one record closes at most one batch");
            return self.take();
        }
        full
    }

    /// The waiting records should not linger (a client wrote one of them): a
    /// batch to send now, unless a hurried batch went less than [`HURRY_GAP`]
    /// ago; then they are due when the gap ends.
    pub fn hurry(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.records.is_empty() {
            return None;
        }
        match self.hurried {
            Some(last) if now < last + HURRY_GAP => {
                self.hurry_due = Some(last + HURRY_GAP);
                None
            }
            _ => {
                self.hurried = Some(now);
                self.take()
            }
        }
    }

    /// When the waiting records are due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lingered = self.since.map(|t| t + self.linger);
        match (lingered, self.hurry_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The waiting records as a batch, if they are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.poll_timeout() {
            Some(due) if due <= now => {
                if self.hurry_due.is_some() {
                    self.hurried = Some(now);
                }
                self.take()
            }
            _ => None,
        }
    }

    /// Whatever waits, due or not (on shutdown).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.take()
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        if self.records.is_empty() {
            return None;
        }
        let serial = self.next_serial();
        let batch = Batch::encode(serial, self.records.iter().map(Vec::as_slice));
        self.records.clear();
        self.bytes = 0;
        self.since = None;
        self.hurry_due = None;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(batch: &[u8]) -> Vec<Vec<u8>> {
        Batch::split(batch)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn records_wait_for_company_then_go_together() {
        let t0 = Instant::now();
        let mut o = Outbox::new(LINGER, [7; 32]);
        assert_eq!(o.poll_timeout(), None);
        assert!(o.push(t0, vec![1; 10]).is_none());
        assert!(o.push(t0 + Duration::from_millis(4), vec![2; 10]).is_none());
        // The first record's linger sets the deadline, not the last one's.
        assert_eq!(o.poll_timeout(), Some(t0 + LINGER));
        assert!(
            o.handle_timeout(t0 + LINGER - Duration::from_millis(1))
                .is_none()
        );
        let batch = o.handle_timeout(t0 + LINGER).unwrap();
        assert_eq!(records(&batch), vec![vec![1; 10], vec![2; 10]]);
        assert_eq!(o.poll_timeout(), None);
        // The same records again make another message.
        o.push(t0, vec![1; 10]);
        o.push(t0, vec![2; 10]);
        assert_ne!(o.flush().unwrap(), batch);
        assert!(o.handle_timeout(t0 + LINGER * 5).is_none());
    }

    #[test]
    fn a_full_batch_goes_at_once() {
        let t0 = Instant::now();
        let mut o = Outbox::new(LINGER, [7; 32]);
        for i in 0..MAX_BATCH_RECORDS - 1 {
            assert!(o.push(t0, vec![i as u8 + 1; 3]).is_none());
        }
        let batch = o.push(t0, vec![0xff; 3]).expect("the 64th record fills it");
        assert_eq!(records(&batch).len(), MAX_BATCH_RECORDS);
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn a_record_over_the_budget_starts_the_next_batch() {
        let t0 = Instant::now();
        let mut o = Outbox::new(LINGER, [7; 32]);
        let half = BATCH_BUDGET / 2 + 1;
        assert!(o.push(t0, vec![1; half]).is_none());
        let later = t0 + Duration::from_millis(3);
        let first = o
            .push(later, vec![2; half])
            .expect("the two do not fit one batch");
        assert_eq!(records(&first), vec![vec![1; half]]);
        // The second record waits from when it came.
        assert_eq!(o.poll_timeout(), Some(later + LINGER));
        assert_eq!(records(&o.flush().unwrap()), vec![vec![2; half]]);
        assert!(o.flush().is_none());
    }

    #[test]
    fn a_hurried_write_goes_at_once_but_not_more_often_than_the_gap() {
        let t0 = Instant::now();
        let mut o = Outbox::new(LINGER, [7; 32]);
        assert!(o.hurry(t0).is_none(), "nothing waits");
        o.push(t0, vec![1; 10]);
        assert_eq!(records(&o.hurry(t0).unwrap()), vec![vec![1; 10]]);
        // The next one, 1 ms later, waits for the end of the gap, not the linger.
        let t1 = t0 + Duration::from_millis(1);
        o.push(t1, vec![2; 10]);
        assert!(o.hurry(t1).is_none());
        assert_eq!(o.poll_timeout(), Some(t0 + HURRY_GAP));
        o.push(t1, vec![3; 10]);
        assert!(o.hurry(t1).is_none());
        assert!(
            o.handle_timeout(t0 + HURRY_GAP - Duration::from_micros(1))
                .is_none()
        );
        let batch = o.handle_timeout(t0 + HURRY_GAP).unwrap();
        assert_eq!(records(&batch), vec![vec![2; 10], vec![3; 10]]);
        assert_eq!(o.poll_timeout(), None);
        // That batch was hurried too: the gap counts from it.
        let t2 = t0 + HURRY_GAP + Duration::from_millis(1);
        o.push(t2, vec![4; 10]);
        assert!(o.hurry(t2).is_none());
        assert_eq!(o.poll_timeout(), Some(t0 + HURRY_GAP * 2));
        // A record that is not hurried lingers as ever, even after hurried ones.
        o.flush();
        let t3 = t0 + HURRY_GAP * 10;
        o.push(t3, vec![5; 10]);
        assert_eq!(o.poll_timeout(), Some(t3 + LINGER));
    }

    #[test]
    fn hurried_batches_are_bounded_by_the_gap() {
        // A client writing one record every 100 µs for a second of virtual time.
        let t0 = Instant::now();
        let mut o = Outbox::new(LINGER, [7; 32]);
        let mut batches = 0u32;
        let mut records_out = 0usize;
        let step = Duration::from_micros(100);
        for i in 0..10_000u32 {
            let now = t0 + step * i;
            if let Some(b) = o.handle_timeout(now) {
                batches += 1;
                records_out += records(&b).len();
            }
            if let Some(b) = o.push(now, i.to_be_bytes().to_vec()) {
                batches += 1;
                records_out += records(&b).len();
            }
            if let Some(b) = o.hurry(now) {
                batches += 1;
                records_out += records(&b).len();
            }
            if let Some(due) = o.poll_timeout() {
                assert!(due <= now + HURRY_GAP, "a hurried write never lingers");
            }
        }
        if let Some(b) = o.flush() {
            batches += 1;
            records_out += records(&b).len();
        }
        assert_eq!(records_out, 10_000, "every record went");
        let most = (Duration::from_secs(1).as_micros() / HURRY_GAP.as_micros()) as u32 + 1;
        assert!(
            batches <= most,
            "{batches} batches in one second, at most {most}"
        );
        assert!(
            batches >= most / 2,
            "{batches}: the hurry does not wait for the linger"
        );
    }

    #[test]
    fn what_can_never_fit_is_not_queued() {
        let mut o = Outbox::new(LINGER, [7; 32]);
        assert!(o.push(Instant::now(), Vec::new()).is_none());
        assert!(o.push(Instant::now(), vec![0; BATCH_BUDGET + 1]).is_none());
        assert_eq!(o.poll_timeout(), None);
        assert!(o.flush().is_none());
    }
}
