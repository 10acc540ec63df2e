//! `moat volume create NAME [--quota MiB] | ls [--json] | inspect NAME | rm [-f] NAME`: parsing
//! and printing only; the work is [`crate::store::volumes::Volumes`].

use std::io::Write;
use std::path::Path;

use crate::store::volumes::{VolumeError, VolumeOptions, Volumes};

/// A parsed `moat volume` command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume.
    Create {
        /// The name.
        name: String,
        /// A size limit in MiB (16 MiB to 1 TiB; root only): an ext4 image loop-mounted.
        #[arg(long = "quota", value_name = "MiB")]
        quota_mib: Option<u64>,
    },
    /// List the volumes.
    #[command(name = "ls")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A volume's path, quota, size and the sandboxes using it, as JSON.
    Inspect {
        /// The name.
        name: String,
    },
    /// Remove a volume that no running sandbox mounts.
    #[command(name = "rm")]
    Remove {
        /// The name.
        name: String,
        /// Even when a running sandbox mounts it.
        #[arg(short, long)]
        force: bool,
    },
}

/// Why `moat volume` failed (exit 1; usage errors are clap's, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VolumeCliError {
    /// The operation failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Writing the output failed.
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
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

    #[derive(Debug, clap::Parser)]
    struct Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    }

    fn parse(line: &str) -> Result<VolumeCommand, clap::Error> {
        use clap::Parser;
        Volume::try_parse_from(std::iter::once("volume").chain(line.split_whitespace()))
            .map(|parsed| parsed.command)
    }

    #[test]
    fn each_subcommand_parses() {
        assert_eq!(
            parse("create data --quota 64").unwrap(),
            VolumeCommand::Create { name: "data".into(), quota_mib: Some(64) }
        );
        assert_eq!(parse("ls --json").unwrap(), VolumeCommand::List { json: true });
        assert_eq!(parse("inspect d").unwrap(), VolumeCommand::Inspect { name: "d".into() });
        assert_eq!(
            parse("rm -f d").unwrap(),
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
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn create_then_ls_prints_the_volume() {
        let home = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        run(home.path(), parse("create data").unwrap(), &mut out).unwrap();
        out.clear();
        run(home.path(), parse("ls --json").unwrap(), &mut out).unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(listed[0]["name"], "data");
        assert_eq!(listed[0]["quota_mib"], serde_json::Value::Null);
    }
}
