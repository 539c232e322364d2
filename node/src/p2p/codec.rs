//! How node-to-node requests and responses travel on a stream: CBOR, one message per
//! stream, byte for byte what libp2p's stock `cbor` codec writes. Both protocols
//! (`sync` and `peer`) use it, each with its own size limits.
//!
//! The difference is on reading a request. With the stock codec, a request that does
//! not decode fails inside the connection handler before it has an id, and
//! request-response 0.30 reports nothing to the behaviour: it only closes the
//! stream, so a peer could send garbage forever without consequence. Here the bytes
//! of such a request come up as [`Inbound::Malformed`], and the event loop
//! disconnects the peer.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A request as read from a peer.
#[derive(Debug)]
pub enum Inbound<R> {
    Valid(R),
    /// Bytes that are not a request (or are over the size limit); why, for the log.
    Malformed(String),
}

/// CBOR messages of types `Req` and `Resp`, each read up to its own limit.
pub struct CborCodec<Req, Resp> {
    request_max: u64,
    response_max: u64,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    pub fn new(request_max: u64, response_max: u64) -> Self {
        CborCodec {
            request_max,
            response_max,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        CborCodec::new(self.request_max, self.response_max)
    }
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Inbound<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let Some(bytes) = read_at_most(io, self.request_max).await? else {
            return Ok(Inbound::Malformed(format!(
                "request over {} bytes",
                self.request_max
            )));
        };
        Ok(match cbor4ii::serde::from_slice(&bytes) {
            Ok(request) => Inbound::Valid(request),
            Err(e) => Inbound::Malformed(format!("{} bytes: {e}", bytes.len())),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        // An unreadable answer is reported (as an outbound failure) and the event
        // loop disconnects the peer. A stream closed without an answer is only no
        // answer: a peer that dropped the request (busy, or shutting down).
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let max = self.response_max;
        let bytes = read_at_most(io, max)
            .await?
            .ok_or_else(|| bad(format!("response over {max} bytes")))?;
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the stream without answering",
            ));
        }
        cbor4ii::serde::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Inbound<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Inbound::Valid(request) = request else {
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
        response: Resp,
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
    use cirrus_proto::peer::{Request, Response};
    use futures::executor::block_on;
    use request_response::Codec;

    use super::*;
    use crate::p2p::PEER_PROTOCOL;

    const MAX: u64 = 1024;

    fn codec() -> CborCodec<Request, Response> {
        CborCodec::new(MAX, MAX)
    }

    fn read(bytes: &[u8]) -> Inbound<Request> {
        block_on(codec().read_request(&PEER_PROTOCOL, &mut &bytes[..])).unwrap()
    }

    #[test]
    fn requests_round_trip_in_the_stock_cbor_encoding() {
        let mut out = futures::io::Cursor::new(Vec::new());
        let request = Inbound::Valid(Request::Hello);
        block_on(codec().write_request(&PEER_PROTOCOL, &mut out, request)).unwrap();
        let bytes = out.into_inner();
        assert_eq!(
            bytes,
            cbor4ii::serde::to_vec(Vec::new(), &Request::Hello).unwrap()
        );
        assert!(matches!(read(&bytes), Inbound::Valid(Request::Hello)));
    }

    #[test]
    fn garbage_empty_and_oversized_requests_are_malformed_not_io_errors() {
        assert!(matches!(read(b"\xff\x00garbage"), Inbound::Malformed(_)));
        assert!(matches!(read(b""), Inbound::Malformed(_)));
        let huge = vec![0u8; MAX as usize + 1];
        assert!(matches!(read(&huge), Inbound::Malformed(why) if why.contains("over")));
        let mut out = futures::io::Cursor::new(Vec::new());
        let malformed = Inbound::Malformed("x".into());
        assert!(block_on(codec().write_request(&PEER_PROTOCOL, &mut out, malformed)).is_err());
    }

    #[test]
    fn an_unreadable_or_oversized_response_is_an_error() {
        let mut garbage: &[u8] = b"\xff\x00garbage";
        let err = block_on(codec().read_response(&PEER_PROTOCOL, &mut garbage)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let big = cbor4ii::serde::to_vec(Vec::new(), &Response::Refused("x".repeat(2000))).unwrap();
        let err = block_on(codec().read_response(&PEER_PROTOCOL, &mut &big[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
