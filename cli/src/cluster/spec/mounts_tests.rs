//! Tests of the spec file's storage fields: mapping, defaults and refusals.

use berth_proto::v1::{BindMount, ConfigMount, SecretEnv, SecretMount, TmpfsMount, VolumeMount};

use super::super::SpecFile;
use super::*;

const BASE: &str = "name = \"a\"\nimage = \"a:1\"\n";

fn parse(extra: &str) -> Result<SpecFile, String> {
    SpecFile::parse(&format!("{BASE}{extra}"), "app.toml")
}

fn err(extra: &str) -> String {
    parse(extra).expect_err("the spec must be refused")
}

#[test]
fn every_storage_field_is_mapped() {
    let p = parse(
        r#"env = { PORT = "80" }
volumes = [{ name = "data", path = "/var/lib/redis", read_only = false }, { name = "cache", path = "/c", read_only = true }]
tmpfs = [{ path = "/tmp", size = "64m", mode = "1777" }, { path = "/scratch", size = 4096 }]
binds = [{ source = "/srv/x", path = "/x", read_only = true }]
configs = [{ name = "app-conf", path = "/etc/app/app.conf", mode = "0444" }, { name = "b", path = "/b" }]
secrets = [{ name = "db-password" }, { name = "tls-key", path = "/run/secrets/tls/key.pem" }]
env_from_secret = { DB_PASSWORD = "db-password", API_TOKEN = "api" }
"#,
    )
    .unwrap()
    .to_proto();
    assert_eq!(
        p.volumes,
        [
            VolumeMount {
                name: "data".into(),
                path: "/var/lib/redis".into(),
                read_only: false
            },
            VolumeMount {
                name: "cache".into(),
                path: "/c".into(),
                read_only: true
            },
        ]
    );
    assert_eq!(
        p.tmpfs,
        [
            TmpfsMount {
                path: "/tmp".into(),
                size_bytes: 64 << 20,
                mode: 0o1777
            },
            TmpfsMount {
                path: "/scratch".into(),
                size_bytes: 4096,
                mode: 0
            },
        ]
    );
    assert_eq!(
        p.binds,
        [BindMount {
            source: "/srv/x".into(),
            path: "/x".into(),
            read_only: true
        }]
    );
    assert_eq!(
        p.configs,
        [
            ConfigMount {
                name: "app-conf".into(),
                path: "/etc/app/app.conf".into(),
                mode: 0o444,
                version: 0
            },
            ConfigMount {
                name: "b".into(),
                path: "/b".into(),
                mode: 0,
                version: 0
            },
        ],
        "an absent mode is left to the scheduler's default (0444)"
    );
    assert_eq!(
        p.secrets,
        [
            SecretMount {
                name: "db-password".into(),
                path: String::new(),
                version: 0
            },
            SecretMount {
                name: "tls-key".into(),
                path: "/run/secrets/tls/key.pem".into(),
                version: 0
            },
        ]
    );
    // Sorted by variable name: the same file always gives the same spec.
    assert_eq!(
        p.env_from_secret,
        [
            SecretEnv {
                env: "API_TOKEN".into(),
                secret: "api".into(),
                version: 0
            },
            SecretEnv {
                env: "DB_PASSWORD".into(),
                secret: "db-password".into(),
                version: 0
            },
        ]
    );
}

#[test]
fn a_spec_without_storage_has_none() {
    let p = parse("").unwrap().to_proto();
    assert!(p.volumes.is_empty() && p.tmpfs.is_empty() && p.binds.is_empty());
    assert!(p.configs.is_empty() && p.secrets.is_empty() && p.env_from_secret.is_empty());
}

#[test]
fn bad_storage_fields_are_named_with_their_line() {
    for (extra, line, want) in [
        (
            "volumes = [{ name = \"data\", path = \"var/lib\" }]\n",
            3,
            "volumes[0].path: ",
        ),
        (
            "volumes = [{ name = \"-x\", path = \"/d\" }]\n",
            3,
            "volumes[0].name: ",
        ),
        (
            "volumes = [{ name = \"d\", path = \"/d\", ro = true }]\n",
            3,
            "unknown field `ro`",
        ),
        (
            "\ntmpfs = [{ path = \"/t\", size = \"64q\" }]\n",
            4,
            "tmpfs[0].size: ",
        ),
        (
            "tmpfs = [{ path = \"/t\", size = 0 }]\n",
            3,
            "tmpfs[0].size: ",
        ),
        (
            "tmpfs = [{ path = \"/t\", mode = \"999\" }]\n",
            3,
            "tmpfs[0].mode: ",
        ),
        (
            "tmpfs = [{ path = \"/t\", mode = 1777 }]\n",
            3,
            "octal string",
        ),
        (
            "tmpfs = [{ path = \"/t\", mode = \"17777\" }]\n",
            3,
            "tmpfs[0].mode: ",
        ),
        (
            "binds = [{ source = \"srv\", path = \"/x\" }]\n",
            3,
            "binds[0].source: ",
        ),
        ("binds = [{ path = \"/x\" }]\n", 3, "missing field `source`"),
        (
            "configs = [{ name = \"c\", path = \"/c\", mode = \"rw\" }]\n",
            3,
            "configs[0].mode: ",
        ),
        (
            "configs = [{ name = \"\", path = \"/c\" }]\n",
            3,
            "configs[0].name: ",
        ),
        ("configs = [{ name = \"c\" }]\n", 3, "missing field `path`"),
        (
            "secrets = [{ name = \"s\", path = \"/etc/s\" }]\n",
            3,
            "secrets[0].path: ",
        ),
        (
            "secrets = [{ name = \"s\", path = \"/run/secrets/../../etc/s\" }]\n",
            3,
            "/run/secrets/",
        ),
        (
            "secrets = [{ name = \"s\", path = \"/run/secrets\" }]\n",
            3,
            "secrets[0].path: ",
        ),
        ("secrets = [{ name = \"a/b\" }]\n", 3, "secrets[0].name: "),
        (
            "secrets = [{ name = \"s\", mode = \"0400\" }]\n",
            3,
            "unknown field `mode`",
        ),
        (
            "env_from_secret = { \"A=B\" = \"s\" }\n",
            3,
            "env_from_secret: ",
        ),
    ] {
        let e = err(extra);
        assert!(
            e.starts_with(&format!("app.toml:{line}:")) && e.contains(want),
            "{extra}: {e}"
        );
    }
}

#[test]
fn a_variable_set_twice_is_refused() {
    let e = err("env = { DB = \"x\" }\nenv_from_secret = { DB = \"db\" }\n");
    assert!(
        e.contains("env_from_secret.DB") && e.contains("also set in env"),
        "{e}"
    );
}

#[test]
fn modes_are_octal_strings() {
    assert_eq!(parse_mode("0444"), Ok(0o444));
    assert_eq!(parse_mode("1777"), Ok(0o1777));
    assert_eq!(parse_mode("0o600"), Ok(0o600));
    assert_eq!(parse_mode("0"), Ok(0));
    for bad in ["", "8", "0o", "rw-r--r--", "10000", "-1"] {
        let e = parse_mode(bad).unwrap_err();
        assert!(e.contains("octal"), "{bad:?}: {e}");
    }
}

#[test]
fn secret_paths_stay_under_run_secrets() {
    assert!(check_secret_path("/run/secrets/db").is_ok());
    assert!(check_secret_path("/run/secrets/a/b/c").is_ok());
    for bad in [
        "/run/secrets",
        "/run/secrets/",
        "/run/secrets/..",
        "/run/secretsx/a",
        "run/secrets/a",
        "/etc/passwd",
    ] {
        assert!(check_secret_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_zero_mode_is_refused_not_defaulted() {
    let e = err("configs = [{ name = \"c\", path = \"/c\", mode = \"0000\" }]\n");
    assert!(
        e.contains("configs[0].mode: ") && e.contains("no one"),
        "{e}"
    );
}
