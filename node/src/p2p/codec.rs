//! How sync requests and responses travel on a stream: CBOR, one message per stream,
//! byte for byte what libp2p's stock `cbor` codec writes.
//!
//! The difference is on reading a request. With the stock codec, a request that does
//! not decode fails inside the connection handler before it has an id, and
//! request-response 0.30 reports nothing to the behaviour: it only closes the
//! stream, so a peer could send garbage forever without consequence. Here the bytes
//! of such a request come up as [`SyncRequest::Malformed`], and the event loop
//! disconnects the peer.

use std::io;

use cirrus_proto::sync::{Request, Response};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

const REQUEST_MAX: u64 = 16 << 20;
const RESPONSE_MAX: u64 = 32 << 20;

/// A request as read from a peer.
#[derive(Debug)]
pub enum SyncRequest {
    Valid(Request),
    /// Bytes that are not a request (or are over the size limit); why, for the log.
    Malformed(String),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let Some(bytes) = read_at_most(io, REQUEST_MAX).await? else {
            return Ok(SyncRequest::Malformed(format!(
                "request over {REQUEST_MAX} bytes"
            )));
        };
        Ok(match cbor4ii::serde::from_slice(&bytes) {
            Ok(request) => SyncRequest::Valid(request),
            Err(e) => SyncRequest::Malformed(format!("{} bytes: {e}", bytes.len())),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        // An error here is reported (as an outbound failure), and the event loop
        // disconnects the peer.
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let bytes = read_at_most(io, RESPONSE_MAX)
            .await?
            .ok_or_else(|| bad(format!("response over {RESPONSE_MAX} bytes")))?;
        cbor4ii::serde::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let SyncRequest::Valid(request) = request else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a malformed request is never sent",
            ));
        };
        write_cbor(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_cbor(io, &response).await
    }
}

/// Read to the end of the stream; `None` if it holds more than `max` bytes.
async fn read_at_most<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: u64,
) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    io.take(max + 1).read_to_end(&mut bytes).await?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

async fn write_cbor<T, M>(io: &mut T, msg: &M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: serde::Serialize,
{
    let bytes = cbor4ii::serde::to_vec(Vec::new(), msg).map_err(io::Error::other)?;
    io.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use request_response::Codec;

    use super::*;
    use crate::p2p::SYNC_PROTOCOL;

    fn read(bytes: &[u8]) -> SyncRequest {
        block_on(SyncCodec.read_request(&SYNC_PROTOCOL, &mut &bytes[..])).unwrap()
    }

    #[test]
    fn requests_round_trip_in_the_stock_cbor_encoding() {
        let mut out = futures::io::Cursor::new(Vec::new());
        let request = SyncRequest::Valid(Request::Summary);
        block_on(SyncCodec.write_request(&SYNC_PROTOCOL, &mut out, request)).unwrap();
        let bytes = out.into_inner();
        assert_eq!(
            bytes,
            cbor4ii::serde::to_vec(Vec::new(), &Request::Summary).unwrap()
        );
        assert!(matches!(read(&bytes), SyncRequest::Valid(Request::Summary)));
    }

    #[test]
    fn garbage_empty_and_oversized_requests_are_malformed_not_io_errors() {
        assert!(matches!(
            read(b"\xff\x00garbage"),
            SyncRequest::Malformed(_)
        ));
        assert!(matches!(read(b""), SyncRequest::Malformed(_)));
        let huge = vec![0u8; REQUEST_MAX as usize + 1];
        assert!(matches!(read(&huge), SyncRequest::Malformed(why) if why.contains("over")));
        let mut out = futures::io::Cursor::new(Vec::new());
        let malformed = SyncRequest::Malformed("x".into());
        assert!(block_on(SyncCodec.write_request(&SYNC_PROTOCOL, &mut out, malformed)).is_err());
    }

    #[test]
    fn an_unreadable_response_is_an_error() {
        let mut garbage: &[u8] = b"\xff\x00garbage";
        let err = block_on(SyncCodec.read_response(&SYNC_PROTOCOL, &mut garbage)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
