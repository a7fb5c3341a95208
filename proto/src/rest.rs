//! The control plane's HTTP API as its clients see it (the TUI, the browser
//! IDE, scripts): request and answer bodies, and the language catalogue the
//! server makes projects from and the clients run them with.
//!
//! The server builds its answers from these types and the clients parse
//! them with the same types (the browser's are generated from them), so a
//! field renamed here is renamed everywhere.

use serde::{Deserialize, Serialize};

/// The languages a project can be made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum Language {
    #[serde(rename = "node-js")]
    NodeJs,
    #[serde(rename = "python")]
    Python,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::NodeJs, Language::Python];

    /// Accepts the catalogue's names and the seed's spellings.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "node-js" | "nodejs" | "node" => Some(Language::NodeJs),
            "python" => Some(Language::Python),
            _ => None,
        }
    }

    /// The name on the wire and in storage.
    pub const fn name(self) -> &'static str {
        match self {
            Language::NodeJs => "node-js",
            Language::Python => "python",
        }
    }

    /// What a person reads in a picker.
    pub fn label(self) -> &'static str {
        match self {
            Language::NodeJs => "Node.js",
            Language::Python => "Python",
        }
    }

    /// The program and arguments that run a project of this language, in a
    /// terminal of its own (the TUI's F5, the browser's Run button).
    pub fn run_command(self) -> &'static [&'static str] {
        match self {
            Language::NodeJs => &["npm", "start"],
            Language::Python => &["python3", "main.py"],
        }
    }

    /// The file a client opens first in a new project.
    pub fn entry_file(self) -> &'static str {
        match self {
            Language::NodeJs => "index.js",
            Language::Python => "main.py",
        }
    }
}

/// A project as stored by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProjectRecord {
    pub id: String,
    pub language: Language,
    /// Milliseconds since the Unix epoch.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub created_ms: u64,
}

/// Where a project's sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SandboxPhase {
    Running,
    Starting,
    Stopping,
    Stopped,
    Failed,
}

/// A project with the state of its sandbox: what `GET /api/projects` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProjectSummary {
    pub id: String,
    pub language: Language,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub created_ms: u64,
    pub state: SandboxPhase,
    /// Why the sandbox failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub detail: Option<String>,
}

/// A sandbox's state, with why it failed when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SandboxStatus {
    pub state: SandboxPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub detail: Option<String>,
}

/// `GET /api/projects/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProjectDetail {
    pub project: ProjectRecord,
    pub sandbox: SandboxStatus,
}

/// The `service` a cloudcode server names in [`ApiIndex`].
pub const SERVICE: &str = "cloudcode-server";

/// `GET /api`: what a client checks it reached a cloudcode server with a
/// good token, and where things are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ApiIndex {
    /// [`SERVICE`].
    pub service: String,
    pub version: String,
    pub projects: Vec<String>,
    /// Endpoint name to how it is called, for people.
    pub api: std::collections::BTreeMap<String, String>,
    pub ide_domain: String,
    pub preview_domain: String,
}

/// What the seed's `POST /project` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SeedCreated {
    #[serde(rename = "replId")]
    pub repl_id: String,
    pub language: Language,
}

/// `GET /api/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProjectList {
    pub projects: Vec<ProjectSummary>,
}

/// `POST /api/projects`. The language is checked by the server, which
/// names the accepted ones in its refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CreateProject {
    pub id: String,
    pub language: String,
}

/// `GET /api/projects/{id}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProjectStatus {
    #[serde(rename = "replId")]
    pub repl_id: String,
    pub state: SandboxPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub detail: Option<String>,
}

/// What `start` answers: where the runner and the preview are, and a token
/// for the runner (the seed's camelCase names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StartedProject {
    pub repl_id: String,
    pub ide_url: String,
    pub ws_url: String,
    pub preview_url: String,
    pub token: String,
    /// Unix seconds.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub token_expires: u64,
}

/// Every refusal of the API: a stable `code` to branch on and a sentence for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

/// `GET /api/session`: the browser is logged in; state-changing calls made
/// with its cookie must carry `csrf` in the [`CSRF_HEADER`] header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SessionInfo {
    pub csrf: String,
}

/// The header that proves a cookie-authenticated request came from the
/// IDE's own page (a form or another site cannot set it).
pub const CSRF_HEADER: &str = "x-cloudcode-csrf";

/// A runner's `GET /v1/health` (with the project token): what the
/// orchestrator's readiness check and idle reaper read. A runner answers
/// only once its workspace is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerHealth {
    pub project: String,
    pub protocol: u32,
    pub terminals: u64,
    /// WebSocket clients connected now.
    pub clients: u64,
    /// Seconds since the last request or terminal output.
    pub idle_secs: u64,
    pub storage: crate::message::StorageStatus,
}

/// The catalogue as the browser reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LanguageInfo {
    pub id: Language,
    pub label: &'static str,
    pub run: Vec<&'static str>,
    pub entry: &'static str,
}

impl Language {
    pub fn info(self) -> LanguageInfo {
        LanguageInfo {
            id: self,
            label: self.label(),
            run: self.run_command().to_vec(),
            entry: self.entry_file(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_health_wire_shape() {
        let health = RunnerHealth {
            project: "demo".into(),
            protocol: 1,
            terminals: 2,
            clients: 0,
            idle_secs: 75,
            storage: crate::message::StorageStatus {
                healthy: true,
                ..Default::default()
            },
        };
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["project"], "demo");
        assert_eq!(json["protocol"], 1);
        assert_eq!(json["terminals"], 2);
        assert_eq!(json["clients"], 0);
        assert_eq!(json["idle_secs"], 75);
        assert_eq!(json["storage"]["healthy"], true);
        assert_eq!(serde_json::from_value::<RunnerHealth>(json).unwrap(), health);
    }

    #[test]
    fn wire_names_are_the_seeds() {
        assert_eq!(serde_json::to_string(&Language::NodeJs).unwrap(), r#""node-js""#);
        for language in Language::ALL {
            assert_eq!(Language::parse(language.name()), Some(language));
        }
        let started = StartedProject {
            repl_id: "a1b".into(),
            ide_url: "i".into(),
            ws_url: "w".into(),
            preview_url: "p".into(),
            token: "t".into(),
            token_expires: 9,
        };
        assert_eq!(
            serde_json::to_string(&started).unwrap(),
            r#"{"replId":"a1b","ideUrl":"i","wsUrl":"w","previewUrl":"p","token":"t","tokenExpires":9}"#
        );
        let summary = ProjectSummary {
            id: "a1b".into(),
            language: Language::Python,
            created_ms: 5,
            state: SandboxPhase::Stopped,
            detail: None,
        };
        assert_eq!(
            serde_json::to_string(&summary).unwrap(),
            r#"{"id":"a1b","language":"python","created_ms":5,"state":"stopped"}"#
        );
    }
}
