//! The one reader of the chunked client streams (`UploadUpdate`, `SecAggSend`): a header first, within a
//! deadline, then data chunks until the stream ends, each chunk bounded, the whole bounded by what the
//! header announced, and every wait bounded by the round's deadline. What a chunk holds is the caller's
//! business (`on_chunk`); how chunks arrive is checked here, once.

use std::time::Duration;

use bytes::Bytes;
use hearth_proto::v1::{sec_agg_chunk, update_chunk, SecAggChunk, SecAggHeader, UpdateChunk, UpdateHeader};
use hearth_proto::MAX_CHUNK_BYTES;
use tonic::{Status, Streaming};

/// How long a client has to send its header after opening the stream.
pub(crate) const HEADER_WITHIN: Duration = Duration::from_secs(30);

/// One message of a chunked stream: its header or a data chunk.
pub(crate) enum Part<H> {
    Header(H),
    Data(Bytes),
}

/// A chunk type of a header-then-data stream.
pub(crate) trait Chunk: Send + 'static {
    type Header;
    /// What this stream carries, for error messages ("update", "secure-aggregation message").
    const WHAT: &'static str;
    fn into_part(self) -> Option<Part<Self::Header>>;
}

impl Chunk for UpdateChunk {
    type Header = UpdateHeader;
    const WHAT: &'static str = "update";
    fn into_part(self) -> Option<Part<UpdateHeader>> {
        match self.kind? {
            update_chunk::Kind::Header(h) => Some(Part::Header(h)),
            update_chunk::Kind::Data(d) => Some(Part::Data(d)),
        }
    }
}

impl Chunk for SecAggChunk {
    type Header = SecAggHeader;
    const WHAT: &'static str = "secure-aggregation message";
    fn into_part(self) -> Option<Part<SecAggHeader>> {
        match self.kind? {
            sec_agg_chunk::Kind::Header(h) => Some(Part::Header(h)),
            sec_agg_chunk::Kind::Data(d) => Some(Part::Data(d)),
        }
    }
}

/// Why a stream's header could not be read: what to audit, and the status to answer.
#[derive(Debug)]
pub(crate) struct NoHeader {
    pub(crate) detail: &'static str,
    pub(crate) status: Status,
}

/// Reads the header that must open the stream, within [`HEADER_WITHIN`].
pub(crate) async fn read_header<C: Chunk>(stream: &mut Streaming<C>) -> Result<C::Header, NoHeader> {
    let first = tokio::time::timeout(HEADER_WITHIN, stream.message()).await.map_err(|_| NoHeader {
        detail: "no header within 30 s",
        status: Status::deadline_exceeded(format!("no {} header within 30 s", C::WHAT)),
    })?;
    match first {
        Err(status) => Err(NoHeader { detail: "stream failed before its header", status }),
        Ok(first) => match first.and_then(C::into_part) {
            Some(Part::Header(h)) => Ok(h),
            _ => Err(NoHeader {
                detail: "stream did not start with a header",
                status: Status::invalid_argument(format!("a {} stream must start with its header", C::WHAT)),
            }),
        },
    }
}

/// Reads the data chunks that follow the header until the stream ends, handing each to `on_chunk`:
/// every chunk at most [`MAX_CHUNK_BYTES`], at most `len` bytes in all and exactly `len` at the end,
/// every wait before `deadline`. `unit` describes `len` in the errors ("bytes its header announced",
/// "bytes of the model's parameters").
pub(crate) async fn read_body<C: Chunk>(
    stream: &mut Streaming<C>,
    deadline: tokio::time::Instant,
    len: u64,
    unit: &str,
    mut on_chunk: impl FnMut(&[u8]) -> Result<(), Status>,
) -> Result<(), Status> {
    let mut read = 0u64;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message()).await.map_err(|_| {
            Status::deadline_exceeded(format!("the deadline passed in the middle of the {}", C::WHAT))
        })??;
        let Some(msg) = msg else { break };
        let Some(Part::Data(data)) = msg.into_part() else {
            return Err(Status::invalid_argument("only data chunks may follow the header"));
        };
        if data.len() > MAX_CHUNK_BYTES {
            return Err(Status::invalid_argument(format!(
                "chunk of {} bytes is over the limit of {MAX_CHUNK_BYTES}",
                data.len()
            )));
        }
        if read + data.len() as u64 > len {
            return Err(Status::invalid_argument(format!("the {} is longer than the {len} {unit}", C::WHAT)));
        }
        read += data.len() as u64;
        on_chunk(&data)?;
    }
    if read != len {
        return Err(Status::invalid_argument(format!(
            "the {} ended after {read} of the {len} {unit}",
            C::WHAT
        )));
    }
    Ok(())
}
