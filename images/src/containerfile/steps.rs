//! A stage's state while it builds, and the steps that change only its config or its ARGs
//! (ENV, ARG, LABEL, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Config, Descriptor, ImageConfiguration};

use super::error::{ContainerfileError, Result};
use super::parse::StepKind;
use super::words;
use crate::build::BuildOptions;
use crate::build::config::apply_settings;
use crate::reference::Reference;

/// Where a stage stands after its steps so far.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
    /// The key of the last step (the parent of the next).
    pub key: String,
    /// The ARGs this stage declared, with their values.
    pub args: BTreeMap<String, String>,
}

impl StageState {
    /// A variable for expansion: the image's ENV first, then the stage's ARGs.
    pub(crate) fn lookup(&self, name: &str) -> Option<String> {
        let env = self.config.config().as_ref().and_then(|c| c.env().clone());
        env.unwrap_or_default()
            .iter()
            .find_map(|entry| {
                entry
                    .split_once('=')
                    .filter(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            })
            .or_else(|| self.args.get(name).cloned())
    }

    /// The working directory steps resolve relative paths against.
    pub(crate) fn workdir(&self) -> String {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
}

/// `path` made absolute against `workdir` and cleaned; a trailing `/` is kept.
pub(crate) fn in_workdir(workdir: &str, path: &str) -> String {
    let mut clean = PathBuf::from("/");
    for part in Path::new(workdir).join(path).components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    let mut out = clean.to_string_lossy().into_owned();
    if path.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// What a metadata step contributes to the cache key and to the image's history.
#[derive(Debug)]
pub(crate) struct Applied {
    pub key_text: String,
    /// `None` for ARG: its value may be private and it changes no config.
    pub history: Option<String>,
}

/// The build-wide values a step can read.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    pub build_args: &'a BTreeMap<String, String>,
    /// ARGs declared before the first FROM, with their values.
    pub globals: &'a BTreeMap<String, String>,
    pub tag: &'a Reference,
}

/// Applies a step other than COPY/ADD to `state`.
pub(crate) fn apply(
    state: &mut StageState,
    kind: &StepKind,
    line: usize,
    scope: &Scope<'_>,
) -> Result<Applied> {
    let name = kind.name();
    let bad = |reason: String| ContainerfileError::Instruction {
        line,
        instruction: name.into(),
        reason,
    };
    if let StepKind::Arg(text) = kind {
        return declare_args(state, text, scope).map_err(bad);
    }
    let snapshot = state.clone();
    let vars = |n: &str| snapshot.lookup(n);
    let mut options = BuildOptions::new(PathBuf::new(), scope.tag.clone());
    let mut runtime: Config = state.config.config().clone().unwrap_or_default();
    let text = match kind {
        StepKind::Env(text) => {
            options.env = words::pairs(text, &vars, true).map_err(bad)?;
            pairs_text(&options.env)
        }
        StepKind::Label(text) => {
            options.labels = words::pairs(text, &vars, false).map_err(bad)?;
            pairs_text(&options.labels)
        }
        StepKind::Workdir(path) => {
            let path = words::expand(path, &vars).map_err(bad)?;
            let dir = in_workdir(&state.workdir(), &path);
            options.workdir = Some(dir.clone());
            dir
        }
        StepKind::User(user) => {
            let user = words::expand(user, &vars).map_err(bad)?;
            options.user = Some(user.clone());
            user
        }
        StepKind::Cmd(form) => {
            options.cmd = Some(form.argv());
            format!("{:?}", form.argv())
        }
        StepKind::Entrypoint(form) => {
            options.entrypoint = Some(form.argv());
            format!("{:?}", form.argv())
        }
        StepKind::Expose(ports) => {
            for port in ports {
                let port = words::expand(port, &vars).map_err(bad)?;
                options.exposed_ports.push(port_spec(&port).map_err(bad)?);
            }
            options.exposed_ports.join(" ")
        }
        StepKind::Volume(paths) => {
            let mut volumes = runtime.volumes().clone().unwrap_or_default();
            for path in paths {
                let path = words::expand(path, &vars).map_err(bad)?;
                if !volumes.contains(&path) {
                    volumes.push(path);
                }
            }
            volumes.sort();
            runtime.set_volumes(Some(volumes));
            format!("{paths:?}")
        }
        StepKind::Arg(_) | StepKind::Copy(_) | StepKind::Run(_) => {
            unreachable!("handled by their own functions")
        }
    };
    apply_settings(&mut runtime, &options);
    state.config.set_config(Some(runtime));
    let text = format!("{name} {text}");
    Ok(Applied {
        key_text: text.clone(),
        history: Some(text),
    })
}

fn pairs_text(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `80`, `80/tcp`, `53/udp`: a port number and a protocol (tcp when none is given).
fn port_spec(port: &str) -> std::result::Result<String, String> {
    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if number.parse::<u16>().map_or(true, |n| n == 0)
        || !["tcp", "udp", "sctp"].contains(&proto.as_str())
    {
        return Err(format!("{port:?} is not PORT[/tcp|udp|sctp]"));
    }
    Ok(format!("{number}/{proto}"))
}

/// `ARG NAME[=default] ...`: the value is the --build-arg, else the default, else the value a
/// global ARG of that name has.
pub(crate) fn declare_args(
    state: &mut StageState,
    text: &str,
    scope: &Scope<'_>,
) -> std::result::Result<Applied, String> {
    let snapshot = state.clone();
    let vars = |n: &str| snapshot.lookup(n);
    let mut key_text = String::from("ARG");
    for word in words::split(text, &vars)? {
        let (name, default) = match word.split_once('=') {
            Some((name, default)) => (name.to_string(), Some(default.to_string())),
            None => (word.clone(), None),
        };
        if name.is_empty() {
            return Err(format!("{word:?} names no variable"));
        }
        let value = scope
            .build_args
            .get(&name)
            .cloned()
            .or(default)
            .or_else(|| scope.globals.get(&name).cloned());
        if let Some(value) = value {
            key_text.push_str(&format!(" {name}={value:?}"));
            state.args.insert(name, value);
        }
    }
    Ok(Applied {
        key_text,
        history: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_workdir() {
        assert_eq!(in_workdir("/app", "sub/"), "/app/sub/");
        assert_eq!(in_workdir("/app", "/etc/x"), "/etc/x");
        assert_eq!(in_workdir("/app", "../../x"), "/x");
        assert_eq!(in_workdir("/", "."), "/");
    }

    #[test]
    fn ports_get_a_protocol() {
        assert_eq!(port_spec("80").unwrap(), "80/tcp");
        assert_eq!(port_spec("53/UDP").unwrap(), "53/udp");
        assert!(port_spec("http").is_err());
    }
}
