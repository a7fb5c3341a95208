//! The control plane's HTTP API, as the TUI uses it: list, create, delete,
//! start and stop projects.

use std::time::Duration;

use bytes::Bytes;
use cloudcode_proto::rest::{CreateProject, ProjectList, ProjectSummary};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// No API call the TUI makes should take longer than a sandbox start.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the server at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the server's answer is unreadable: {0}")]
    Unreadable(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
}

/// A project as the TUI shows it, from the API's [`ProjectSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub language: String,
}

impl Project {
    pub fn from_summary(summary: &ProjectSummary) -> Self {
        Self {
            id: summary.id.clone(),
            language: summary.language.name().to_owned(),
        }
    }
}

/// What `start` answers: where the runner and the preview are, and a token
/// for the runner.
pub use cloudcode_proto::rest::StartedProject as Started;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: this may end up in a log.
        f.debug_struct("ApiClient").field("base", &self.base).finish()
    }
}

impl ApiClient {
    /// `base` is the server's URL (`http://127.0.0.1:8080`), `token` its API
    /// token.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "the server URL must start with http:// or https://, not {base:?}"
        );
        base.parse::<Uri>()
            .map_err(|e| anyhow::anyhow!("the server URL {base:?} is not a URL: {e}"))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            base,
            token: token.to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The browser IDE's page for a project, logging the browser in: the
    /// token is in the fragment, which the browser never sends and the
    /// page removes from its history.
    pub fn browser_url(&self, project: &str) -> String {
        format!("{}#token={}", self.browser_url_without_token(project), self.token)
    }

    pub fn browser_url_without_token(&self, project: &str) -> String {
        format!("{}/p/{project}", self.base)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| ApiError::Unreadable(e.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| ApiError::Unreachable {
                url: self.base.clone(),
                detail: error_chain(&e),
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::Unreadable(e.to_string()))?
                .to_bytes();
            Ok::<_, ApiError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ApiError::Timeout(REQUEST_TIMEOUT))??;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| match status.is_success() {
            true => ApiError::Unreadable(String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            false => ApiError::Refused {
                status: status.as_u16(),
                code: String::new(),
                message: format!("{status}"),
            },
        })?;
        if !status.is_success() {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: value["code"].as_str().unwrap_or_default().to_string(),
                message: value["message"].as_str().unwrap_or(status.as_str()).to_string(),
            });
        }
        Ok(value)
    }

    /// Answers whether this is a cloudcode server that accepts the token.
    pub async fn check(&self) -> Result<(), ApiError> {
        let value = self.call(Method::GET, "/api", None).await?;
        match serde_json::from_value::<cloudcode_proto::rest::ApiIndex>(value) {
            Ok(index) if index.service == cloudcode_proto::rest::SERVICE => Ok(()),
            _ => Err(ApiError::Unreadable(format!("{} is not a cloudcode server", self.base))),
        }
    }

    pub async fn list(&self) -> Result<Vec<Project>, ApiError> {
        let value = self.call(Method::GET, "/api/projects", None).await?;
        let list: ProjectList = serde_json::from_value(value).map_err(|e| ApiError::Unreadable(e.to_string()))?;
        Ok(list.projects.iter().map(Project::from_summary).collect())
    }

    pub async fn create(&self, id: &str, language: &str) -> Result<Project, ApiError> {
        let body = CreateProject {
            id: id.to_owned(),
            language: language.to_owned(),
        };
        let body = serde_json::to_value(body).map_err(|e| ApiError::Unreadable(e.to_string()))?;
        let value = self.call(Method::POST, "/api/projects", Some(body)).await?;
        let summary: ProjectSummary = serde_json::from_value(value).map_err(|e| ApiError::Unreadable(e.to_string()))?;
        Ok(Project::from_summary(&summary))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, &format!("/api/projects/{}", path_segment(id)), None)
            .await
            .map(drop)
    }

    pub async fn start(&self, id: &str) -> Result<Started, ApiError> {
        let value = self
            .call(Method::POST, &format!("/api/projects/{}/start", path_segment(id)), None)
            .await?;
        serde_json::from_value(value).map_err(|e| ApiError::Unreadable(e.to_string()))
    }
}

/// Project ids are DNS labels, but what the user typed may not be one yet:
/// never let it add path segments or a query.
fn path_segment(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_add_path_segments() {
        assert_eq!(path_segment("hello-1"), "hello-1");
        assert_eq!(path_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn urls_without_a_scheme_are_refused() {
        assert!(ApiClient::new("localhost:8080", "t").is_err());
        assert!(ApiClient::new("http://localhost:8080/", "t").is_ok());
    }
}
