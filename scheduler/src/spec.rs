//! Deployment specs: defaults, validation (naming the field at fault) and the rollout
//! arithmetic of max_surge / max_unavailable.

use std::collections::BTreeSet;

use berth_proto::v1::{
    DeploymentSpec, Probe, Protocol, RolloutSettings, SecurityContext, ServicePort, probe,
};

use crate::error::SchedError;

pub(crate) mod mounts;

pub(crate) const DEFAULT_SURGE: &str = "25%";
pub(crate) const DEFAULT_UNAVAILABLE: &str = "25%";
pub(crate) const DEFAULT_PROGRESS_DEADLINE_S: u32 = 120;
pub(crate) const DEFAULT_HISTORY: u32 = 10;
pub(crate) const MAX_REPLICAS: u32 = 10_000;

/// Fills what the user left out, so that equal intents compare equal.
pub(crate) fn with_defaults(mut spec: DeploymentSpec) -> DeploymentSpec {
    mounts::with_defaults(&mut spec);
    let r = spec.rollout.get_or_insert_with(RolloutSettings::default);
    if r.max_surge.is_empty() {
        r.max_surge = DEFAULT_SURGE.into();
    }
    if r.max_unavailable.is_empty() {
        r.max_unavailable = DEFAULT_UNAVAILABLE.into();
    }
    if r.progress_deadline_s == 0 {
        r.progress_deadline_s = DEFAULT_PROGRESS_DEADLINE_S;
    }
    if r.auto_rollback.is_none() {
        r.auto_rollback = Some(true);
    }
    if r.history_limit == 0 {
        r.history_limit = DEFAULT_HISTORY;
    }
    spec
}

/// A name that is safe as a key, a directory, a container id prefix and a DNS label (RFC
/// 1123: a deployment's name is its service's name in DNS).
pub(crate) fn validate_name(field: &str, name: &str) -> Result<(), SchedError> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !name.is_empty()
        && name.len() <= 63
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SchedError::invalid(
            field,
            format!(
                "{name:?} is not a DNS label: 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// A name to look an existing deployment up by: safe as a key, and as lenient as names were
/// before they had to be DNS labels (a trailing '-'), so such a deployment can still be
/// read, scaled and deleted.
/// A qualified name (`hello.staging`, see `environments::key`) is checked part by part.
pub(crate) fn validate_lookup_name(field: &str, name: &str) -> Result<(), SchedError> {
    let (env, name) = match name.split_once('.') {
        Some((name, env)) => (Some(env), name),
        None => (None, name),
    };
    if let Some(env) = env {
        validate_name(field, env)?;
    }
    // A label with dashes appended to it: the old rule.
    match name.trim_end_matches('-') {
        "" => validate_name(field, name),
        stem => validate_name(field, stem),
    }
}

/// A stored spec's name: a DNS label qualified with the spec's environment (see
/// `environments::key`).
fn validate_qualified_name(spec: &DeploymentSpec) -> Result<(), SchedError> {
    use crate::environments::key;
    let (env, name) = key::split(&spec.name);
    validate_name("spec.name", name)?;
    if env != key::normalize(&spec.environment) {
        return Err(SchedError::invalid(
            "spec.environment",
            format!(
                "{:?} does not match the deployment's environment {env:?}",
                spec.environment
            ),
        ));
    }
    validate_name("spec.environment", env)
}

/// Service ports: each (port, protocol) once, ports and targets within 1-65535, a known
/// protocol, names (for SRV records) DNS labels and distinct.
fn validate_service_ports(ports: &[ServicePort]) -> Result<(), SchedError> {
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.service_ports[{i}].{f}");
        for (f, v) in [("port", p.port), ("target", p.target)] {
            if v == 0 || v > 65535 {
                return Err(SchedError::invalid(
                    field(f),
                    format!("{v} is not a port (1-65535)"),
                ));
            }
        }
        let protocol = Protocol::try_from(p.protocol).map_err(|_| {
            SchedError::invalid(
                field("protocol"),
                format!("{} is not a protocol (tcp or udp)", p.protocol),
            )
        })?;
        if !seen.insert((p.port, p.protocol)) {
            return Err(SchedError::invalid(
                field("port"),
                format!("{} {} is declared twice", p.port, protocol_name(protocol)),
            ));
        }
        if !p.name.is_empty() {
            validate_name(&field("name"), &p.name)?;
            if !names.insert(p.name.as_str()) {
                return Err(SchedError::invalid(
                    field("name"),
                    format!("{:?} is declared twice", p.name),
                ));
            }
        }
    }
    Ok(())
}

/// "tcp" or "udp", as specs and SRV records spell them.
pub(crate) fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        _ => "tcp",
    }
}

pub(crate) fn validate(spec: &DeploymentSpec) -> Result<(), SchedError> {
    validate_qualified_name(spec)?;
    if spec.image.trim().is_empty() {
        return Err(SchedError::invalid(
            "spec.image",
            "empty: every deployment runs an image",
        ));
    }
    if spec.replicas > MAX_REPLICAS {
        return Err(SchedError::invalid(
            "spec.replicas",
            format!("{} is above the limit of {MAX_REPLICAS}", spec.replicas),
        ));
    }
    let mut host_ports = BTreeSet::new();
    let mut exposed = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if p.container_port == 0 || p.container_port > 65535 {
            return Err(SchedError::invalid(
                format!("spec.ports[{i}].container_port"),
                format!("{} is not a port (1-65535)", p.container_port),
            ));
        }
        if p.host_port > 65535 {
            return Err(SchedError::invalid(
                format!("spec.ports[{i}].host_port"),
                format!("{} is not a port (1-65535)", p.host_port),
            ));
        }
        if p.host_port != 0 && !host_ports.insert((p.host_port, p.protocol)) {
            return Err(SchedError::invalid(
                format!("spec.ports[{i}].host_port"),
                format!("{} is published twice", p.host_port),
            ));
        }
        exposed.insert(p.container_port);
    }
    validate_service_ports(&spec.service_ports)?;
    mounts::validate(spec)?;
    for (field, probe) in [
        ("spec.readiness", &spec.readiness),
        ("spec.liveness", &spec.liveness),
    ] {
        if let Some(probe) = probe {
            validate_probe(field, probe, &exposed)?;
        }
    }
    if let Some(r) = &spec.rollout {
        let n = spec.replicas.max(1);
        let surge = resolve(&r.max_surge, n, true)
            .map_err(|e| SchedError::invalid("spec.rollout.max_surge", e))?;
        let unavailable = resolve(&r.max_unavailable, n, false)
            .map_err(|e| SchedError::invalid("spec.rollout.max_unavailable", e))?;
        let _ = (surge, unavailable);
    }
    if let Some(security) = &spec.security {
        validate_security(security)?;
    }
    for (k, _) in spec.env.iter() {
        if k.is_empty() || k.contains('=') {
            return Err(SchedError::invalid(
                "spec.env",
                format!("{k:?} is not a variable name"),
            ));
        }
    }
    Ok(())
}

/// Capability names must exist (with or without CAP_, any case; or ALL), a custom seccomp
/// profile must be a JSON object with a defaultAction, and run_as must be user[:group].
fn validate_security(s: &SecurityContext) -> Result<(), SchedError> {
    for (field, names) in [
        ("spec.security.cap_add", &s.cap_add),
        ("spec.security.cap_drop", &s.cap_drop),
    ] {
        for name in names {
            let full = berth_proto::security::full_cap_name(name);
            if full != "CAP_ALL" && full.parse::<caps::Capability>().is_err() {
                return Err(SchedError::invalid(
                    field,
                    format!("{name:?} is not a capability"),
                ));
            }
        }
    }
    if !s.seccomp_profile.is_empty() {
        if s.seccomp_unconfined {
            return Err(SchedError::invalid(
                "spec.security.seccomp_profile",
                "set together with seccomp_unconfined: choose one",
            ));
        }
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&s.seccomp_profile);
        if !parsed.is_ok_and(|v| v.get("defaultAction").is_some()) {
            return Err(SchedError::invalid(
                "spec.security.seccomp_profile",
                "not a seccomp profile (a JSON object with defaultAction)",
            ));
        }
    }
    if !s.run_as.is_empty() {
        berth_proto::security::check_run_as(&s.run_as)
            .map_err(|e| SchedError::invalid("spec.security.run_as", e))?;
    }
    Ok(())
}

fn validate_probe(field: &str, probe: &Probe, exposed: &BTreeSet<u32>) -> Result<(), SchedError> {
    let port = match &probe.check {
        None => {
            return Err(SchedError::invalid(
                field,
                "a probe needs exec, tcp or http",
            ));
        }
        Some(probe::Check::Exec(e)) if e.command.is_empty() => {
            return Err(SchedError::invalid(
                format!("{field}.exec.command"),
                "empty",
            ));
        }
        Some(probe::Check::Exec(_)) => return Ok(()),
        Some(probe::Check::Tcp(t)) => (t.port, "tcp"),
        Some(probe::Check::Http(h)) => (h.port, "http"),
    };
    if !exposed.contains(&port.0) {
        return Err(SchedError::invalid(
            format!("{field}.{}.port", port.1),
            format!(
                "{} is not one of the ports the spec exposes ({exposed:?})",
                port.0
            ),
        ));
    }
    Ok(())
}

/// A count from "3" or a percentage of `total` from "25%" (rounded up for surge, down for
/// unavailable, as Kubernetes does).
pub(crate) fn resolve(text: &str, total: u32, round_up: bool) -> Result<u32, String> {
    let t = text.trim();
    if let Some(pct) = t.strip_suffix('%') {
        let p: u32 = pct
            .parse()
            .map_err(|_| format!("{text:?} is not a count or a percentage"))?;
        if p > 100 {
            return Err(format!("{text:?} is above 100%"));
        }
        let scaled = u64::from(total) * u64::from(p);
        let v = if round_up {
            scaled.div_ceil(100)
        } else {
            scaled / 100
        };
        // At most `total` (p is at most 100), so it fits.
        return Ok(u32::try_from(v).unwrap_or(total));
    }
    t.parse()
        .map_err(|_| format!("{text:?} is not a count or a percentage"))
}

/// (max surge, max unavailable) for `replicas`; never both zero.
pub(crate) fn surge_and_unavailable(spec: &DeploymentSpec) -> (u32, u32) {
    let r = spec.rollout.clone().unwrap_or_default();
    let n = spec.replicas;
    let surge = resolve(
        if r.max_surge.is_empty() {
            DEFAULT_SURGE
        } else {
            &r.max_surge
        },
        n,
        true,
    )
    .unwrap_or(1);
    let unavailable = resolve(
        if r.max_unavailable.is_empty() {
            DEFAULT_UNAVAILABLE
        } else {
            &r.max_unavailable
        },
        n,
        false,
    )
    .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{HttpCheck, PortMapping};

    fn spec() -> DeploymentSpec {
        DeploymentSpec {
            name: "web".into(),
            image: "web:1".into(),
            replicas: 3,
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        assert_eq!(resolve("25%", 10, true), Ok(3));
        assert_eq!(resolve("25%", 10, false), Ok(2));
        assert_eq!(resolve("2", 10, true), Ok(2));
        assert!(resolve("x%", 10, true).is_err());
        assert!(resolve("150%", 10, true).is_err());
        let mut s = spec();
        s.rollout = Some(RolloutSettings {
            max_surge: "0".into(),
            max_unavailable: "0".into(),
            ..Default::default()
        });
        assert_eq!(surge_and_unavailable(&s), (0, 1));
    }

    #[test]
    fn invalid_specs_name_the_field() {
        assert!(validate(&spec()).is_ok());
        let mut s = spec();
        s.image.clear();
        assert!(validate(&s).unwrap_err().to_string().contains("spec.image"));
        let mut s = spec();
        s.name = "Web_1".into();
        assert!(validate(&s).unwrap_err().to_string().contains("spec.name"));
        let mut s = spec();
        s.readiness = Some(Probe {
            check: Some(probe::Check::Http(HttpCheck {
                port: 8080,
                path: "/".into(),
            })),
            ..Default::default()
        });
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("spec.readiness.http.port")
        );
        s.ports = vec![PortMapping {
            host_port: 0,
            container_port: 8080,
            protocol: 0,
        }];
        assert!(validate(&s).is_ok());
        let mut s = spec();
        s.ports = vec![
            PortMapping {
                host_port: 80,
                container_port: 8080,
                protocol: 0,
            },
            PortMapping {
                host_port: 80,
                container_port: 8081,
                protocol: 0,
            },
        ];
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("spec.ports[1].host_port")
        );
        let mut s = spec();
        s.replicas = MAX_REPLICAS + 1;
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("spec.replicas")
        );
    }

    /// A stored spec's name is qualified with its environment (`environments::key`); the two
    /// must agree, and each part is a DNS label.
    #[test]
    fn qualified_names_match_the_environment() {
        let mut s = spec();
        s.name = "web.staging".into();
        s.environment = "staging".into();
        assert!(validate(&s).is_ok());
        s.environment = String::new();
        let e = validate(&s).unwrap_err().to_string();
        assert!(e.contains("spec.environment"), "{e}");
        s.name = "web.Bad".into();
        s.environment = "Bad".into();
        assert!(validate(&s).is_err());
        assert!(validate_lookup_name("name", "web.staging").is_ok());
        assert!(validate_lookup_name("name", "web.st_aging").is_err());
    }

    #[test]
    fn names_must_be_dns_labels() {
        for good in ["a", "web-1", "0db", &"x".repeat(63)] {
            assert!(validate_name("spec.name", good).is_ok(), "{good}");
        }
        for bad in ["", "-web", "web-", "Web", "we_b", "a.b", &"x".repeat(64)] {
            let e = validate_name("spec.name", bad).unwrap_err().to_string();
            assert!(
                e.contains("spec.name") && e.contains("DNS label"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn service_ports_are_checked_naming_the_field() {
        let port = |port, target, protocol| ServicePort {
            name: String::new(),
            port,
            target,
            protocol,
        };
        let tcp = Protocol::Tcp as i32;
        let udp = Protocol::Udp as i32;
        let mut s = spec();
        s.service_ports = vec![port(80, 8080, tcp), port(80, 8080, udp)];
        assert!(validate(&s).is_ok(), "the same port on tcp and udp");
        let cases = [
            (
                vec![port(80, 8080, tcp), port(80, 8081, tcp)],
                "spec.service_ports[1].port",
                "twice",
            ),
            (
                vec![port(0, 8080, tcp)],
                "spec.service_ports[0].port",
                "not a port",
            ),
            (
                vec![port(80, 65536, tcp)],
                "spec.service_ports[0].target",
                "not a port",
            ),
            (
                vec![port(80, 80, 7)],
                "spec.service_ports[0].protocol",
                "not a protocol",
            ),
        ];
        for (ports, field, what) in cases {
            s.service_ports = ports;
            let e = validate(&s).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(what), "{e}");
        }
        let mut named = port(80, 8080, tcp);
        named.name = "http".into();
        s.service_ports = vec![named.clone(), ServicePort { port: 81, ..named }];
        let e = validate(&s).unwrap_err().to_string();
        assert!(e.contains("spec.service_ports[1].name"), "{e}");
    }

    #[test]
    fn security_fields_are_checked() {
        let mut s = spec();
        s.security = Some(SecurityContext {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["ALL".into()],
            run_as: "1000:1000".into(),
            seccomp_profile: r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#.into(),
            ..Default::default()
        });
        assert!(validate(&s).is_ok());
        let mut bad = s.clone();
        bad.security.as_mut().unwrap().cap_add = vec!["CAP_FLY".into()];
        let e = validate(&bad).unwrap_err().to_string();
        assert!(
            e.contains("spec.security.cap_add") && e.contains("CAP_FLY"),
            "{e}"
        );
        let mut bad = s.clone();
        bad.security.as_mut().unwrap().seccomp_profile = "{".into();
        let e = validate(&bad).unwrap_err().to_string();
        assert!(e.contains("spec.security.seccomp_profile"), "{e}");
        let mut bad = s;
        bad.security.as_mut().unwrap().run_as = ":1".into();
        let e = validate(&bad).unwrap_err().to_string();
        assert!(e.contains("spec.security.run_as"), "{e}");
    }

    #[test]
    fn defaults_make_equal_intents_equal() {
        let a = with_defaults(spec());
        let b = with_defaults(with_defaults(spec()));
        assert_eq!(a, b);
        assert_eq!(a.rollout.unwrap().auto_rollback, Some(true));
    }
}
