//! `moat volume create NAME [--quota MiB] | ls [--json] | inspect NAME | rm [-f] NAME`: parsing
//! and printing only; the work is [`crate::store::volumes::Volumes`].

use std::io::Write;
use std::path::Path;

use crate::store::volumes::{VolumeError, VolumeOptions, Volumes};

/// A parsed `moat volume` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeCommand {
    /// `create NAME [--quota MiB]`.
    Create {
        /// The name.
        name: String,
        /// `--quota`, in MiB.
        quota_mib: Option<u64>,
    },
    /// `ls [--json]`.
    List {
        /// `--json`.
        json: bool,
    },
    /// `inspect NAME`.
    Inspect {
        /// The name.
        name: String,
    },
    /// `rm [-f] NAME`.
    Remove {
        /// The name.
        name: String,
        /// `-f`: even when a running sandbox mounts it.
        force: bool,
    },
}

/// Why `moat volume` failed: a usage error (exit 2) or the operation (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum VolumeCliError {
    /// The arguments do not make a command.
    #[error(
        "{0} (usage: moat volume create NAME [--quota MiB] | ls [--json] | inspect NAME | rm [-f] NAME)"
    )]
    Usage(String),
    /// The operation failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Writing the output failed.
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
}

impl VolumeCliError {
    /// The process exit status for it.
    pub fn exit_status(&self) -> u8 {
        match self {
            VolumeCliError::Usage(_) => 2,
            VolumeCliError::Volume(_) | VolumeCliError::Output(_) => 1,
        }
    }
}

/// Parses the arguments after `moat volume`.
pub fn parse(args: &[String]) -> Result<VolumeCommand, VolumeCliError> {
    let usage = |message: String| VolumeCliError::Usage(message);
    let (sub, rest) = args.split_first().ok_or_else(|| usage("no subcommand".to_owned()))?;
    let mut positional = Vec::new();
    let (mut json, mut force, mut quota_mib) = (false, false, None);
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        match (sub.as_str(), arg.as_str()) {
            ("ls", "--json") => json = true,
            ("rm", "-f" | "--force") => force = true,
            ("create", "--quota") => {
                let value = iter.next().ok_or_else(|| usage("--quota needs a value".to_owned()))?;
                let mib = value
                    .parse::<u64>()
                    .map_err(|_| usage(format!("--quota {value:?}: expected a size in MiB")))?;
                quota_mib = Some(mib);
            }
            (_, option) if option.starts_with('-') => {
                return Err(usage(format!("unknown option {option:?}")));
            }
            (_, value) => positional.push(value.to_owned()),
        }
    }
    let one_name = |positional: Vec<String>| match <[String; 1]>::try_from(positional) {
        Ok([name]) => Ok(name),
        Err(v) if v.is_empty() => Err(usage("no volume name given".to_owned())),
        Err(v) => Err(usage(format!("unexpected argument {:?}", v[1]))),
    };
    match sub.as_str() {
        "create" => Ok(VolumeCommand::Create { name: one_name(positional)?, quota_mib }),
        "ls" => match positional.first() {
            None => Ok(VolumeCommand::List { json }),
            Some(extra) => Err(usage(format!("unexpected argument {extra:?}"))),
        },
        "inspect" => Ok(VolumeCommand::Inspect { name: one_name(positional)? }),
        "rm" => Ok(VolumeCommand::Remove { name: one_name(positional)?, force }),
        other => Err(usage(format!("unknown subcommand {other:?}"))),
    }
}

/// Runs `command` against the volumes of the moat home `home`, printing to `out`.
pub fn run(
    home: &Path,
    command: VolumeCommand,
    out: &mut impl Write,
) -> Result<(), VolumeCliError> {
    let volumes = Volumes::new(home);
    match command {
        VolumeCommand::Create { name, quota_mib } => {
            volumes.create(&name, VolumeOptions { quota_mib })?;
            writeln!(out, "{name}")?;
        }
        VolumeCommand::List { json: true } => {
            serde_json::to_writer_pretty(&mut *out, &volumes.list()?)
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        VolumeCommand::List { json: false } => {
            writeln!(out, "{:<24} {:>10}  {:<24}  PATH", "NAME", "QUOTA", "CREATED")?;
            for volume in volumes.list()? {
                let quota = volume.record.quota_mib.map_or("-".to_owned(), |q| format!("{q}MiB"));
                writeln!(
                    out,
                    "{:<24} {:>10}  {:<24}  {}",
                    volume.record.name,
                    quota,
                    volume.record.created_at,
                    volume.path.display()
                )?;
            }
        }
        VolumeCommand::Inspect { name } => {
            serde_json::to_writer_pretty(&mut *out, &volumes.inspect(&name)?)
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        VolumeCommand::Remove { name, force } => volumes.remove(&name, force)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_subcommand_parses() {
        assert_eq!(
            parse(&args("create data --quota 64")).unwrap(),
            VolumeCommand::Create { name: "data".into(), quota_mib: Some(64) }
        );
        assert_eq!(parse(&args("ls --json")).unwrap(), VolumeCommand::List { json: true });
        assert_eq!(parse(&args("inspect d")).unwrap(), VolumeCommand::Inspect { name: "d".into() });
        assert_eq!(
            parse(&args("rm -f d")).unwrap(),
            VolumeCommand::Remove { name: "d".into(), force: true }
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            "",
            "frob",
            "create",
            "create a b",
            "create a --quota",
            "create a --quota x",
            "ls extra",
            "rm",
            "inspect a --json",
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert_eq!(err.exit_status(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn create_then_ls_prints_the_volume() {
        let home = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        run(home.path(), parse(&args("create data")).unwrap(), &mut out).unwrap();
        out.clear();
        run(home.path(), parse(&args("ls --json")).unwrap(), &mut out).unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(listed[0]["name"], "data");
        assert_eq!(listed[0]["quota_mib"], serde_json::Value::Null);
    }
}
