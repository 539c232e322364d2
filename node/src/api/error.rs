//! The one place where internal errors become JSON-RPC error objects.

use cirrus_proto::jsonrpc::{
    ErrorObject, FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS, INVALID_RECORD, INVALID_SIGNATURE,
    METHOD_NOT_FOUND, PEER_UNAVAILABLE,
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
    #[error("admin only: call from loopback or pass the token from <data-dir>/admin.token")]
    Forbidden,
    #[error("peer: {0}")]
    P2p(#[from] crate::p2p::P2pError),
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
            ApiError::P2p(e) => ErrorObject::new(PEER_UNAVAILABLE, e.to_string()),
            ApiError::Peer(m) => ErrorObject::new(PEER_UNAVAILABLE, m),
            e @ (ApiError::Store(_) | ApiError::Write(_) | ApiError::List(ListError::Store(_))) => {
                tracing::error!(error = %e, "request failed inside the node");
                ErrorObject::new(INTERNAL_ERROR, format!("internal error: {e}"))
            }
        }
    }
}
