//! The TOML deployment spec that `berth deploy -f` reads, and its mapping onto the scheduler's
//! `DeploymentSpec`. Every table refuses unknown keys, and every error names the file, the
//! line and the field at fault (`app.toml:4:12: replicas: -1 is negative ...`).
//!
//! ```toml
//! name = "hello"
//! image = "hello:v1"
//! replicas = 3
//! cpu = "250m"
//! memory = "64m"
//! ports = [{ host = 18080, container = 8080 }]
//! service_ports = [{ port = 80, target = 8080, protocol = "tcp", name = "http" }]
//! readiness = { http = 8080, path = "/", period_ms = 500 }
//! [rollout]
//! max_surge = 1
//! approval = "manual"
//! [security]
//! cap_drop = ["ALL"]
//! run_as = "1000:1000"
//! read_only = true
//! ```
//!
//! Volumes, tmpfs, binds, configs and secrets are in [`mounts`].
//!
//! The full model is documented in examples/README.md.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use berth_proto::v1::{
    Approval, DeploymentSpec, ExecCheck, HttpCheck, ImageSource, PortMapping, Probe, Protocol,
    RegistryPull, Resources, RestartPolicy, RolloutSettings, SecurityContext, ServicePort,
    Strategy, TcpCheck, image_source, probe, restart_policy,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub(crate) mod mounts;
use mounts::{BindSpec, ConfigSpec, SecretSpec, TmpfsSpec, VolumeSpec};

/// A deployment spec file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSpec")]
pub(crate) struct SpecFile {
    raw: RawSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "count_opt")]
    replicas: Option<u32>,
    #[serde(default, deserialize_with = "cpu_opt")]
    cpu: Option<u64>,
    #[serde(default, deserialize_with = "memory_opt")]
    memory: Option<u64>,
    #[serde(default)]
    ports: Vec<Port>,
    #[serde(default)]
    service_ports: Vec<ServicePortSpec>,
    #[serde(default)]
    pull: bool,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    import: Option<String>,
    #[serde(default)]
    readiness: Option<ProbeSpec>,
    #[serde(default)]
    liveness: Option<ProbeSpec>,
    #[serde(default)]
    restart: Option<RestartKind>,
    #[serde(default, deserialize_with = "count_opt")]
    max_retries: Option<u32>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    strategy: Option<StrategyKind>,
    #[serde(default)]
    rollout: Option<Rollout>,
    #[serde(default)]
    security: Option<Security>,
    #[serde(default)]
    volumes: Vec<VolumeSpec>,
    #[serde(default)]
    tmpfs: Vec<TmpfsSpec>,
    #[serde(default)]
    binds: Vec<BindSpec>,
    #[serde(default)]
    configs: Vec<ConfigSpec>,
    #[serde(default)]
    secrets: Vec<SecretSpec>,
    /// Variable name -> secret name.
    #[serde(default, deserialize_with = "mounts::env_from_secret")]
    env_from_secret: BTreeMap<String, String>,
}

impl TryFrom<RawSpec> for SpecFile {
    type Error = String;

    fn try_from(raw: RawSpec) -> Result<Self, String> {
        if raw.name.trim().is_empty() {
            return Err("name: empty".into());
        }
        if raw.image.trim().is_empty() {
            return Err("image: empty".into());
        }
        if raw.import.is_some() && (raw.pull || raw.plain_http) {
            return Err("import: an image is either imported from an archive or pulled (pull, plain_http), not both".into());
        }
        if raw.import.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err(format!(
                "import: {:?} must be an absolute path on the node",
                raw.import.as_deref().unwrap_or_default()
            ));
        }
        let mut declared = std::collections::BTreeSet::new();
        for p in &raw.service_ports {
            if !declared.insert((p.port, p.protocol)) {
                return Err(format!(
                    "service_ports: {} {} is declared twice",
                    p.port,
                    protocol_name(p.protocol)
                ));
            }
        }
        if raw.max_retries.is_some() && raw.restart != Some(RestartKind::OnFailure) {
            return Err(r#"max_retries: only applies with restart = "on-failure""#.into());
        }
        mounts::check_env(&raw.env_from_secret, &raw.env)?;
        Ok(SpecFile { raw })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RestartKind {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StrategyKind {
    Spread,
    Binpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ApprovalKind {
    Auto,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProtocolKind {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Port {
    /// 0 or absent: exposed (for probes) but not published on the node.
    #[serde(default, deserialize_with = "port_opt")]
    host: Option<u32>,
    #[serde(deserialize_with = "port")]
    container: u32,
    #[serde(default)]
    protocol: ProtocolKind,
}

/// A port of the deployment's service: `port` on its virtual IP balances over the replicas'
/// `target` (default: the same port).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePortSpec {
    #[serde(deserialize_with = "port")]
    port: u32,
    #[serde(default, deserialize_with = "port_opt")]
    target: Option<u32>,
    #[serde(default)]
    protocol: ProtocolKind,
    /// For SRV records (`_NAME._tcp.DEPLOYMENT.berth`).
    #[serde(default)]
    name: String,
}

fn protocol_of(p: ProtocolKind) -> Protocol {
    match p {
        ProtocolKind::Tcp => Protocol::Tcp,
        ProtocolKind::Udp => Protocol::Udp,
    }
}

fn protocol_name(p: ProtocolKind) -> &'static str {
    match p {
        ProtocolKind::Tcp => "tcp",
        ProtocolKind::Udp => "udp",
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawProbe")]
struct ProbeSpec {
    check: probe::Check,
    timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timing {
    #[serde(default)]
    initial_delay_ms: u32,
    #[serde(default)]
    period_ms: u32,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default)]
    failure_threshold: u32,
    #[serde(default)]
    success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default, deserialize_with = "port_opt")]
    tcp: Option<u32>,
    #[serde(default, deserialize_with = "port_opt")]
    http: Option<u32>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    initial_delay_ms: u32,
    #[serde(default)]
    period_ms: u32,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default)]
    failure_threshold: u32,
    #[serde(default)]
    success_threshold: u32,
}

impl TryFrom<RawProbe> for ProbeSpec {
    type Error = String;

    fn try_from(raw: RawProbe) -> Result<Self, String> {
        let given = [raw.exec.is_some(), raw.tcp.is_some(), raw.http.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
        if given != 1 {
            return Err(
                "a probe needs exactly one of exec = [...], tcp = PORT or http = PORT".into(),
            );
        }
        if raw.path.is_some() && raw.http.is_none() {
            return Err("path: only an http probe has a path".into());
        }
        let check = if let Some(command) = raw.exec {
            if command.is_empty() {
                return Err("exec: empty command".into());
            }
            probe::Check::Exec(ExecCheck { command })
        } else if let Some(port) = raw.tcp {
            probe::Check::Tcp(TcpCheck { port })
        } else {
            let path = raw.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(format!("path: {path:?} must start with '/'"));
            }
            probe::Check::Http(HttpCheck {
                port: raw.http.unwrap_or_default(),
                path,
            })
        };
        Ok(ProbeSpec {
            check,
            timing: Timing {
                initial_delay_ms: raw.initial_delay_ms,
                period_ms: raw.period_ms,
                timeout_ms: raw.timeout_ms,
                failure_threshold: raw.failure_threshold,
                success_threshold: raw.success_threshold,
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollout {
    #[serde(default, deserialize_with = "surge_opt")]
    max_surge: Option<String>,
    #[serde(default, deserialize_with = "surge_opt")]
    max_unavailable: Option<String>,
    #[serde(default, deserialize_with = "duration_opt")]
    progress_deadline: Option<u32>,
    #[serde(default)]
    auto_rollback: Option<bool>,
    #[serde(default, deserialize_with = "count_opt")]
    history: Option<u32>,
    #[serde(default)]
    approval: Option<ApprovalKind>,
    #[serde(default, deserialize_with = "duration_opt")]
    approval_timeout: Option<u32>,
}

/// `[security]`: podman's flags of the same names, plus `run_as` (its `--user`) and
/// `read_only`. `seccomp` is "default", "unconfined" or the path of a Docker/OCI profile,
/// which is read when the spec is (its text is what the scheduler stores).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSecurity")]
struct Security(SecurityContext);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    seccomp: Option<String>,
    #[serde(default)]
    no_new_privileges: Option<bool>,
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    run_as: Option<String>,
    #[serde(default)]
    read_only: bool,
}

impl TryFrom<RawSecurity> for Security {
    type Error = String;

    fn try_from(raw: RawSecurity) -> Result<Self, String> {
        let mut options = berth_runtime::security::SecurityOptions {
            privileged: raw.privileged,
            cap_add: raw.cap_add.clone(),
            cap_drop: raw.cap_drop.clone(),
            no_new_privileges: raw.no_new_privileges,
            ..Default::default()
        };
        match raw.seccomp.as_deref() {
            None | Some("default") => {}
            Some(other) => options
                .add_security_opt(&format!("seccomp={other}"))
                .map_err(|e| format!("seccomp: {e}"))?,
        }
        options.validate().map_err(|e| e.to_string())?;
        if let Some(user) = &raw.run_as {
            berth_proto::security::check_run_as(user).map_err(|e| format!("run_as: {e}"))?;
        }
        use berth_runtime::security::SeccompChoice;
        Ok(Security(SecurityContext {
            privileged: raw.privileged,
            seccomp_unconfined: options.seccomp == SeccompChoice::Unconfined,
            seccomp_profile: match options.seccomp {
                SeccompChoice::Profile(text) => text,
                _ => String::new(),
            },
            no_new_privileges: raw.no_new_privileges,
            cap_add: raw.cap_add,
            cap_drop: raw.cap_drop,
            run_as: raw.run_as.unwrap_or_default(),
            read_only: raw.read_only,
        }))
    }
}

impl SpecFile {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)
    }

    /// Parses a spec; the error is one line: `FILE:LINE:COLUMN: FIELD: what is wrong`.
    pub(crate) fn parse(text: &str, file: &str) -> Result<Self, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| locate(file, text, "", &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            locate(file, text, &path, e.inner())
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.raw.name
    }

    /// The scheduler's form of the spec. Unset settings stay unset (zero), so the
    /// scheduler's defaults apply.
    pub(crate) fn to_proto(&self) -> DeploymentSpec {
        let r = &self.raw;
        let fetch = if let Some(path) = &r.import {
            image_source::Fetch::ImportPath(path.clone())
        } else if r.pull || r.plain_http {
            image_source::Fetch::Pull(RegistryPull {
                plain_http: r.plain_http,
                ..Default::default()
            })
        } else {
            image_source::Fetch::Present(true)
        };
        let probe = |p: &ProbeSpec| Probe {
            check: Some(p.check.clone()),
            initial_delay_ms: p.timing.initial_delay_ms,
            period_ms: p.timing.period_ms,
            timeout_ms: p.timing.timeout_ms,
            failure_threshold: p.timing.failure_threshold,
            success_threshold: p.timing.success_threshold,
        };
        let map = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        DeploymentSpec {
            name: r.name.clone(),
            image: r.image.clone(),
            image_source: Some(ImageSource {
                reference: r.image.clone(),
                fetch: Some(fetch),
            }),
            command: r.command.clone(),
            args: r.args.clone(),
            env: map(&r.env),
            replicas: r.replicas.unwrap_or(1),
            resources: (r.cpu.is_some() || r.memory.is_some()).then(|| Resources {
                cpu_millis: r.cpu.unwrap_or(0),
                memory_bytes: r.memory.unwrap_or(0),
            }),
            ports: r
                .ports
                .iter()
                .map(|p| PortMapping {
                    host_port: p.host.unwrap_or(0),
                    container_port: p.container,
                    protocol: protocol_of(p.protocol) as i32,
                })
                .collect(),
            service_ports: r
                .service_ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    target: p.target.filter(|t| *t != 0).unwrap_or(p.port),
                    protocol: protocol_of(p.protocol) as i32,
                })
                .collect(),
            readiness: r.readiness.as_ref().map(probe),
            liveness: r.liveness.as_ref().map(probe),
            restart: r.restart.map(|k| RestartPolicy {
                kind: match k {
                    RestartKind::Always => restart_policy::Kind::Always,
                    RestartKind::OnFailure => restart_policy::Kind::OnFailure,
                    RestartKind::Never => restart_policy::Kind::Never,
                } as i32,
                max_retries: r.max_retries.unwrap_or(0),
            }),
            node_selector: map(&r.node_selector),
            strategy: match r.strategy {
                None | Some(StrategyKind::Spread) => Strategy::Spread,
                Some(StrategyKind::Binpack) => Strategy::Binpack,
            } as i32,
            rollout: r.rollout.as_ref().map(|o| RolloutSettings {
                max_surge: o.max_surge.clone().unwrap_or_default(),
                max_unavailable: o.max_unavailable.clone().unwrap_or_default(),
                progress_deadline_s: o.progress_deadline.unwrap_or(0),
                auto_rollback: o.auto_rollback,
                history_limit: o.history.unwrap_or(0),
                approval: match o.approval {
                    None | Some(ApprovalKind::Auto) => Approval::Auto,
                    Some(ApprovalKind::Manual) => Approval::Manual,
                } as i32,
                approval_timeout_s: o.approval_timeout.unwrap_or(0),
            }),
            labels: map(&r.labels),
            security: r.security.as_ref().map(|s| s.0.clone()),
            volumes: r.volumes.iter().map(Into::into).collect(),
            tmpfs: r.tmpfs.iter().map(Into::into).collect(),
            binds: r.binds.iter().map(Into::into).collect(),
            configs: r.configs.iter().map(Into::into).collect(),
            secrets: r.secrets.iter().map(Into::into).collect(),
            env_from_secret: mounts::secret_envs(&r.env_from_secret),
            ..Default::default()
        }
    }
}

/// `FILE:LINE:COLUMN: PATH: message` from a toml error (its span) and the serde path.
fn locate(file: &str, text: &str, path: &str, err: &toml::de::Error) -> String {
    let mut out = file.to_string();
    if let Some(span) = err.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        out.push_str(&format!(":{line}:{column}"));
    }
    let message = err.message().trim().replace('\n', " ");
    // A nested validation message may already start with its own field ("path: ...").
    if path.is_empty() || path == "." {
        format!("{out}: {message}")
    } else {
        format!("{out}: {path}: {message}")
    }
}

// ----- value parsers (shared with the command line) -----

/// CPU as millicores: "500m", "0.5", "2" (cores); never zero.
pub(crate) fn parse_cpu(text: &str) -> Result<u64, String> {
    match berth_proto::quantity::parse_cpu(text)? {
        0 => Err(format!("{text:?} is no CPU at all")),
        millis => Ok(millis),
    }
}

/// Memory as bytes: "64m", "1g", "512k", "64Mi", or a plain byte count; never zero.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    match berth_proto::quantity::parse_memory(text)? {
        0 => Err(format!("{text:?} is no memory at all")),
        bytes => Ok(bytes),
    }
}

/// A duration: "90s", "2m", "1h", "1500ms", "1m30s", or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (like \"30s\", \"2m\" or \"1m30s\")");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += std::time::Duration::try_from_secs_f64(value * unit).map_err(|_| bad())?;
    }
    Ok(total)
}

/// Seconds (rounded up) of a duration given as a string or a number of seconds.
fn duration_secs(text: &str) -> Result<u32, String> {
    let d = parse_duration(text)?;
    let secs = d.as_millis().div_ceil(1000);
    u32::try_from(secs).map_err(|_| format!("{text:?} is too long"))
}

/// A count or a percentage: 1, "1", "25%".
fn check_surge(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a count or a percentage (like 1 or \"25%\")");
    if let Some(p) = t.strip_suffix('%') {
        let p: u32 = p.parse().map_err(|_| bad())?;
        if p > 100 {
            return Err(format!("{text:?} is above 100%"));
        }
    } else {
        t.parse::<u32>().map_err(|_| bad())?;
    }
    Ok(t.to_string())
}

// ----- serde helpers: numbers or strings, errors in words -----

/// A TOML scalar: what the quantity fields accept.
#[derive(Debug)]
enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn count_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Int(i) if i < 0 => Err(de::Error::custom(format!(
            "{i} is negative: expected a count of 0 or more"
        ))),
        Scalar::Int(i) => u32::try_from(i)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{i} is too large"))),
        other => Err(de::Error::custom(format!(
            "{other} is not a count: expected a whole number of 0 or more"
        ))),
    }
}

fn port_value<E: de::Error>(s: Scalar, allow_zero: bool) -> Result<u32, E> {
    if let Scalar::Int(i) = s
        && let Ok(port) = u32::try_from(i)
        && (port > 0 || allow_zero)
        && port <= 65535
    {
        return Ok(port);
    }
    Err(E::custom(format!("{s} is not a port (1-65535)")))
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    port_value(Scalar::deserialize(d)?, false)
}

fn port_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    port_value(Scalar::deserialize(d)?, true).map(Some)
}

fn cpu_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::Str(s) => parse_cpu(&s),
        // Numbers are cores, parsed as the text of the same number would be.
        Scalar::Int(i) => parse_cpu(&i.to_string()),
        Scalar::Float(x) => parse_cpu(&x.to_string()),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

fn memory_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::Str(s) => parse_memory(&s),
        Scalar::Int(i) if i > 0 => Ok(i.unsigned_abs()),
        other => Err(format!(
            "{other} is not a memory amount (bytes, or a string like \"64m\")"
        )),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::Str(s) => duration_secs(&s),
        Scalar::Int(i) if i >= 0 => {
            u32::try_from(i).map_err(|_| format!("{i} seconds is too long"))
        }
        other => Err(format!(
            "{other} is not a duration (like \"30s\", \"2m\", or a number of seconds)"
        )),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

fn surge_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::Str(s) => check_surge(&s),
        Scalar::Int(i) if i >= 0 => Ok(i.to_string()),
        other => Err(format!(
            "{other} is not a count or a percentage (like 1 or \"25%\")"
        )),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SpecFile, String> {
        SpecFile::parse(text, "app.toml")
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("the spec must be refused")
    }

    const FULL: &str = r#"
name = "hello"
image = "registry.local:5000/hello:v1"
command = ["/bin/sh", "-c"]
args = ["exec httpd -f"]
env = { PORT = "8080", GREETING = "hi" }
labels = { team = "web" }
replicas = 3
cpu = "500m"
memory = "64m"
ports = [{ host = 18080, container = 8080 }, { container = 53, protocol = "udp" }]
service_ports = [{ port = 80, target = 8080, protocol = "tcp", name = "http" }, { port = 53, protocol = "udp" }]
pull = true
plain_http = true
readiness = { http = 8080, path = "/healthz", period_ms = 500, timeout_ms = 200, failure_threshold = 2, initial_delay_ms = 100, success_threshold = 1 }
liveness = { tcp = 8080 }
restart = "on-failure"
max_retries = 5
node_selector = { zone = "a" }
strategy = "binpack"

[rollout]
max_surge = 1
max_unavailable = "0%"
progress_deadline = "2m"
auto_rollback = false
history = 5
approval = "manual"
approval_timeout = "1h"
"#;

    #[test]
    fn service_ports_are_mapped_and_checked() {
        let p = parse(FULL).unwrap().to_proto();
        assert_eq!(
            p.service_ports,
            vec![
                ServicePort {
                    name: "http".into(),
                    port: 80,
                    target: 8080,
                    protocol: Protocol::Tcp as i32
                },
                ServicePort {
                    name: String::new(),
                    port: 53,
                    target: 53,
                    protocol: Protocol::Udp as i32
                },
            ],
            "the target defaults to the port"
        );
        let base = "name = \"a\"\nimage = \"a:1\"\n";
        for (ports, want) in [
            (
                "[{ port = 80 }, { port = 80, target = 81 }]",
                "80 tcp is declared twice",
            ),
            ("[{ port = 0 }]", "service_ports[0].port"),
            ("[{ port = 80, target = 70000 }]", "service_ports[0].target"),
            (
                "[{ port = 80, protocol = \"sctp\" }]",
                "service_ports[0].protocol",
            ),
            ("[{ port = 80, tagret = 8080 }]", "tagret"),
        ] {
            let e = err(&format!("{base}service_ports = {ports}\n"));
            assert!(
                e.contains(want) && e.starts_with("app.toml"),
                "{ports}: {e}"
            );
        }
    }

    #[test]
    fn every_field_is_mapped() {
        let spec = parse(FULL).unwrap();
        assert_eq!(spec.name(), "hello");
        let p = spec.to_proto();
        assert_eq!(p.name, "hello");
        assert_eq!(p.image, "registry.local:5000/hello:v1");
        let source = p.image_source.unwrap();
        assert_eq!(source.reference, p.image);
        assert_eq!(
            source.fetch,
            Some(image_source::Fetch::Pull(RegistryPull {
                plain_http: true,
                ..Default::default()
            }))
        );
        assert_eq!(p.command, ["/bin/sh", "-c"]);
        assert_eq!(p.args, ["exec httpd -f"]);
        assert_eq!(p.env.get("PORT").map(String::as_str), Some("8080"));
        assert_eq!(p.env.len(), 2);
        assert_eq!(p.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(p.replicas, 3);
        assert_eq!(
            p.resources,
            Some(Resources {
                cpu_millis: 500,
                memory_bytes: 64 << 20
            })
        );
        assert_eq!(
            p.ports,
            vec![
                PortMapping {
                    host_port: 18080,
                    container_port: 8080,
                    protocol: Protocol::Tcp as i32
                },
                PortMapping {
                    host_port: 0,
                    container_port: 53,
                    protocol: Protocol::Udp as i32
                },
            ]
        );
        assert_eq!(
            p.readiness,
            Some(Probe {
                check: Some(probe::Check::Http(HttpCheck {
                    port: 8080,
                    path: "/healthz".into()
                })),
                initial_delay_ms: 100,
                period_ms: 500,
                timeout_ms: 200,
                failure_threshold: 2,
                success_threshold: 1,
            })
        );
        assert_eq!(
            p.liveness.unwrap().check,
            Some(probe::Check::Tcp(TcpCheck { port: 8080 }))
        );
        assert_eq!(
            p.restart,
            Some(RestartPolicy {
                kind: restart_policy::Kind::OnFailure as i32,
                max_retries: 5
            })
        );
        assert_eq!(p.node_selector.get("zone").map(String::as_str), Some("a"));
        assert_eq!(p.strategy, Strategy::Binpack as i32);
        assert_eq!(
            p.rollout,
            Some(RolloutSettings {
                max_surge: "1".into(),
                max_unavailable: "0%".into(),
                progress_deadline_s: 120,
                auto_rollback: Some(false),
                history_limit: 5,
                approval: Approval::Manual as i32,
                approval_timeout_s: 3600,
            })
        );
    }

    #[test]
    fn defaults_are_left_to_the_scheduler() {
        let p = parse("name = \"a\"\nimage = \"a:1\"\n").unwrap().to_proto();
        assert_eq!(p.replicas, 1);
        assert_eq!(p.resources, None);
        assert_eq!(p.rollout, None);
        assert_eq!(p.restart, None);
        assert_eq!(p.strategy, Strategy::Spread as i32);
        assert_eq!(
            p.image_source.unwrap().fetch,
            Some(image_source::Fetch::Present(true))
        );
        let p = parse("name = \"a\"\nimage = \"a:1\"\nimport = \"/srv/a.tar\"\nreplicas = 0\nreadiness = { exec = [\"true\"] }\nrestart = \"never\"\n")
            .unwrap()
            .to_proto();
        assert_eq!(p.replicas, 0);
        assert_eq!(
            p.image_source.unwrap().fetch,
            Some(image_source::Fetch::ImportPath("/srv/a.tar".into()))
        );
        assert_eq!(
            p.readiness.unwrap().check,
            Some(probe::Check::Exec(ExecCheck {
                command: vec!["true".into()]
            }))
        );
        assert_eq!(p.restart.unwrap().kind, restart_policy::Kind::Never as i32);
        // Numbers work where strings do.
        let p = parse("name = \"a\"\nimage = \"a:1\"\ncpu = 0.25\nmemory = 1048576\n[rollout]\nprogress_deadline = 30\nmax_surge = \"25%\"\n")
            .unwrap()
            .to_proto();
        assert_eq!(p.resources.unwrap().cpu_millis, 250);
        let r = p.rollout.unwrap();
        assert_eq!(r.progress_deadline_s, 30);
        assert_eq!(r.max_surge, "25%");
        assert_eq!(r.approval, Approval::Auto as i32);
        assert_eq!(r.auto_rollback, None);
    }

    #[test]
    fn security_table_is_mapped_and_checked() {
        let spec = parse(
            "name = \"a\"\nimage = \"a:1\"\n[security]\ncap_drop = [\"ALL\"]\ncap_add = [\"net_bind_service\"]\nno_new_privileges = true\nseccomp = \"unconfined\"\nrun_as = \"1000:1000\"\nread_only = true\n",
        )
        .unwrap();
        let s = spec.to_proto().security.unwrap();
        assert_eq!(s.cap_drop, ["ALL"]);
        assert_eq!(s.cap_add, ["net_bind_service"]);
        assert_eq!(s.no_new_privileges, Some(true));
        assert!(s.seccomp_unconfined && s.seccomp_profile.is_empty());
        assert_eq!(s.run_as, "1000:1000");
        assert!(s.read_only && !s.privileged);
        let e = err("name = \"a\"\nimage = \"a:1\"\n[security]\ncap_add = [\"CAP_FLY\"]\n");
        assert!(e.contains("security: ") && e.contains("CAP_FLY"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[security]\nseccomp = \"/no/such.json\"\n");
        assert!(
            e.contains("security: ") && e.contains("/no/such.json"),
            "{e}"
        );
        let e = err("name = \"a\"\nimage = \"a:1\"\n[security]\nrun_as = \"1000:\"\n");
        assert!(e.contains("run_as"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[security]\nprivileges = true\n");
        assert!(e.contains("unknown field `privileges`"), "{e}");
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let e = err("name = \"a\"\nimage = \"a:1\"\nreplicaz = 2\n");
        assert!(e.starts_with("app.toml:3:"), "{e}");
        assert!(e.contains("unknown field `replicaz`"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[rollout]\nmax_surgee = 1\n");
        assert!(e.starts_with("app.toml:4:"), "{e}");
        assert!(e.contains("max_surgee"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\nreadiness = { http = 80, paht = \"/\" }\n");
        assert!(e.contains("readiness") && e.contains("paht"), "{e}");
        let e = err(
            "name = \"a\"\nimage = \"a:1\"\nports = [{ host = 1, container = 2, proto = \"tcp\" }]\n",
        );
        assert!(e.contains("ports[0]") && e.contains("proto"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = err("name = \"a\"\nimage = \"a:1\"\nreplicas = -1\n");
        assert!(e.starts_with("app.toml:3:"), "{e}");
        assert!(e.contains("replicas") && e.contains("negative"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\ncpu = \"lots\"\n");
        assert!(
            e.contains("app.toml:3:") && e.contains("cpu: ") && e.contains("lots"),
            "{e}"
        );
        let e = err("name = \"a\"\nimage = \"a:1\"\ncpu = -2\n");
        assert!(e.contains("cpu: "), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\nmemory = \"64x\"\n");
        assert!(e.contains("memory: ") && e.contains("64x"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[rollout]\nprogress_deadline = \"soon\"\n");
        assert!(
            e.contains("app.toml:4:")
                && e.contains("rollout.progress_deadline: ")
                && e.contains("soon"),
            "{e}"
        );
        let e = err("name = \"a\"\nimage = \"a:1\"\n[rollout]\napproval_timeout = \"5 parsecs\"\n");
        assert!(e.contains("rollout.approval_timeout: "), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[rollout]\nmax_unavailable = \"150%\"\n");
        assert!(e.contains("rollout.max_unavailable: "), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\n[rollout]\napproval = \"maybe\"\n");
        assert!(
            e.contains("rollout.approval: ") && e.contains("manual"),
            "{e}"
        );
        let e = err("name = \"a\"\nimage = \"a:1\"\nrestart = \"sometimes\"\n");
        assert!(e.contains("restart: ") && e.contains("on-failure"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\nports = [{ host = 70000, container = 80 }]\n");
        assert!(e.contains("ports[0].host: ") && e.contains("70000"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\nreadiness = { http = 80, tcp = 80 }\n");
        assert!(
            e.contains("readiness: ") && e.contains("exactly one"),
            "{e}"
        );
        let e = err("name = \"a\"\nimage = \"a:1\"\nmax_retries = 3\n");
        assert!(e.contains("max_retries"), "{e}");
        let e = err("name = \"a\"\nimage = \"a:1\"\nimport = \"/a.tar\"\npull = true\n");
        assert!(e.contains("import"), "{e}");
        let e = err("image = \"a:1\"\n");
        assert!(e.contains("missing field `name`"), "{e}");
        let e = err("name = \"a\"\nimage = \n");
        assert!(e.starts_with("app.toml:2:"), "{e}");
    }

    #[test]
    fn quantities_and_durations() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert!(parse_cpu("0").is_err());
        assert!(parse_cpu("-1").is_err());
        assert!(parse_cpu("1.5x").is_err());
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("64q").is_err());
        use std::time::Duration;
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 min").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(duration_secs("1500ms"), Ok(2));
    }

    #[test]
    fn the_example_specs_parse() {
        // At run time: a test archive run elsewhere (scripts/test.sh's non-root stage) remaps
        // CARGO_MANIFEST_DIR to its copy of the workspace; the compile-time path may be unreadable.
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let dir = Path::new(&manifest_dir).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let spec = SpecFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!spec.to_proto().name.is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 5, "the example specs in {}", dir.display());
    }
}
