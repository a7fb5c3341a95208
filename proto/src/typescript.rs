//! The TypeScript declarations of every contract the browser IDE shares
//! with Rust: runner messages, REST bodies and the language catalogue, in
//! one file, `web/src/protocol/generated.ts`. The file is committed; a test
//! fails when it no longer matches these types, and
//! `CLOUDCODE_UPDATE_TS=1 cargo test -p cloudcode-proto --features ts`
//! rewrites it.

use ts_rs::TS;

use crate::{message, rest};

/// The committed file, relative to this crate.
pub const GENERATED_PATH: &str = "../web/src/protocol/generated.ts";

/// Everything the browser needs, in dependency order.
pub fn declarations() -> String {
    let mut out = String::from(
        "// Generated from the Rust types in proto/ (proto/src/typescript.rs): do not edit.\n\
         // Regenerate with: CLOUDCODE_UPDATE_TS=1 cargo test -p cloudcode-proto --features ts\n\n",
    );
    let decls = [
        message::Request::decl(),
        message::Op::decl(),
        message::ServerMessage::decl(),
        message::Reply::decl(),
        message::Event::decl(),
        message::EntryKind::decl(),
        message::Entry::decl(),
        message::BatchedWrite::decl(),
        message::WriteOutcome::decl(),
        message::ChangeKind::decl(),
        message::FsChange::decl(),
        message::TermInfo::decl(),
        message::TermPurpose::decl(),
        message::StorageStatus::decl(),
        message::SkippedChange::decl(),
        message::ErrorCode::decl(),
        rest::Language::decl(),
        rest::ProjectRecord::decl(),
        rest::SandboxPhase::decl(),
        rest::ProjectSummary::decl(),
        rest::ProjectList::decl(),
        rest::CreateProject::decl(),
        rest::ProjectStatus::decl(),
        rest::SandboxStatus::decl(),
        rest::ProjectDetail::decl(),
        rest::ApiIndex::decl(),
        rest::SeedCreated::decl(),
        rest::StartedProject::decl(),
        rest::ApiErrorBody::decl(),
        rest::SessionInfo::decl(),
        rest::LanguageInfo::decl(),
    ];
    for decl in decls {
        out.push_str("export ");
        out.push_str(&decl);
        out.push_str("\n\n");
    }
    out.push_str("export type TermId = number;\n\n");
    out.push_str(&format!(
        "export const PROTOCOL_VERSION = {};\n\n",
        crate::PROTOCOL_VERSION
    ));
    out.push_str(&format!("export const CSRF_HEADER = {:?};\n\n", rest::CSRF_HEADER));
    out.push_str(&format!(
        "export const WRITE_MANY_MAX_FILES = {};\n\nexport const WRITE_MANY_MAX_BYTES = {};\n\n",
        crate::message::WRITE_MANY_MAX_FILES,
        crate::message::WRITE_MANY_MAX_BYTES
    ));
    let catalogue: Vec<rest::LanguageInfo> = rest::Language::ALL.iter().map(|l| l.info()).collect();
    out.push_str(&format!(
        "export const LANGUAGES: readonly LanguageInfo[] = {};\n",
        serde_json::to_string_pretty(&catalogue).unwrap_or_default()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_typescript_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GENERATED_PATH);
        let wanted = declarations();
        if std::env::var_os("CLOUDCODE_UPDATE_TS").is_some() {
            std::fs::write(&path, &wanted).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == wanted,
            "{} is stale: run CLOUDCODE_UPDATE_TS=1 cargo test -p cloudcode-proto --features ts",
            path.display()
        );
    }
}
