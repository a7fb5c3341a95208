//! The server's two secrets, made on first run and kept 0600:
//! - the API token that every control-plane request must present (printed
//!   in the URL the server shows, as Jupyter does);
//! - the Ed25519 key that signs project tokens for runners.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use cloudcode_proto::token::TokenIssuer;

pub struct Credentials {
    pub api_token: String,
    pub issuer: TokenIssuer,
}

impl Credentials {
    /// Loads the secrets from `dir`, creating any that are missing.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // A Kubernetes Secret is mounted read-only: its files' own modes
        // (checked below) protect it then.
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(
                "cannot restrict {} to its owner ({e}); relying on the files' modes",
                dir.display()
            );
        }
        let api_token = load_or_create(&dir.join("api-token"), random_token)?;
        // A placeholder left in a Secret must not become a guessable key.
        anyhow::ensure!(
            api_token.len() >= 32,
            "the API token in {} is shorter than 32 characters: generate one with `openssl rand -hex 32`",
            dir.join("api-token").display()
        );
        let signing = load_or_create(
            &dir.join("signing-key"),
            || Ok(TokenIssuer::generate()?.secret_base64()),
        )?;
        let issuer = TokenIssuer::from_secret_base64(&signing).context("reading the signing key")?;
        Ok(Self { api_token, issuer })
    }
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("system RNG: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn load_or_create(path: &Path, make: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                anyhow::bail!("{} is readable by others (mode {mode:o}); chmod 600 it", path.display());
            }
            return Ok(value.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let value = make()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_kept_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load_or_create(dir.path()).unwrap();
        let again = Credentials::load_or_create(dir.path()).unwrap();
        assert_eq!(first.api_token, again.api_token);
        assert_eq!(
            first.issuer.verifier().public_base64(),
            again.issuer.verifier().public_base64()
        );
        let mode = std::fs::metadata(dir.path().join("api-token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(dir.path().join("api-token"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Credentials::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn a_placeholder_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        std::fs::write(&path, "REPLACE_ME").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let error = Credentials::load_or_create(dir.path()).err().unwrap().to_string();
        assert!(error.contains("openssl rand"), "{error}");
    }
}
