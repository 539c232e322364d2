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
    #[error("parse error: {0}")]
    Parse(&'static str),
    #[error("rate limited: too many requests from this address")]
    RateLimited,
    /// The node does not hold all of the request's session in time.
    #[error(
        "behind: this node does not hold {missing} of the session's writes yet; try another node"
    )]
    Behind { missing: usize },
}

impl ApiError {
    /// The encoded error response to the request with `id`.
    pub fn response(self, id: serde_json::Value) -> Vec<u8> {
        let e: ErrorObject = self.into();
        serde_json::to_vec(&cirrus_proto::jsonrpc::Response::err(id, e))
            .expect("an error response serializes")
    }

    /// The JSON-RPC error code this error answers with.
    pub fn code(&self) -> i64 {
        match self {
            ApiError::MethodNotFound(_) => METHOD_NOT_FOUND,
            ApiError::Params(_) | ApiError::List(ListError::Cursor(_)) => INVALID_PARAMS,
            ApiError::Record(RecordError::Signature | RecordError::Author) => INVALID_SIGNATURE,
            ApiError::Record(_) => INVALID_RECORD,
            ApiError::Forbidden => FORBIDDEN,
            ApiError::TooLarge(_) => TOO_LARGE,
            ApiError::PunchTarget { .. } => PUNCH_TARGET,
            ApiError::P2p(_) | ApiError::Peer(_) => PEER_UNAVAILABLE,
            ApiError::Write(WriteError::Unavailable(_) | WriteError::Failed(_))
            | ApiError::Store(StoreError::Reopening) => STORAGE_UNAVAILABLE,
            ApiError::Parse(_) => PARSE_ERROR,
            ApiError::RateLimited => RATE_LIMITED,
            ApiError::Behind { .. } => BEHIND,
            ApiError::Store(_) | ApiError::Write(_) | ApiError::List(ListError::Store(_)) => {
                INTERNAL_ERROR
            }
        }
    }
}

impl From<ApiError> for ErrorObject {
    fn from(e: ApiError) -> ErrorObject {
        let code = e.code();
        let data = match &e {
            ApiError::Behind { missing } => Some(serde_json::json!({ "missing": missing })),
            _ => None,
        };
        let message = match e {
            ApiError::MethodNotFound(m) => format!("method not found: {m:.64}"),
            ApiError::Params(m) => format!("invalid params: {m}"),
            ApiError::List(ListError::Cursor(why)) => {
                format!("invalid params: bad cursor in `after`: {why}")
            }
            ApiError::Record(e) => format!("invalid record: {e}"),
            ApiError::Peer(m) => m,
            ApiError::P2p(e) => e.to_string(),
            e if code == INTERNAL_ERROR => {
                tracing::error!(error = %e, "request failed inside the node");
                format!("internal error: {e}")
            }
            e => e.to_string(),
        };
        let mut o = ErrorObject::new(code, message);
        o.data = data;
        o
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
