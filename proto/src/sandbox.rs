//! Where things are inside every sandbox, a local bubblewrap one and a
//! runner pod alike: the paths the server mounts, the runner serves and
//! the runner image (`k8s/runner.Dockerfile`) is built with.

/// The project's files: the terminals' working directory.
pub const WORKSPACE: &str = "/workspace";

/// The sandbox user's home, as its passwd entry says: apart from the
/// workspace, so a shell's own files never land in the project's tree.
pub const HOME: &str = "/home/user";
