//! `berth image pull REF`: fetch an image from a registry into the store.

use std::io::BufRead;

use anyhow::{Context as _, bail};
use berth_images::Reference;
use berth_images::registry::{Credentials, Platform, PullOptions, pull};
use serde::Serialize;

use crate::Context;
use crate::output::{OutputFormat, print_json};

/// Where credentials come from when no flag gives them.
const USERNAME_ENV: &str = "BERTH_REGISTRY_USERNAME";
const PASSWORD_ENV: &str = "BERTH_REGISTRY_PASSWORD";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `[registry[:port]/]repository[:tag][@sha256:digest]`; the image is named this locally.
    reference: String,
    /// Speak plain HTTP to the registry (loopback registries always get plain HTTP).
    #[arg(long)]
    plain_http: bool,
    #[command(flatten)]
    login: Login,
    /// The platform to pick out of a multi-platform image.
    #[arg(long, default_value_t = Platform::default())]
    platform: Platform,
}

/// Registry credentials, as pull and push take them.
#[derive(Debug, clap::Args)]
pub(super) struct Login {
    /// Registry user name.
    #[arg(long, short, env = USERNAME_ENV)]
    username: Option<String>,
    /// Read the password from the first line of stdin (else from BERTH_REGISTRY_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    digest: String,
    config: String,
    layers: usize,
    platform: String,
    blobs_downloaded: usize,
    blobs_present: usize,
}

pub(super) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let credentials = args.login.credentials()?;
    let store = super::open_store(ctx)?;
    let options = PullOptions {
        platform: args.platform,
        plain_http: args.plain_http,
        credentials,
    };
    let progress = crate::progress::for_terminal();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pulled = runtime.block_on(pull(&store, &reference, &options, progress.as_ref()))?;
    let image = &pulled.image;
    let summary = Summary {
        name: image.name.clone(),
        digest: image.digest().to_string(),
        config: image.manifest.config().digest().to_string(),
        layers: image.manifest.layers().len(),
        platform: format!("{}/{}", image.config.os(), image.config.architecture()),
        blobs_downloaded: pulled.blobs_downloaded,
        blobs_present: pulled.blobs_present,
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&summary),
        OutputFormat::Table => {
            println!("Pulled: {}", summary.name);
            println!("Digest: {}", summary.digest);
            Ok(())
        }
    }
}

impl Login {
    /// The user name from the flag or environment, and the password from stdin or environment.
    pub(super) fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        } else {
            std::env::var(PASSWORD_ENV).ok()
        };
        match (&self.username, password) {
            (Some(username), Some(password)) => Ok(Some(Credentials {
                username: username.clone(),
                password,
            })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                bail!("--username needs a password: pass --password-stdin or set {PASSWORD_ENV}")
            }
            (None, Some(_)) => {
                bail!(
                    "a password was given without a user name: pass --username or set {USERNAME_ENV}"
                )
            }
        }
    }
}
