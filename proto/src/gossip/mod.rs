//! Records on the gossip topic (`cirrus/records/3`): each message is a batch of
//! records in their canonical bytes, so that the per-message costs of a swarm
//! (a frame, an encryption, a wakeup and a timer per copy to each peer) are paid
//! once for several records. docs/network.md, "Gossip", gives the why.
//!
//! Wire format, all integers big-endian:
//!
//! ```text
//! version: u8 = 1
//! serial:  u64, the sender's own count of its batches (from a random start)
//! count:   u16, 1 ..= MAX_BATCH_RECORDS
//! count times:
//!   len:    u32, 1 ..= MAX_ENCODED_BYTES
//!   record: len bytes, SPEC "Records" canonical encoding
//! ```
//!
//! The serial makes each node's batches distinct messages: gossipsub names a
//! message by the hash of its bytes, and a node that passes on one record alone
//! must not send the very bytes it received, which gossipsub would drop as a
//! message it has seen. Receivers ignore it.
//!
//! The records' lengths add up to at most [`BATCH_BUDGET`]. [`Batch::split`]
//! checks the framing only; each record is decoded (and verified) by whoever
//! wants it, so a copy of a record already held costs a hash, not a decode.
//!
//! - [`Outbox`]: which records go into which batch, and when one is sent.
//! - [`Seen`]: the record ids a node saw lately, so a copy is dropped at once.

mod outbox;
mod seen;

pub use outbox::{HURRY_GAP, LINGER, Outbox};
pub use seen::Seen;

use crate::record::MAX_ENCODED_BYTES;

pub const VERSION: u8 = 1;
/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 64;
/// Most record bytes in one batch: one record of the largest size fits alone.
pub const BATCH_BUDGET: usize = MAX_ENCODED_BYTES;
/// The largest well-formed batch, in bytes.
pub const MAX_BATCH_BYTES: usize = HEADER + 4 * MAX_BATCH_RECORDS + BATCH_BUDGET;
/// Version, serial and count.
const HEADER: usize = 1 + 8 + 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch version {0} is not {VERSION}")]
    Version(u8),
    #[error("batch of {0} records (1 to {MAX_BATCH_RECORDS})")]
    Count(usize),
    #[error("record of {0} bytes in a batch (1 to {MAX_ENCODED_BYTES})")]
    RecordLength(usize),
    #[error("batch records over {BATCH_BUDGET} bytes")]
    Budget,
    #[error("batch ends early")]
    Truncated,
    #[error("bytes after the last record")]
    Trailing,
}

/// A batch's framing.
pub struct Batch;

impl Batch {
    /// The batch of these records (canonical bytes); the caller keeps within the
    /// limits ([`Outbox`] does).
    pub fn encode<'a>(serial: u64, records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 512);
        out.push(VERSION);
        out.extend_from_slice(&serial.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        let mut n: u16 = 0;
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_be_bytes());
            out.extend_from_slice(r);
            n += 1;
        }
        out[HEADER - 2..HEADER].copy_from_slice(&n.to_be_bytes());
        out
    }

    /// The records' bytes, if the framing and every limit hold.
    pub fn split(bytes: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
        let (&version, rest) = bytes.split_first().ok_or(BatchError::Truncated)?;
        if version != VERSION {
            return Err(BatchError::Version(version));
        }
        let (_serial, rest) = take(rest, 8)?;
        let (count, mut rest) = take(rest, 2)?;
        let count = u16::from_be_bytes([count[0], count[1]]) as usize;
        if !(1..=MAX_BATCH_RECORDS).contains(&count) {
            return Err(BatchError::Count(count));
        }
        let (mut out, mut total) = (Vec::with_capacity(count), 0usize);
        for _ in 0..count {
            let (len, after) = take(rest, 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if !(1..=MAX_ENCODED_BYTES).contains(&len) {
                return Err(BatchError::RecordLength(len));
            }
            total += len;
            if total > BATCH_BUDGET {
                return Err(BatchError::Budget);
            }
            let (record, after) = take(after, len)?;
            out.push(record);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(BatchError::Trailing);
        }
        Ok(out)
    }
}

fn take(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), BatchError> {
    if bytes.len() < n {
        return Err(BatchError::Truncated);
    }
    Ok(bytes.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_batch_splits_into_its_records() {
        let records: Vec<Vec<u8>> = vec![vec![1; 10], vec![2; 300], vec![3]];
        let bytes = Batch::encode(7, records.iter().map(Vec::as_slice));
        assert_eq!(bytes.len(), HEADER + 3 * 4 + 311);
        assert_ne!(bytes, Batch::encode(8, records.iter().map(Vec::as_slice)));
        let split = Batch::split(&bytes).unwrap();
        assert_eq!(split, records.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn each_limit_is_an_error() {
        let one = Batch::encode(1, [&[7u8; 5][..]]);
        let mut v = one.clone();
        v[0] = 2;
        assert_eq!(Batch::split(&v), Err(BatchError::Version(2)));
        assert_eq!(Batch::split(&[]), Err(BatchError::Truncated));
        assert_eq!(
            Batch::split(&[VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(BatchError::Count(0))
        );
        let over = Batch::encode(1, vec![&[1u8][..]; MAX_BATCH_RECORDS + 1]);
        assert_eq!(
            Batch::split(&over),
            Err(BatchError::Count(MAX_BATCH_RECORDS + 1))
        );
        assert!(Batch::split(&Batch::encode(1, vec![&[1u8][..]; MAX_BATCH_RECORDS])).is_ok());
        let empty_record = Batch::encode(1, [&[][..]]);
        assert_eq!(
            Batch::split(&empty_record),
            Err(BatchError::RecordLength(0))
        );
        let mut huge = vec![VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        huge.extend_from_slice(&(MAX_ENCODED_BYTES as u32 + 1).to_be_bytes());
        assert_eq!(
            Batch::split(&huge),
            Err(BatchError::RecordLength(MAX_ENCODED_BYTES + 1))
        );
        let big = vec![0u8; MAX_ENCODED_BYTES];
        assert!(Batch::split(&Batch::encode(1, [&big[..]])).is_ok());
        assert_eq!(
            Batch::split(&Batch::encode(1, [&big[..], &[1u8][..]])),
            Err(BatchError::Budget)
        );
        assert_eq!(
            Batch::split(&one[..one.len() - 1]),
            Err(BatchError::Truncated)
        );
        assert_eq!(
            Batch::split(&[&one[..], &[0]].concat()),
            Err(BatchError::Trailing)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_split_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(records) = Batch::split(&bytes) {
                // What splits is exactly what encodes to the same bytes.
                let serial = u64::from_be_bytes(bytes[1..9].try_into().unwrap());
                prop_assert_eq!(Batch::encode(serial, records.iter().copied()), bytes);
            }
        }

        #[test]
        fn encode_then_split_is_the_identity(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..MAX_BATCH_RECORDS)
        ) {
            let bytes = Batch::encode(u64::MAX, records.iter().map(Vec::as_slice));
            prop_assert!(bytes.len() <= MAX_BATCH_BYTES);
            let split = Batch::split(&bytes).unwrap();
            prop_assert_eq!(split, records.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }
}
