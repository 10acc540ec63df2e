//! Parsing `moat run` arguments. Pure: no I/O, so every rule has a unit test.
//!
//! ```text
//! moat run [-e K=V]... [-w DIR] [--rootfs DIR|host] [--isolation auto|namespace|vm] -- CMD [ARGS...]
//! ```

use std::path::PathBuf;

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A VM when the host can boot one, else the namespace backend with a warning.
    Auto,
    /// The namespace backend.
    Namespace,
    /// A microVM or nothing.
    Vm,
}

/// Where the sandbox's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootSource {
    /// A read-only root assembled from the host's system directories.
    Host,
    /// This directory as the read-only lower layer of a throw-away overlay.
    Dir(PathBuf),
}

/// A parsed `moat run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// `KEY=VALUE` pairs for the command.
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    pub cwd: Option<String>,
    /// The root filesystem.
    pub root: RootSource,
    /// The requested backend.
    pub isolation: Isolation,
    /// The program.
    pub cmd: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Why `moat run`'s arguments are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An option needs a value and has none.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// `-e` without `=`.
    #[error("-e {0:?}: expected KEY=VALUE")]
    BadEnv(String),
    /// An unknown `--isolation` value.
    #[error("--isolation {0:?}: expected auto, namespace or vm")]
    BadIsolation(String),
    /// An option this command does not have.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// No command after the options.
    #[error("no command given (usage: moat run [OPTIONS] -- CMD [ARGS...])")]
    NoCommand,
}

/// Parses the arguments after `run`.
pub fn parse_run(args: &[String]) -> Result<RunArgs, UsageError> {
    let mut parsed = RunArgs {
        env: Vec::new(),
        cwd: None,
        root: RootSource::Host,
        isolation: Isolation::Auto,
        cmd: String::new(),
        args: Vec::new(),
    };
    let mut rest = args.iter();
    let mut command = Vec::new();
    while let Some(arg) = rest.next() {
        let mut value =
            || rest.next().cloned().ok_or_else(|| UsageError::MissingValue(arg.clone()));
        match arg.as_str() {
            "--" => {
                command.extend(rest.by_ref().cloned());
                break;
            }
            "-e" | "--env" => {
                let pair = value()?;
                if !pair.contains('=') || pair.starts_with('=') {
                    return Err(UsageError::BadEnv(pair));
                }
                parsed.env.push(pair);
            }
            "-w" | "--workdir" => parsed.cwd = Some(value()?),
            "--rootfs" => {
                let root = value()?;
                parsed.root =
                    if root == "host" { RootSource::Host } else { RootSource::Dir(root.into()) };
            }
            "--isolation" => {
                parsed.isolation = match value()?.as_str() {
                    "auto" => Isolation::Auto,
                    "namespace" => Isolation::Namespace,
                    "vm" => Isolation::Vm,
                    other => return Err(UsageError::BadIsolation(other.to_owned())),
                };
            }
            other if other.starts_with('-') => {
                return Err(UsageError::UnknownOption(other.to_owned()));
            }
            _ => {
                command.push(arg.clone());
                command.extend(rest.by_ref().cloned());
                break;
            }
        }
    }
    let mut command = command.into_iter();
    parsed.cmd = command.next().ok_or(UsageError::NoCommand)?;
    parsed.args = command.collect();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, UsageError> {
        parse_run(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_host_root_and_auto_isolation() {
        let run = parse(&["--", "echo", "hello"]).unwrap();
        assert_eq!((run.root, run.isolation), (RootSource::Host, Isolation::Auto));
        assert_eq!((run.cmd.as_str(), run.args), ("echo", vec!["hello".to_owned()]));
    }

    #[test]
    fn options_before_the_separator_are_parsed() {
        let run = parse(&[
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "--rootfs",
            "/srv/r",
            "--isolation",
            "namespace",
            "--",
            "sh",
        ])
        .unwrap();
        assert_eq!(run.env, vec!["A=1".to_owned()]);
        assert_eq!(run.cwd.as_deref(), Some("/tmp"));
        assert_eq!(run.root, RootSource::Dir("/srv/r".into()));
        assert_eq!(run.isolation, Isolation::Namespace);
    }

    #[test]
    fn arguments_after_the_command_are_not_options() {
        let run = parse(&["ls", "-l", "--", "-e"]).unwrap();
        assert_eq!(run.args, vec!["-l".to_owned(), "--".to_owned(), "-e".to_owned()]);
    }

    #[test]
    fn missing_command_is_an_error() {
        assert_eq!(parse(&["--"]), Err(UsageError::NoCommand));
    }

    #[test]
    fn env_without_equals_is_refused() {
        assert_eq!(parse(&["-e", "A", "--", "x"]), Err(UsageError::BadEnv("A".into())));
    }

    #[test]
    fn unknown_isolation_is_refused() {
        assert_eq!(
            parse(&["--isolation", "chroot", "--", "x"]),
            Err(UsageError::BadIsolation("chroot".into()))
        );
    }
}
