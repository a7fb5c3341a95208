//! Object storage in any S3-compatible service (AWS, MinIO, R2, garage,
//! s3s-fs...). Objects of 16 MiB and more are uploaded in 8 MiB parts, so
//! neither side holds a large file in memory; a failed multipart upload is
//! aborted so no parts are left billed.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, ObjectStream, StorageError};

const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Keys one `DeleteObjects` request may name.
const DELETE_BATCH: usize = 1000;

/// Where and how to reach the service.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Custom endpoint (`http://127.0.0.1:8014`); AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`; most
    /// self-hosted services need it.
    pub path_style: bool,
    /// Explicit credentials; the AWS default chain (environment, profile,
    /// instance role) when absent.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// The S3 settings as command-line flags (each also a `CLOUDCODE_S3_*`
/// variable), shared by every binary that can use S3.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Args {
    #[arg(long, env = "CLOUDCODE_S3_BUCKET", required_if_eq("storage", "s3"))]
    pub s3_bucket: Option<String>,
    /// Custom S3 endpoint (MinIO, R2, garage...); AWS when absent.
    #[arg(long, env = "CLOUDCODE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "CLOUDCODE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    #[arg(long, env = "CLOUDCODE_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Credentials; the AWS default chain when absent. A runner's must be
    /// scoped to its project (proto/PROTOCOL.md, "Threat model").
    #[arg(long, env = "CLOUDCODE_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "CLOUDCODE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    #[arg(long, env = "CLOUDCODE_S3_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
}

#[cfg(feature = "cli")]
impl S3Args {
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: self.s3_bucket.clone().unwrap_or_default(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            session_token: self.s3_session_token.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    pub async fn connect(config: S3Config) -> Result<Self, StorageError> {
        if config.bucket.is_empty() {
            return Err(StorageError::InvalidKey {
                key: String::new(),
                reason: "no S3 bucket configured",
            });
        }
        let region = Region::new(config.region.clone().unwrap_or_else(|| "us-east-1".to_owned()));
        let mut builder = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(Credentials::new(
                    id,
                    secret,
                    config.session_token.clone(),
                    None,
                    "cloudcode",
                )),
            _ => {
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(region.clone())
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        builder = builder.region(region).force_path_style(config.path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
        })
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(service_error("create bucket", &self.bucket, e)),
        }
    }

    async fn put_multipart(&self, key: &ObjectKey, source: tokio::fs::File) -> Result<(), StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| service_error("multipart start", key.as_str(), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(key, source, &upload_id).await;
        if result.is_err() {
            // Best effort: an upload left open only costs storage until the
            // bucket's lifecycle rule removes it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        mut file: tokio::fs::File,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let local = |e| StorageError::LocalIo {
            path: key.to_string(),
            source: e,
        };
        let mut parts = Vec::new();
        for part_number in 1.. {
            let mut buf = Vec::with_capacity(PART_SIZE);
            (&mut file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(local)?;
            if buf.is_empty() && part_number > 1 {
                break;
            }
            let last = buf.len() < PART_SIZE;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .part_number(part_number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| service_error("multipart upload", key.as_str(), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            if last {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| service_error("multipart complete", key.as_str(), e))?;
        Ok(())
    }

    async fn delete_chunk(&self, chunk: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        let fail_all = |chunk: &[ObjectKey], message: String| {
            chunk
                .iter()
                .map(|key| {
                    Err(StorageError::Unavailable {
                        op: "delete",
                        key: key.to_string(),
                        message: message.clone(),
                    })
                })
                .collect()
        };
        let objects: Result<Vec<ObjectIdentifier>, _> = chunk
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key.as_str()).build())
            .collect();
        let delete = objects.and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build());
        let delete = match delete {
            Ok(delete) => delete,
            Err(e) => return fail_all(&chunk, e.to_string()),
        };
        match self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
        {
            Ok(out) => {
                // Quiet mode lists only the failures.
                let failed: std::collections::HashMap<&str, String> = out
                    .errors()
                    .iter()
                    .filter(|e| !matches!(e.code(), Some("NoSuchKey")))
                    .filter_map(|e| Some((e.key()?, e.message().unwrap_or("failed").to_owned())))
                    .collect();
                chunk
                    .iter()
                    .map(|key| match failed.get(key.as_str()) {
                        Some(message) => Err(StorageError::Unavailable {
                            op: "delete",
                            key: key.to_string(),
                            message: message.clone(),
                        }),
                        None => Ok(()),
                    })
                    .collect()
            }
            Err(e) => fail_all(&chunk, DisplayErrorContext(&e).to_string()),
        }
    }

    /// The object, its body not yet read.
    async fn fetch(&self, key: &ObjectKey) -> Result<GetObjectOutput, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(out),
            Err(e) if is_not_found(&e) => Err(StorageError::NotFound(key.to_string())),
            Err(e) => Err(service_error("get", key.as_str(), e)),
        }
    }
}

fn is_not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool
where
    R: std::fmt::Debug,
{
    if matches!(e.code(), Some("NoSuchKey" | "NotFound")) {
        return true;
    }
    matches!(e, SdkError::ServiceError(se) if format!("{:?}", se.raw()).contains("status: StatusCode(404)"))
}

fn service_error<E>(op: &'static str, key: &str, e: E) -> StorageError
where
    E: std::error::Error,
{
    StorageError::Unavailable {
        op,
        key: key.to_owned(),
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Percent-encodes a copy source; `/` stays as the separator.
fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for byte in bucket.bytes().chain(std::iter::once(b'/')).chain(key.bytes()) {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| service_error("put", key.as_str(), e))?;
        Ok(())
    }

    async fn put_file(&self, key: &ObjectKey, mut source: tokio::fs::File) -> Result<(), StorageError> {
        let local = |e| StorageError::LocalIo {
            path: key.to_string(),
            source: e,
        };
        let size = source.metadata().await.map_err(local)?.len();
        if size >= MULTIPART_THRESHOLD {
            return self.put_multipart(key, source).await;
        }
        let mut body = Vec::with_capacity(size as usize);
        source.read_to_end(&mut body).await.map_err(local)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| service_error("put", key.as_str(), e))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let body = self.fetch(key).await?.body;
        let data = body
            .collect()
            .await
            .map_err(|e| service_error("get body", key.as_str(), e))?;
        Ok(data.into_bytes())
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ObjectStream, StorageError> {
        let out = self.fetch(key).await?;
        let size = out.content_length.and_then(|n| u64::try_from(n).ok());
        let key = key.clone();
        // try_unfold ends the stream after its first error.
        let chunks = futures_util::stream::try_unfold(out.body, move |mut body| {
            let key = key.clone();
            async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, body))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(service_error("get body", key.as_str(), e)),
                }
            }
        });
        Ok(ObjectStream {
            size,
            body: Box::pin(chunks),
        })
    }

    async fn get_to_file(&self, key: &ObjectKey, dest: &Path) -> Result<u64, StorageError> {
        let mut body = self.fetch(key).await?.body;
        let local = |e| StorageError::LocalIo {
            path: dest.display().to_string(),
            source: e,
        };
        let mut out = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut written = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| service_error("get body", key.as_str(), e))?
        {
            out.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(local)?;
        Ok(written)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(service_error("delete", key.as_str(), e)),
        }
    }

    /// `DeleteObjects`, 1000 keys per request, a few requests at once.
    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        use futures_util::StreamExt;
        let chunks: Vec<Vec<ObjectKey>> = keys.chunks(DELETE_BATCH).map(<[_]>::to_vec).collect();
        let results: Vec<Vec<Result<(), StorageError>>> = futures_util::stream::iter(chunks)
            .map(|chunk| async move { self.delete_chunk(chunk).await })
            .buffered(4)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix.as_str())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| service_error("list", prefix.as_str(), e))?;
            for object in page.contents() {
                let Some(raw) = object.key() else { continue };
                // Keys written by other tools may break our rules; they are
                // not ours to serve.
                if let Ok(key) = ObjectKey::parse(raw) {
                    out.push(ObjectMeta {
                        key,
                        size: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError> {
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to.as_str())
            .copy_source(encode_copy_source(&self.bucket, from.as_str()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(StorageError::NotFound(from.to_string())),
            Err(e) => Err(service_error("copy", from.as_str(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_encoded() {
        assert_eq!(
            encode_copy_source("b", "code/a b/ü#?.txt"),
            "b/code/a%20b/%C3%BC%23%3F.txt"
        );
    }
}
