//! The storage gateway's client, [`GatewayStore`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;

use super::{
    BATCH_MAX_BYTES, BATCH_MAX_RECORDS, BatchGetRequest, BatchHeader, BatchOp, BatchResult, CopyRequest, ListedObject,
};
use crate::storage::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, PARALLEL_REQUESTS, PutSource, StorageError};

/// Batch requests in flight at once.
const PARALLEL_BATCHES: usize = 4;

/// A request that makes no progress for this long is retried by the caller.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// An upload is answered once stored, so its time grows with its size: it
/// gets [`REQUEST_TIMEOUT`] plus a second per this many bytes.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 1024 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

pub struct GatewayStore {
    base: String,
    token_file: PathBuf,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for GatewayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStore")
            .field("base", &self.base)
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error("the storage gateway URL must start with http:// or https://, not {0:?}")]
    Scheme(String),
    #[error("the storage gateway URL {url:?} is not a URL: {error}")]
    Url { url: String, error: String },
    #[error("no trusted root certificates for an https storage gateway: {0}")]
    Roots(std::io::Error),
}

impl GatewayStore {
    /// `base` is the gateway's URL (`http://cloudcode-storage.cloudcode:8081`);
    /// `token_file` holds the bearer token, re-read on every request.
    pub fn new(base: &str, token_file: &Path) -> Result<Self, GatewayConfigError> {
        let base = base.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(GatewayConfigError::Scheme(base));
        }
        base.parse::<Uri>().map_err(|e| GatewayConfigError::Url {
            url: base.clone(),
            error: e.to_string(),
        })?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // Plain HTTP inside a cluster needs no roots; a runner image may
        // carry none.
        let builder = match builder.with_native_roots() {
            Ok(builder) => builder,
            Err(e) if https => return Err(GatewayConfigError::Roots(e)),
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        // A request answered in several segments must not wait for the
        // peer's delayed ACK: without this, each small object cost ~40 ms.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Self {
            base,
            token_file: token_file.to_path_buf(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        format!("{}/v1/storage/object?key={}", self.base, percent_encode(key.as_str()))
    }

    /// Sends one request; `op` and `key` name it in errors. Every failure is
    /// [`StorageError::Unavailable`] except a missing object: a refused token
    /// is worth retrying too, since the kubelet replaces it.
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: String,
        body: Body,
        content_length: Option<u64>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, StorageError> {
        let unavailable = |message: String| StorageError::Unavailable {
            op,
            key: key.to_string(),
            message,
        };
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| unavailable(format!("reading the token file {}: {e}", self.token_file.display())))?;
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {}", token.trim()));
        if let Some(length) = content_length {
            request = request.header("content-length", length);
        }
        let request = request.body(body).map_err(|e| unavailable(e.to_string()))?;
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(content_length.unwrap_or(0) / SLOWEST_UPLOAD_BYTES_PER_SEC);
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| unavailable(format!("no answer from the storage gateway in {timeout:?}")))?
            .map_err(|e| {
                unavailable(format!(
                    "the storage gateway {} is unreachable: {}",
                    self.base,
                    chain(&e)
                ))
            })?;
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(StorageError::NotFound(key.to_string())),
            status => {
                let body = collect(op, key, response).await.unwrap_or_default();
                let text = String::from_utf8_lossy(&body);
                Err(unavailable(format!(
                    "the storage gateway answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                )))
            }
        }
    }
}

impl GatewayStore {
    /// One `POST /v1/storage/batch`; one result per record.
    async fn batch(&self, records: Vec<(BatchHeader, Bytes)>) -> Vec<Result<(), StorageError>> {
        let fail_all = |records: &[(BatchHeader, Bytes)], e: &StorageError| -> Vec<Result<(), StorageError>> {
            records
                .iter()
                .map(|(h, _)| {
                    Err(StorageError::Unavailable {
                        op: "batch",
                        key: h.key.clone(),
                        message: e.to_string(),
                    })
                })
                .collect()
        };
        let body = super::encode_batch(&records);
        let length = body.len() as u64;
        let url = format!("{}/v1/storage/batch", self.base);
        let answer = match self
            .send("batch", "", Method::POST, url, full(Bytes::from(body)), Some(length))
            .await
        {
            Ok(response) => collect("batch", "", response).await,
            Err(e) => Err(e),
        };
        let results: Vec<BatchResult> = match answer.and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| StorageError::Unavailable {
                op: "batch",
                key: String::new(),
                message: format!("the storage gateway's batch answer is not valid: {e}"),
            })
        }) {
            Ok(results) => results,
            Err(e) => return fail_all(&records, &e),
        };
        if results.len() != records.len() {
            let e = StorageError::Unavailable {
                op: "batch",
                key: String::new(),
                message: format!("{} answers for {} records", results.len(), records.len()),
            };
            return fail_all(&records, &e);
        }
        records
            .iter()
            .zip(results)
            .map(|((header, _), result)| {
                let message = result.message.unwrap_or_default();
                match result.status {
                    200..=299 => Ok(()),
                    404 if header.op == BatchOp::Delete => Ok(()),
                    // Retrying cannot make these succeed.
                    400 | 403 | 413 => Err(StorageError::InvalidKey {
                        key: header.key.clone(),
                        reason: "refused by the storage gateway",
                    }),
                    status => Err(StorageError::Unavailable {
                        op: "batch",
                        key: header.key.clone(),
                        message: format!("the storage gateway answered {status}: {message}"),
                    }),
                }
            })
            .collect()
    }

    /// One `POST /v1/storage/batch-get` for up to [`BATCH_MAX_RECORDS`]
    /// objects, each written to its file; objects too large for a batch are
    /// fetched alone.
    async fn batch_get(&self, items: Vec<(ObjectKey, PathBuf)>) -> Vec<Result<u64, StorageError>> {
        let request = BatchGetRequest {
            keys: items.iter().map(|(k, _)| k.to_string()).collect(),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let length = body.len() as u64;
        let url = format!("{}/v1/storage/batch-get", self.base);
        let answer = match self
            .send(
                "batch-get",
                "",
                Method::POST,
                url,
                full(Bytes::from(body)),
                Some(length),
            )
            .await
        {
            Ok(response) => collect("batch-get", "", response).await,
            Err(e) => Err(e),
        };
        let objects = answer.and_then(|body| {
            super::decode_got(body).map_err(|message| StorageError::Unavailable {
                op: "batch-get",
                key: String::new(),
                message: format!("the storage gateway's answer is not valid: {message}"),
            })
        });
        let objects = match objects {
            Ok(objects) if objects.len() == items.len() => objects,
            Ok(objects) => {
                let message = format!("{} objects for {} keys", objects.len(), items.len());
                return items
                    .iter()
                    .map(|(k, _)| {
                        Err(StorageError::Unavailable {
                            op: "batch-get",
                            key: k.to_string(),
                            message: message.clone(),
                        })
                    })
                    .collect();
            }
            Err(e) => {
                return items
                    .iter()
                    .map(|(k, _)| {
                        Err(StorageError::Unavailable {
                            op: "batch-get",
                            key: k.to_string(),
                            message: e.to_string(),
                        })
                    })
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for ((key, dest), (got, content)) in items.into_iter().zip(objects) {
            out.push(match got.status {
                200 => tokio::fs::write(&dest, &content)
                    .await
                    .map(|()| content.len() as u64)
                    .map_err(|source| StorageError::LocalIo {
                        path: dest.display().to_string(),
                        source,
                    }),
                404 => Err(StorageError::NotFound(key.to_string())),
                413 => self.get_to_file(&key, &dest).await,
                status => Err(StorageError::Unavailable {
                    op: "batch-get",
                    key: key.to_string(),
                    message: format!("the storage gateway answered {status}"),
                }),
            });
        }
        out
    }

    /// Sends records in as few batches as the limits allow, a few at once.
    async fn batches(&self, records: Vec<(BatchHeader, Bytes)>) -> Vec<Result<(), StorageError>> {
        let mut groups: Vec<Vec<(BatchHeader, Bytes)>> = Vec::new();
        let mut bytes = 0u64;
        for record in records {
            let size = record.1.len() as u64 + record.0.key.len() as u64 + 64;
            let full = groups
                .last()
                .is_none_or(|g| g.len() >= BATCH_MAX_RECORDS || bytes + size > BATCH_MAX_BYTES);
            if full {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(group) = groups.last_mut() {
                group.push(record);
            }
        }
        futures_util::stream::iter(groups)
            .map(|group| async move { self.batch(group).await })
            .buffered(PARALLEL_BATCHES)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

async fn collect(
    op: &'static str,
    key: &str,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Bytes, StorageError> {
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect()).await;
    match body {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) => Err(StorageError::Unavailable {
            op,
            key: key.to_string(),
            message: format!("reading the answer: {e}"),
        }),
        Err(_) => Err(StorageError::Unavailable {
            op,
            key: key.to_string(),
            message: "the answer stalled".into(),
        }),
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `/`.
pub fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[async_trait]
impl ObjectStore for GatewayStore {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError> {
        let length = body.len() as u64;
        let url = self.object_url(key);
        self.send("put", key.as_str(), Method::PUT, url, full(body), Some(length))
            .await
            .map(drop)
    }

    async fn put_file(&self, key: &ObjectKey, source: tokio::fs::File) -> Result<(), StorageError> {
        let length = source
            .metadata()
            .await
            .map_err(|e| StorageError::LocalIo {
                path: key.to_string(),
                source: e,
            })?
            .len();
        // Streamed: a 100 MB file never sits in memory.
        let stream = tokio_util::io::ReaderStream::new(source).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(stream));
        let url = self.object_url(key);
        self.send("put", key.as_str(), Method::PUT, url, body, Some(length))
            .await
            .map(drop)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let url = self.object_url(key);
        let response = self
            .send("get", key.as_str(), Method::GET, url, full(Bytes::new()), None)
            .await?;
        collect("get", key.as_str(), response).await
    }

    async fn get_to_file(&self, key: &ObjectKey, dest: &Path) -> Result<u64, StorageError> {
        let url = self.object_url(key);
        let response = self
            .send("get", key.as_str(), Method::GET, url, full(Bytes::new()), None)
            .await?;
        let local = |e| StorageError::LocalIo {
            path: dest.display().to_string(),
            source: e,
        };
        let mut out = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut body = response.into_body();
        let mut written = 0u64;
        loop {
            let frame =
                tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| StorageError::Unavailable {
                        op: "get",
                        key: key.to_string(),
                        message: "the download stalled".into(),
                    })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| StorageError::Unavailable {
                op: "get",
                key: key.to_string(),
                message: format!("reading the download: {e}"),
            })?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await.map_err(local)?;
                written += data.len() as u64;
            }
        }
        out.flush().await.map_err(local)?;
        Ok(written)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let url = self.object_url(key);
        match self
            .send("delete", key.as_str(), Method::DELETE, url, full(Bytes::new()), None)
            .await
        {
            Ok(_) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError> {
        let url = format!(
            "{}/v1/storage/list?prefix={}",
            self.base,
            percent_encode(prefix.as_str())
        );
        let response = self
            .send("list", prefix.as_str(), Method::GET, url, full(Bytes::new()), None)
            .await?;
        let body = collect("list", prefix.as_str(), response).await?;
        let listed: Vec<ListedObject> = serde_json::from_slice(&body).map_err(|e| StorageError::Unavailable {
            op: "list",
            key: prefix.as_str().to_string(),
            message: format!("the storage gateway's listing is not valid: {e}"),
        })?;
        listed
            .into_iter()
            .map(|o| {
                Ok(ObjectMeta {
                    key: ObjectKey::parse(&o.key)?,
                    size: o.size,
                })
            })
            .collect()
    }

    /// Small objects travel many to a request (`POST /v1/storage/batch`);
    /// open files (large ones) stream one per request, several at once.
    async fn put_many(&self, items: Vec<(ObjectKey, PutSource)>) -> Vec<Result<(), StorageError>> {
        let mut small = Vec::new();
        let mut small_at = Vec::new();
        let mut large = Vec::new();
        for (i, (key, source)) in items.into_iter().enumerate() {
            match source {
                PutSource::Bytes(body) if (body.len() as u64) < BATCH_MAX_BYTES / 2 => {
                    small_at.push(i);
                    small.push((
                        BatchHeader {
                            op: BatchOp::Put,
                            key: key.to_string(),
                            size: body.len() as u64,
                        },
                        body,
                    ));
                }
                source => large.push((i, key, source)),
            }
        }
        let total = small.len() + large.len();
        let large_results = futures_util::stream::iter(large)
            .map(|(i, key, source)| async move {
                let result = match source {
                    PutSource::Bytes(body) => self.put(&key, body).await,
                    PutSource::File(file) => self.put_file(&key, tokio::fs::File::from_std(file)).await,
                };
                (i, result)
            })
            .buffered(PARALLEL_REQUESTS)
            .collect::<Vec<_>>();
        let (small_results, large_results) = futures_util::join!(self.batches(small), large_results);
        let mut out: Vec<Option<Result<(), StorageError>>> = (0..total).map(|_| None).collect();
        for (i, result) in small_at.into_iter().zip(small_results) {
            out[i] = Some(result);
        }
        for (i, result) in large_results {
            out[i] = Some(result);
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(StorageError::Unavailable {
                        op: "batch",
                        key: String::new(),
                        message: "no answer".into(),
                    })
                })
            })
            .collect()
    }

    /// A restore fetches small objects many to a request.
    async fn get_many_to_files(&self, items: Vec<(ObjectKey, PathBuf)>) -> Vec<Result<u64, StorageError>> {
        let chunks: Vec<Vec<(ObjectKey, PathBuf)>> = items.chunks(BATCH_MAX_RECORDS / 4).map(<[_]>::to_vec).collect();
        futures_util::stream::iter(chunks)
            .map(|chunk| async move { self.batch_get(chunk).await })
            .buffered(PARALLEL_BATCHES)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        let records = keys
            .into_iter()
            .map(|key| {
                (
                    BatchHeader {
                        op: BatchOp::Delete,
                        key: key.to_string(),
                        size: 0,
                    },
                    Bytes::new(),
                )
            })
            .collect();
        self.batches(records).await
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError> {
        let body = serde_json::to_vec(&CopyRequest {
            from: from.to_string(),
            to: to.to_string(),
        })
        .map_err(|e| StorageError::Unavailable {
            op: "copy",
            key: from.to_string(),
            message: e.to_string(),
        })?;
        let url = format!("{}/v1/storage/copy", self.base);
        let length = body.len() as u64;
        self.send(
            "copy",
            from.as_str(),
            Method::POST,
            url,
            full(Bytes::from(body)),
            Some(length),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_whole() {
        assert_eq!(
            percent_encode("code/p/a b/ü?&=#%"),
            "code/p/a%20b/%C3%BC%3F%26%3D%23%25"
        );
    }

    #[test]
    fn a_url_without_scheme_is_refused() {
        let file = Path::new("/nonexistent");
        assert!(matches!(
            GatewayStore::new("storage:8081", file),
            Err(GatewayConfigError::Scheme(_))
        ));
        assert!(GatewayStore::new("http://storage:8081/", file).is_ok());
    }
}
