//! Where request paths land on the agent's filesystem.
//!
//! In production the root is `/` and a request path is used exactly as given (absolute paths
//! absolute, relative ones relative to the agent's working directory, as in the reference). Tests
//! root the service in a temporary directory instead: every request path is then taken relative
//! to that directory, and paths the agent reports back (`RealPath`) are shown relative to it with
//! a leading `/`. A non-`/` root is a test convenience, not a jail: `..` and symlinks can leave it.

use std::path::{Path, PathBuf};

/// The sandbox root all request paths are relative to.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    /// The root as configured.
    base: PathBuf,
    /// Its canonical form, to map canonicalized paths back (equal to `base` if that fails).
    canonical: PathBuf,
    /// Whether the root is `/` (request paths used verbatim).
    system: bool,
}

impl Root {
    /// A root at `base`.
    pub(crate) fn new(base: PathBuf) -> Root {
        let system = base == Path::new("/");
        let canonical = std::fs::canonicalize(&base).unwrap_or_else(|_| base.clone());
        Root { base, canonical, system }
    }

    /// The root directory itself (where `/etc/passwd` is read from).
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// The agent-side path of a request path.
    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        if self.system { PathBuf::from(path) } else { self.base.join(path.trim_start_matches('/')) }
    }

    /// A canonical agent-side path as the client should see it. A path outside a non-`/` root
    /// is shown as it is.
    pub(crate) fn display(&self, path: &Path) -> String {
        if self.system {
            return path.to_string_lossy().into_owned();
        }
        match path.strip_prefix(&self.canonical) {
            Ok(inside) => Path::new("/").join(inside).to_string_lossy().into_owned(),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_root_uses_request_paths_verbatim() {
        let root = Root::new(PathBuf::from("/"));
        assert_eq!(root.resolve("/etc/passwd"), PathBuf::from("/etc/passwd"));
        assert_eq!(root.resolve("relative"), PathBuf::from("relative"));
        assert_eq!(root.display(Path::new("/etc")), "/etc");
    }

    #[test]
    fn directory_root_joins_absolute_and_relative_paths() {
        let root = Root::new(PathBuf::from("/nonexistent-root"));
        assert_eq!(root.resolve("/a/b"), PathBuf::from("/nonexistent-root/a/b"));
        assert_eq!(root.resolve("a/b"), PathBuf::from("/nonexistent-root/a/b"));
    }

    #[test]
    fn directory_root_displays_paths_relative_to_itself() {
        let root = Root::new(PathBuf::from("/nonexistent-root"));
        assert_eq!(root.display(Path::new("/nonexistent-root/a")), "/a");
        assert_eq!(root.display(Path::new("/nonexistent-root")), "/");
        assert_eq!(root.display(Path::new("/elsewhere")), "/elsewhere");
    }
}
