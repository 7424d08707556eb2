//! What `berth config` and `berth secret` share: the value read from a file or standard input
//! (held in `Zeroizing`, at most 1 MiB, never echoed), the calls that are the same for both
//! (`ops`), and how a `FileInfo` (metadata only, never a value) is shown (`show`).

mod ops;
mod show;

pub(crate) use ops::{Kind, create, list, remove, update, with_configs, with_secrets};
pub(crate) use show::{FileRow, print_details};

use std::fs::File;
use std::io::{IsTerminal as _, Read};
use std::path::PathBuf;

use anyhow::Context as _;
use zeroize::Zeroizing;

/// The largest config or secret value, as the scheduler enforces it
/// (`berth_scheduler::secrets::MAX_VALUE_BYTES`); checked here too so that a file too large
/// is refused before it is sent, naming its size.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// `NAME [--from-file F | -]`: what create and update take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PutArgs {
    /// The name specs use for it (`configs`, `secrets`, `env_from_secret`).
    #[arg(value_parser = parse_name)]
    pub name: String,
    #[command(flatten)]
    pub source: ValueSource,
}

/// A config or secret name argument, checked before anything is read or sent.
pub(crate) fn parse_name(name: &str) -> Result<String, String> {
    crate::cluster::spec::mounts::check_name(name)?;
    Ok(name.to_string())
}

/// Where a value comes from: `--from-file F`, or standard input (`-` or nothing).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ValueSource {
    /// Read the value from FILE (`-`: standard input, as when neither is given).
    #[arg(long, short = 'f', value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// `-`: read the value from standard input.
    #[arg(value_name = "-", conflicts_with = "from_file")]
    stdin: Option<String>,
}

impl ValueSource {
    /// The file to read, or None for standard input.
    fn file(&self) -> anyhow::Result<Option<&PathBuf>> {
        // Not echoed: someone may have typed the secret itself here.
        if self.stdin.as_deref().is_some_and(|s| s != "-") {
            return Err(invalid(
                "unexpected argument after the name: give the value with --from-file FILE, or `-` for standard input (never on the command line)".into(),
            ));
        }
        Ok(self.from_file.as_ref().filter(|p| p.as_os_str() != "-"))
    }

    /// Reads the whole value; more than [`MAX_VALUE_BYTES`] is refused with its size.
    pub(crate) fn read(&self, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        match self.file()? {
            Some(path) => {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let origin = path.display().to_string();
                if usize::try_from(len).map_or(true, |l| l > MAX_VALUE_BYTES) {
                    return Err(invalid(format!(
                        "{what}: {origin} is {len} bytes: {}",
                        too_large()
                    )));
                }
                read_limited(file, &origin, what)
            }
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    return Err(invalid(format!(
                        "{what}: no --from-file and standard input is a terminal: pipe the value in, or pass --from-file FILE"
                    )));
                }
                read_limited(stdin.lock(), "standard input", what)
            }
        }
    }
}

/// Bad input: exit status 2, as a command line clap refuses.
pub(super) fn invalid(message: String) -> anyhow::Error {
    crate::exit::refused(berth_proto::errors::ErrorKind::InvalidArgument, message)
}

fn too_large() -> String {
    format!("a config or secret holds at most {MAX_VALUE_BYTES} bytes (1 MiB)")
}

/// Reads at most one byte more than the limit into a buffer allocated once, so that no
/// reallocation leaves an unwiped copy of a secret behind.
fn read_limited(reader: impl Read, origin: &str, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE_BYTES + 1));
    reader
        .take(u64::try_from(MAX_VALUE_BYTES + 1)?)
        .read_to_end(&mut buf)
        .with_context(|| format!("{what}: reading {origin}"))?;
    if buf.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "{what}: {origin} has more than {MAX_VALUE_BYTES} bytes: {}",
            too_large()
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_limit_are_refused_with_their_size() {
        let exact = vec![b'x'; MAX_VALUE_BYTES];
        let read = read_limited(exact.as_slice(), "stdin", "secret s").unwrap();
        assert_eq!(read.len(), MAX_VALUE_BYTES);
        let over = vec![b'x'; MAX_VALUE_BYTES + 1];
        let e = read_limited(over.as_slice(), "standard input", "secret s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret s") && e.contains("1048576") && e.contains("1 MiB"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, &over).unwrap();
        let source = ValueSource {
            from_file: Some(big.clone()),
            stdin: None,
        };
        let e = crate::chain(&source.read("config c").unwrap_err());
        assert!(
            e.contains(&big.display().to_string()) && e.contains("1048577 bytes"),
            "{e}"
        );
        let kind = crate::exit::kind_of(&source.read("config c").unwrap_err());
        assert_eq!(kind, berth_proto::errors::ErrorKind::InvalidArgument);
        let small = dir.path().join("small");
        std::fs::write(&small, b"k=v\n").unwrap();
        let source = ValueSource {
            from_file: Some(small),
            stdin: None,
        };
        assert_eq!(source.read("config c").unwrap().as_slice(), b"k=v\n");
    }

    #[test]
    fn only_a_dash_may_stand_for_standard_input() {
        let source = ValueSource {
            from_file: None,
            stdin: Some("hunter2-marker".into()),
        };
        let e = crate::chain(&source.read("secret s").unwrap_err());
        assert!(
            e.contains("--from-file") && e.contains("unexpected argument"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the argument is not echoed: {e}");
        let source = ValueSource {
            from_file: Some(PathBuf::from("-")),
            stdin: None,
        };
        assert!(source.file().unwrap().is_none(), "--from-file - is stdin");
    }

    #[test]
    fn a_missing_file_is_named() {
        let source = ValueSource {
            from_file: Some(PathBuf::from("/nonexistent/berth-value")),
            stdin: None,
        };
        let e = crate::chain(&source.read("config c").unwrap_err());
        assert!(e.contains("/nonexistent/berth-value"), "{e}");
    }
}
