//! What can be wrong with bytes that claim to be STUN, or with an answer.

use super::MAX_MESSAGE;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message: {0}")]
    NotStun(&'static str),
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
    #[error("FINGERPRINT does not match")]
    Fingerprint,
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("answer to another transaction")]
    WrongTransaction,
    #[error("the server answered with error {code}: {reason}")]
    ServerError { code: u16, reason: String },
    #[error("the answer has no mapped address")]
    NoAddress,
}
