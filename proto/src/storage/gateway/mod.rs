//! The storage gateway: object storage reached through the control plane's
//! storage gateway, for runners that must hold no storage credentials of
//! their own (see "Storage gateway" in `PROTOCOL.md`).
//!
//! Every request carries a bearer token read from a file at the moment of
//! the request: on Kubernetes that file is a projected service-account token
//! the kubelet rotates, so a long-lived runner never holds a stale one. The
//! gateway maps the token to one project and refuses every key outside that
//! project's prefix, so what this store holds grants nothing beyond it.
//!
//! The wire format (HTTP, every request with `Authorization: Bearer`):
//! - `PUT /v1/storage/object?key=K` with the bytes and a `Content-Length`;
//! - `GET /v1/storage/object?key=K`: the bytes, or 404;
//! - `DELETE /v1/storage/object?key=K`: 204, also when there was none;
//! - `GET /v1/storage/list?prefix=P`: a JSON array of [`ListedObject`];
//! - `POST /v1/storage/copy` with a JSON [`CopyRequest`];
//! - `POST /v1/storage/batch`: many small puts and deletes in one request
//!   (see [`BatchHeader`]), answered with one [`BatchResult`] per record
//!   once every put of it is durable;
//! - `POST /v1/storage/batch-get` with a JSON [`BatchGetRequest`]: many
//!   small objects in one answer, each a [`BatchGot`] line then its bytes.
//!
//! 401 is a missing or refused token, 403 a key outside the token's
//! project, 413 an object over the gateway's limit, 429 too many refused
//! tokens from one caller, 503 storage down.

#[cfg(feature = "gateway")]
mod client;
#[cfg(feature = "gateway")]
pub use client::{GatewayConfigError, GatewayStore, percent_encode};

/// One object as the gateway lists it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// The body of `POST /v1/storage/copy`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CopyRequest {
    pub from: String,
    pub to: String,
}

/// Most records one `POST /v1/storage/batch` may carry.
pub const BATCH_MAX_RECORDS: usize = 1000;
/// Largest body of one `POST /v1/storage/batch`.
pub const BATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What a batch record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOp {
    Put,
    Delete,
}

/// One record of a batch body: this header as one line of JSON ending in
/// `\n`, then (for a put) exactly `size` bytes of content, then the next
/// record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchHeader {
    pub op: BatchOp,
    pub key: String,
    #[serde(default)]
    pub size: u64,
}

/// The answer for one record, in the records' order: `status` is what the
/// single request would have answered (204, 400, 403, 413, 503).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchResult {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Objects larger than this are not sent in a `batch-get` answer (413 for
/// that key): the caller fetches them alone, streamed.
pub const BATCH_GET_MAX_OBJECT: u64 = 1024 * 1024;

/// The body of `POST /v1/storage/batch-get`: at most [`BATCH_MAX_RECORDS`]
/// keys.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchGetRequest {
    pub keys: Vec<String>,
}

/// One object of a `batch-get` answer, as a line of JSON followed by
/// `size` bytes (none unless `status` is 200).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchGot {
    pub key: String,
    pub status: u16,
    #[serde(default)]
    pub size: u64,
}

/// Encodes a `batch-get` answer.
pub fn encode_got(objects: &[(BatchGot, bytes::Bytes)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(objects.iter().map(|(h, b)| h.key.len() + b.len() + 48).sum());
    for (header, content) in objects {
        body.extend(serde_json::to_vec(header).unwrap_or_default());
        body.push(b'\n');
        body.extend_from_slice(content);
    }
    body
}

/// Splits a `batch-get` answer into its objects.
pub fn decode_got(mut body: bytes::Bytes) -> Result<Vec<(BatchGot, bytes::Bytes)>, String> {
    let mut objects = Vec::new();
    while !body.is_empty() {
        let end = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an object header without its newline")?;
        let header: BatchGot =
            serde_json::from_slice(&body[..end]).map_err(|e| format!("object {}: {e}", objects.len()))?;
        let _ = body.split_to(end + 1);
        if header.size > body.len() as u64 {
            return Err(format!(
                "object {}: {} bytes announced, {} left",
                objects.len(),
                header.size,
                body.len()
            ));
        }
        let content = body.split_to(header.size as usize);
        objects.push((header, content));
    }
    Ok(objects)
}

/// Encodes records as a batch body.
pub fn encode_batch(records: &[(BatchHeader, bytes::Bytes)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.iter().map(|(h, b)| h.key.len() + b.len() + 48).sum());
    for (header, content) in records {
        // Serialising our own type cannot fail.
        body.extend(serde_json::to_vec(header).unwrap_or_default());
        body.push(b'\n');
        body.extend_from_slice(content);
    }
    body
}

/// Splits a batch body into its records, or says why it is malformed.
pub fn decode_batch(mut body: bytes::Bytes) -> Result<Vec<(BatchHeader, bytes::Bytes)>, String> {
    let mut records = Vec::new();
    while !body.is_empty() {
        if records.len() == BATCH_MAX_RECORDS {
            return Err(format!("more than {BATCH_MAX_RECORDS} records"));
        }
        let end = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a record header without its newline")?;
        let header: BatchHeader =
            serde_json::from_slice(&body[..end]).map_err(|e| format!("record {}: {e}", records.len()))?;
        let _ = body.split_to(end + 1);
        let size = if header.op == BatchOp::Put { header.size } else { 0 };
        if size > body.len() as u64 {
            return Err(format!(
                "record {}: {size} bytes announced, {} left",
                records.len(),
                body.len()
            ));
        }
        let content = body.split_to(size as usize);
        records.push((header, content));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let records = vec![
            (
                BatchHeader {
                    op: BatchOp::Put,
                    key: "code/a/x\n y".into(),
                    size: 3,
                },
                bytes::Bytes::from_static(b"a\nb"),
            ),
            (
                BatchHeader {
                    op: BatchOp::Delete,
                    key: "code/a/z".into(),
                    size: 0,
                },
                bytes::Bytes::new(),
            ),
        ];
        let decoded = decode_batch(encode_batch(&records).into()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].0.key, "code/a/x\n y");
        assert_eq!(&decoded[0].1[..], b"a\nb");
        assert_eq!(decoded[1].0.op, BatchOp::Delete);
        assert!(
            decode_batch(bytes::Bytes::from_static(
                b"{\"op\":\"put\",\"key\":\"k\",\"size\":9}\nab"
            ))
            .is_err()
        );
    }
}
