//! `berth certs node|scheduler|client NAME`: a key and a certificate signed by the cluster CA,
//! carrying the holder's name (CN) and berth role (O=berth:<role>).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context as _, bail};
use berth_proto::tls::{CA_CERT_FILE, CA_KEY_FILE, Role, TlsFiles};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use super::{CommonArgs, Written, create_dir, refuse_existing, rfc3339, write_atomic};
use crate::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// The node's or scheduler's name: its certificate's CN and a DNS name in it.
    #[arg(value_parser = parse_name)]
    name: String,
    /// An IP address peers dial it on (repeatable); 127.0.0.1 is always included.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// A DNS name peers dial it by (repeatable); localhost is always included.
    #[arg(long = "dns", value_name = "NAME", value_parser = parse_dns_name)]
    dns_names: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The client's name (a person or a pipeline): its certificate's CN.
    #[arg(value_parser = parse_name)]
    name: String,
    /// What the client may do.
    #[arg(long, value_enum, default_value_t = ClientRole::Deployer)]
    role: ClientRole,
    #[command(flatten)]
    common: CommonArgs,
}

/// The roles a client certificate may carry; node and scheduler have their own subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientRole {
    /// Everything.
    Admin,
    /// Deploy, scale, roll back, approve.
    Deployer,
    /// Read only.
    Viewer,
}

impl From<ClientRole> for Role {
    fn from(role: ClientRole) -> Role {
        match role {
            ClientRole::Admin => Role::Admin,
            ClientRole::Deployer => Role::Deployer,
            ClientRole::Viewer => Role::Viewer,
        }
    }
}

pub(super) fn run_server(args: ServerArgs, role: Role, ctx: &Context) -> anyhow::Result<()> {
    // Loopback names always, so a one-machine cluster dials 127.0.0.1 or localhost as is.
    let mut dns_names = Vec::new();
    // A NAME with '_' is a fine CN but no DNS name; leave it out of the SANs then.
    if parse_dns_name(&args.name).is_ok() {
        dns_names.push(args.name.to_ascii_lowercase());
    }
    dns_names.extend(args.dns_names.iter().map(|d| d.to_ascii_lowercase()));
    dns_names.push("localhost".to_string());
    dedup(&mut dns_names);
    let mut ips = args.ips.clone();
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    dedup(&mut ips);
    issue(Leaf {
        name: &args.name,
        role,
        // Agents serve logs/exec and dial the scheduler; schedulers serve and dial agents.
        usages: vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        dns_names,
        ips,
        common: &args.common,
        ctx,
    })
}

pub(super) fn run_client(args: ClientArgs, ctx: &Context) -> anyhow::Result<()> {
    issue(Leaf {
        name: &args.name,
        role: args.role.into(),
        usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        dns_names: Vec::new(),
        ips: Vec::new(),
        common: &args.common,
        ctx,
    })
}

struct Leaf<'a> {
    name: &'a str,
    role: Role,
    usages: Vec<ExtendedKeyUsagePurpose>,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    common: &'a CommonArgs,
    ctx: &'a Context,
}

fn issue(leaf: Leaf<'_>) -> anyhow::Result<()> {
    let common = leaf.common;
    let dir = common.dir(leaf.ctx);
    let files = TlsFiles::for_role(&dir, leaf.role, leaf.name);
    refuse_existing(
        &[&files.cert, &files.key],
        common.force,
        "a certificate already issued",
    )?;
    let (ca_pem, ca_key) = load_ca(&dir)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("reading the CA certificate {}", files.ca.display()))?;

    let (not_before, not_after) = common.validity()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, leaf.name);
    name.push(DnType::OrganizationName, leaf.role.organization());
    params.distinguished_name = name;
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = leaf.usages;
    params.use_authority_key_identifier_extension = true;
    for dns in &leaf.dns_names {
        let dns = dns
            .clone()
            .try_into()
            .with_context(|| format!("{dns:?} is not a DNS name"))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(leaf.ips.iter().copied().map(SanType::IpAddress));

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    create_dir(&dir)?;
    write_atomic(
        &files.key,
        key.serialize_pem().as_bytes(),
        0o600,
        common.force,
    )?;
    write_atomic(&files.cert, cert.pem().as_bytes(), 0o644, common.force)?;

    Written {
        kind: leaf.role.file_prefix(),
        common_name: leaf.name.to_string(),
        role: Some(leaf.role.as_str()),
        cert: files.cert,
        key: files.key,
        ca: files.ca,
        not_before: rfc3339(not_before)?,
        not_after: rfc3339(not_after)?,
        dns_names: leaf.dns_names,
        ip_addresses: leaf.ips.iter().map(IpAddr::to_string).collect(),
        secrets_key: None,
    }
    .print(leaf.ctx.output())
}

/// The CA certificate (PEM) and its key, checked to belong together and to be still valid, so
/// a mismatch fails here rather than at a peer's handshake.
fn load_ca(dir: &Path) -> anyhow::Result<(String, KeyPair)> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let read = |path: &Path| match fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: run `berth certs init` first (with the same --dir) to create \
             the cluster CA",
            path.display()
        ),
        other => other.with_context(|| format!("reading {}", path.display())),
    };
    let key_pem = read(&key_path)?;
    let cert_pem = read(&cert_path)?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a usable private key", key_path.display()))?;

    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    let ca = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", cert_path.display()))?;
    if ca.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key) {
        bail!(
            "{} is not the key of {}: the CA files do not belong together",
            key_path.display(),
            cert_path.display()
        );
    }
    if !ca.validity().is_valid() {
        bail!(
            "the CA {} is not valid now (valid {} to {}): create a new one with `berth certs \
             init --force` and reissue every certificate",
            cert_path.display(),
            ca.validity().not_before,
            ca.validity().not_after
        );
    }
    Ok((cert_pem, key))
}

/// NAME becomes a file name and a CN: letters, digits, '-', '.', '_', at most 63, starting with
/// a letter or digit (no hidden files, nothing clap or a shell would take for an option).
fn parse_name(name: &str) -> Result<String, String> {
    let explain = "names are 1 to 63 letters, digits, '-', '.' or '_', starting with a letter \
                   or digit";
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if name.len() > 63 || !first_ok || !chars_ok {
        return Err(format!("invalid name {name:?}: {explain}"));
    }
    Ok(name.to_string())
}

/// A host name as it may appear in a DNS SAN: dot-separated labels of letters, digits and '-'.
fn parse_dns_name(name: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "invalid DNS name {name:?}: dot-separated labels of letters, digits and '-'"
        ));
    }
    Ok(name.to_string())
}

/// Removes repeats, keeping the first of each in order (SAN lists are short).
fn dedup<T: PartialEq>(items: &mut Vec<T>) {
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    *items = unique;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["n1", "node-1.example", "ci_bot", "a", &"x".repeat(63)] {
            assert!(parse_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-n",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            let err = parse_name(bad).unwrap_err();
            assert!(err.contains("invalid name"), "{bad}: {err}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(parse_dns_name("node-1.cluster.local").is_ok());
        for bad in ["a..b", "-a", "a-", "ci_bot", "", "a.", "*.x"] {
            assert!(parse_dns_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dedup_keeps_first_order() {
        let mut v = vec!["b", "a", "b", "c", "a"];
        dedup(&mut v);
        assert_eq!(v, ["b", "a", "c"]);
    }
}
