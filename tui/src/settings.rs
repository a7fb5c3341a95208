//! Where the TUI finds its server: flags, `CLOUDCODE_*` variables, the
//! config file `tui.env` in the user's config directory, or else a local
//! server on the embedded defaults, found or started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::{ApiClient, ApiError};

/// The same directories `cloudcode-server` uses, so the TUI finds the API
/// token a local server created.
pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "cloudcode", "cloudcode")
}

/// Reads `tui.env` (`CLOUDCODE_NAME=value` lines, see
/// [`cloudcode_proto::envfile`]); a missing file holds no settings.
pub fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(cloudcode_proto::envfile::read(path)?.unwrap_or_default())
}

/// A server the TUI talks to, and how it was found.
pub struct Server {
    pub api: ApiClient,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given by flag, environment or config file.
    Configured,
    /// A local server that was already running.
    FoundLocal,
    /// A local server this TUI started; it keeps running after the TUI
    /// exits, so sandboxes and terminals survive a restart of the client.
    StartedLocal { pid: u32, log: PathBuf },
}

/// Everything needed to find or start the local server.
#[derive(Debug, Clone)]
pub struct LocalServer {
    pub listen: String,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub server_binary: PathBuf,
}

impl LocalServer {
    /// The embedded defaults, honouring the variables `cloudcode-server`
    /// itself reads so both agree.
    pub fn from_env() -> anyhow::Result<Self> {
        let dirs = project_dirs();
        let config_dir = std::env::var_os("CLOUDCODE_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.config_dir().to_path_buf()))
            .context("no config directory: set CLOUDCODE_CONFIG_DIR")?;
        let data_dir = std::env::var_os("CLOUDCODE_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.data_dir().to_path_buf()))
            .context("no data directory: set CLOUDCODE_DATA_DIR")?;
        let listen = std::env::var("CLOUDCODE_SERVER_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
        let server_binary = match std::env::var_os("CLOUDCODE_SERVER_BINARY") {
            Some(path) => PathBuf::from(path),
            None => {
                let sibling = std::env::current_exe()?.with_file_name("cloudcode-server");
                if sibling.exists() {
                    sibling
                } else {
                    PathBuf::from("cloudcode-server")
                }
            }
        };
        Ok(Self {
            listen,
            config_dir,
            data_dir,
            server_binary,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.config_dir.join("api-token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    pub fn pid_file(&self) -> PathBuf {
        self.data_dir.join("server.pid")
    }

    /// Finds a server answering on the local address with the local token,
    /// or starts one and waits until it answers.
    pub async fn find_or_start(&self) -> anyhow::Result<Server> {
        if let Some(token) = self.token() {
            let api = ApiClient::new(&self.url(), &token)?;
            match api.check().await {
                Ok(()) => {
                    return Ok(Server {
                        api,
                        origin: Origin::FoundLocal,
                    });
                }
                Err(ApiError::Unreachable { .. }) => {}
                Err(e) => anyhow::bail!(
                    "something answers on {} but not as the local cloudcode server: {e}",
                    self.listen
                ),
            }
        }
        let pid = self.spawn()?;
        let log = self.data_dir.join("server.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(token) = self.token() {
                let api = ApiClient::new(&self.url(), &token)?;
                if api.check().await.is_ok() {
                    return Ok(Server {
                        api,
                        origin: Origin::StartedLocal { pid, log },
                    });
                }
            }
            if !alive(pid) {
                anyhow::bail!(
                    "the local server exited at start; its log is {}:\n{}",
                    log.display(),
                    tail(&log, 12)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!("the local server did not answer within 30 s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(&self) -> anyhow::Result<u32> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("creating {}", self.data_dir.display()))?;
        let log_path = self.data_dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&self.server_binary);
        command
            .arg("--listen")
            .arg(&self.listen)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own session: the server must not get the terminal's SIGINT or
        // SIGHUP when the user quits the TUI or closes the window.
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.server_binary.display()))?;
        let pid = child.id();
        std::fs::write(self.pid_file(), pid.to_string())?;
        // Not waited for: it outlives this process by design, and init
        // reaps it.
        std::mem::forget(child);
        Ok(pid)
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state says it is gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_name_value_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tui.env");
        std::fs::write(
            &path,
            "# comment\nCLOUDCODE_SERVER_URL = http://x:1\n\nCLOUDCODE_API_TOKEN=abc\n",
        )
        .unwrap();
        let pairs = read_env_file(&path).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("CLOUDCODE_SERVER_URL".to_string(), "http://x:1".to_string()),
                ("CLOUDCODE_API_TOKEN".to_string(), "abc".to_string())
            ]
        );
        std::fs::write(&path, "garbage\n").unwrap();
        let error = read_env_file(&path).unwrap_err().to_string();
        assert!(error.contains("tui.env:1"), "{error}");
        assert!(read_env_file(&dir.path().join("missing")).unwrap().is_empty());
    }
}
