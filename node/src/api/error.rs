//! The one place where internal errors become JSON-RPC error objects.

use cirrus_proto::jsonrpc::{
    BEHIND, COOKIE_REQUIRED, ErrorObject, FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS,
    INVALID_RECORD, INVALID_REQUEST, INVALID_SIGNATURE, METHOD_NOT_FOUND, PARSE_ERROR,
    PEER_UNAVAILABLE, PUNCH_TARGET, RATE_LIMITED, STORAGE_UNAVAILABLE, TOO_LARGE,
};
use cirrus_proto::record::RecordError;

use crate::store::writer::WriteError;
use crate::store::{ListError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("method not found: {0}")]
    MethodNotFound(String),
    #[error("invalid params: {0}")]
    Params(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    List(#[from] ListError),
    #[error("admin only: pass the token from <data-dir>/admin.token as `token`")]
    Forbidden,
    #[error(
        "punch only toward your own address: the endpoint's IP is {endpoint}, the request came from {from}"
    )]
    PunchTarget {
        endpoint: std::net::IpAddr,
        from: std::net::IpAddr,
    },
    #[error("peer: {0}")]
    P2p(#[from] crate::p2p::P2pError),
    #[error("too large: {0}")]
    TooLarge(String),
    /// A `relay` or `punch` reached the peer, which refused it or answered nonsense.
    #[error("{0}")]
    Peer(String),
}

impl From<ApiError> for ErrorObject {
    fn from(e: ApiError) -> ErrorObject {
        match e {
            ApiError::MethodNotFound(m) => {
                ErrorObject::new(METHOD_NOT_FOUND, format!("method not found: {m:.64}"))
            }
            ApiError::Params(m) => ErrorObject::new(INVALID_PARAMS, format!("invalid params: {m}")),
            ApiError::List(ListError::Cursor(why)) => ErrorObject::new(
                INVALID_PARAMS,
                format!("invalid params: bad cursor in `after`: {why}"),
            ),
            ApiError::Record(e @ (RecordError::Signature | RecordError::Author)) => {
                ErrorObject::new(INVALID_SIGNATURE, format!("invalid record: {e}"))
            }
            ApiError::Record(e) => ErrorObject::new(INVALID_RECORD, format!("invalid record: {e}")),
            ApiError::Forbidden => ErrorObject::new(FORBIDDEN, e.to_string()),
            ApiError::TooLarge(_) => ErrorObject::new(TOO_LARGE, e.to_string()),
            ApiError::PunchTarget { .. } => ErrorObject::new(PUNCH_TARGET, e.to_string()),
            ApiError::P2p(e) => ErrorObject::new(PEER_UNAVAILABLE, e.to_string()),
            ApiError::Peer(m) => ErrorObject::new(PEER_UNAVAILABLE, m),
            ApiError::Write(e @ (WriteError::Unavailable(_) | WriteError::Failed(_))) => {
                ErrorObject::new(STORAGE_UNAVAILABLE, e.to_string())
            }
            ApiError::Store(e @ crate::store::StoreError::Reopening) => {
                ErrorObject::new(STORAGE_UNAVAILABLE, e.to_string())
            }
            e @ (ApiError::Store(_) | ApiError::Write(_) | ApiError::List(ListError::Store(_))) => {
                tracing::error!(error = %e, "request failed inside the node");
                ErrorObject::new(INTERNAL_ERROR, format!("internal error: {e}"))
            }
        }
    }
}

/// The metrics label of a JSON-RPC error code.
pub fn outcome(code: i64) -> &'static str {
    match code {
        PARSE_ERROR => "parse_error",
        INVALID_REQUEST => "invalid_request",
        METHOD_NOT_FOUND => "method_not_found",
        INVALID_PARAMS => "invalid_params",
        INTERNAL_ERROR => "internal_error",
        INVALID_SIGNATURE => "invalid_signature",
        INVALID_RECORD => "invalid_record",
        TOO_LARGE => "too_large",
        PEER_UNAVAILABLE => "peer_unavailable",
        RATE_LIMITED => "rate_limited",
        FORBIDDEN => "forbidden",
        COOKIE_REQUIRED => "cookie_required",
        BEHIND => "behind",
        PUNCH_TARGET => "punch_target",
        STORAGE_UNAVAILABLE => "storage_unavailable",
        _ => "other_error",
    }
}
