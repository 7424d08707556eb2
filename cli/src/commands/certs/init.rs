//! `berth certs init`: the cluster CA that every node, scheduler and client certificate chains
//! to, and the scheduler's secrets key (`secrets.key`, kept when it exists).

use anyhow::Context as _;
use berth_proto::tls::{CA_CERT_FILE, CA_KEY_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use super::{CommonArgs, Written, create_dir, refuse_existing, rfc3339, write_atomic};
use crate::Context;

/// The CA's subject CN; roles live in leaf certificates only.
const CA_COMMON_NAME: &str = "berth cluster CA";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let common = &args.common;
    let dir = common.dir(ctx);
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    // Replacing a CA silently would orphan every certificate it signed.
    refuse_existing(&[&cert_path, &key_path], common.force, "the cluster CA")?;

    let (not_before, not_after) = common.validity()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "berth");
    params.distinguished_name = name;
    // Path length 0: the CA signs leaf certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;

    create_dir(&dir)?;
    // Key first: a cert without its key is useless, and a later retry with the cert missing
    // still refuses to replace the key without --force.
    write_atomic(
        &key_path,
        key.serialize_pem().as_bytes(),
        0o600,
        common.force,
    )?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644, common.force)?;
    // Never replaced, even with --force: secrets sealed with it would be lost, while a new
    // CA only means issuing certificates again.
    let secrets_key = crate::commands::secret::init_key::ensure_key(
        &dir.join(crate::commands::secret::init_key::SECRETS_KEY_FILE),
    )?;

    Written {
        kind: "ca",
        common_name: CA_COMMON_NAME.to_string(),
        role: None,
        cert: cert_path.clone(),
        key: key_path,
        ca: cert_path,
        not_before: rfc3339(not_before)?,
        not_after: rfc3339(not_after)?,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        secrets_key,
    }
    .print(ctx.output())
}
