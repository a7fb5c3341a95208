//! Binary frames: terminal bytes and file contents, with no base64 and no JSON.
//!
//! Every binary WebSocket message is one frame: a one-byte kind, a fixed
//! big-endian header, then raw payload bytes to the end of the message.
//!
//! | kind | direction | header | payload |
//! |---|---|---|---|
//! | `0x01` term output | runner → client | `u32` term, `u64` seq of the first byte | output bytes |
//! | `0x02` term input | client → runner | `u32` term | input bytes |
//! | `0x03` term snapshot | runner → client | `u32` term, `u64` seq the snapshot is current at | bytes that redraw the screen on a reset emulator |
//! | `0x04` file chunk | both | `u64` transfer (the request id), `u64` offset | file bytes |
//! | `0x05` term ack | client → runner | `u32` term, `u64` seq: every output byte before it is processed | none |

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::TermId;

pub const KIND_TERM_OUTPUT: u8 = 0x01;
pub const KIND_TERM_INPUT: u8 = 0x02;
pub const KIND_TERM_SNAPSHOT: u8 = 0x03;
pub const KIND_FILE_CHUNK: u8 = 0x04;
/// Flow control, for a terminal attached with a `flow_window`: the client
/// has processed every output byte whose seq is below the ack's, and any
/// snapshot current at or before it.
pub const KIND_TERM_ACK: u8 = 0x05;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    TermOutput { term: TermId, seq: u64, data: Bytes },
    TermInput { term: TermId, data: Bytes },
    TermSnapshot { term: TermId, seq: u64, data: Bytes },
    FileChunk { transfer: u64, offset: u64, data: Bytes },
    TermAck { term: TermId, seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty binary frame")]
    Empty,
    #[error("unknown binary frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("binary frame of kind 0x{kind:02x} is shorter than its {header}-byte header")]
    Truncated { kind: u8, header: usize },
    #[error("binary frame of kind 0x{kind:02x} carries no payload, got {len} bytes after its header")]
    UnexpectedPayload { kind: u8, len: usize },
}

impl Frame {
    /// Parses one binary message. `Bytes` slicing keeps the payload
    /// zero-copy.
    pub fn decode(message: Bytes) -> Result<Frame, FrameError> {
        let kind = *message.first().ok_or(FrameError::Empty)?;
        let header = match kind {
            KIND_TERM_OUTPUT | KIND_TERM_SNAPSHOT | KIND_TERM_ACK => 1 + 4 + 8,
            KIND_TERM_INPUT => 1 + 4,
            KIND_FILE_CHUNK => 1 + 8 + 8,
            other => return Err(FrameError::UnknownKind(other)),
        };
        if message.len() < header {
            return Err(FrameError::Truncated { kind, header });
        }
        let u32_at = |i: usize| u32::from_be_bytes([message[i], message[i + 1], message[i + 2], message[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&message[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let data = message.slice(header..);
        Ok(match kind {
            // Strict, so that a future ack with more to say is a new kind
            // rather than a payload old runners silently drop.
            KIND_TERM_ACK if !data.is_empty() => {
                return Err(FrameError::UnexpectedPayload { kind, len: data.len() });
            }
            KIND_TERM_ACK => Frame::TermAck {
                term: u32_at(1),
                seq: u64_at(5),
            },
            KIND_TERM_OUTPUT => Frame::TermOutput {
                term: u32_at(1),
                seq: u64_at(5),
                data,
            },
            KIND_TERM_SNAPSHOT => Frame::TermSnapshot {
                term: u32_at(1),
                seq: u64_at(5),
                data,
            },
            KIND_TERM_INPUT => Frame::TermInput { term: u32_at(1), data },
            _ => Frame::FileChunk {
                transfer: u64_at(1),
                offset: u64_at(9),
                data,
            },
        })
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Frame::TermOutput { term, seq, data } => encode_term(KIND_TERM_OUTPUT, *term, Some(*seq), data),
            Frame::TermSnapshot { term, seq, data } => encode_term(KIND_TERM_SNAPSHOT, *term, Some(*seq), data),
            Frame::TermInput { term, data } => encode_term(KIND_TERM_INPUT, *term, None, data),
            Frame::TermAck { term, seq } => encode_term(KIND_TERM_ACK, *term, Some(*seq), &[]),
            Frame::FileChunk { transfer, offset, data } => {
                let mut out = file_chunk_frame(*transfer, *offset, data.len());
                out.extend_from_slice(data);
                out.freeze()
            }
        }
    }
}

/// Bytes before a file chunk's payload: kind, transfer, offset.
pub const FILE_CHUNK_HEADER: usize = 17;

/// A file-chunk frame's header, in a buffer with room for `capacity` bytes
/// of payload: a sender gathering a chunk from many files appends them
/// straight after it (one copy, where [`Frame::encode`] would be a second).
pub fn file_chunk_frame(transfer: u64, offset: u64, capacity: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(FILE_CHUNK_HEADER + capacity);
    out.put_u8(KIND_FILE_CHUNK);
    out.put_u64(transfer);
    out.put_u64(offset);
    out
}

/// Encodes a terminal frame straight from a borrowed slice, so the runner's
/// output path copies each byte once.
pub fn encode_term_output(term: TermId, seq: u64, data: &[u8]) -> Bytes {
    encode_term(KIND_TERM_OUTPUT, term, Some(seq), data)
}

fn encode_term(kind: u8, term: TermId, seq: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(13 + data.len());
    out.put_u8(kind);
    out.put_u32(term);
    if let Some(seq) = seq {
        out.put_u64(seq);
    }
    out.extend_from_slice(data);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let frames = [
            Frame::TermOutput {
                term: 3,
                seq: u64::MAX - 1,
                data: Bytes::from_static(b"\x1b[31mhi"),
            },
            Frame::TermInput {
                term: 0,
                data: Bytes::from_static(b"ls\r"),
            },
            Frame::TermSnapshot {
                term: 9,
                seq: 42,
                data: Bytes::new(),
            },
            Frame::FileChunk {
                transfer: 77,
                offset: 1 << 40,
                data: Bytes::from(vec![0u8, 255, 10, 13]),
            },
            Frame::TermAck { term: 7, seq: u64::MAX },
        ];
        for frame in frames {
            assert_eq!(Frame::decode(frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn refuses_malformed_frames() {
        assert_eq!(Frame::decode(Bytes::new()), Err(FrameError::Empty));
        assert_eq!(
            Frame::decode(Bytes::from_static(b"\x09abc")),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"\x04\x00\x01")),
            Err(FrameError::Truncated {
                kind: 4,
                header: FILE_CHUNK_HEADER
            })
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"\x05\x00\x00\x00\x01\x00\x00")),
            Err(FrameError::Truncated { kind: 5, header: 13 })
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(
                b"\x05\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02x"
            )),
            Err(FrameError::UnexpectedPayload { kind: 5, len: 1 })
        );
    }

    /// The exact bytes a browser client builds by hand: kind, big-endian
    /// term, big-endian seq, nothing after.
    #[test]
    fn term_ack_wire_shape() {
        let ack = Frame::TermAck {
            term: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
        };
        let wire: &[u8] = b"\x05\x01\x02\x03\x04\x11\x22\x33\x44\x55\x66\x77\x88";
        assert_eq!(ack.encode().as_ref(), wire);
        assert_eq!(Frame::decode(Bytes::from_static(wire)).unwrap(), ack);
    }
}
