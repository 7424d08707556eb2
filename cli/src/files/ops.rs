//! The calls that ConfigService and SecretService share (create, update, list, delete), made
//! once for both: `Kind` picks the service.

use std::fmt;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::config_service_client::ConfigServiceClient;
use berth_proto::v1::secret_service_client::SecretServiceClient;
use berth_proto::v1::{DeleteFileRequest, ListFilesRequest, PutFileRequest};
use tonic::Response;

use super::show::{print_created, print_list, print_updated};
use super::{PutArgs, ValueSource};
use crate::Context;
use crate::auth::AuthChannel;
use crate::cluster::status_error;
use crate::output::{OutputFormat, print_json};

/// Which of the two a command manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Config,
    Secret,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Secret => "secret",
        })
    }
}

type Configs = ConfigServiceClient<AuthChannel>;
type Secrets = SecretServiceClient<AuthChannel>;

/// Runs `f` with both clients on one channel to the scheduler.
fn with_clients<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(Configs, Secrets) -> Result<Response<T>, tonic::Status>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        let channel = crate::cluster::channel(ctx.scheduler()).await?;
        let configs = ConfigServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let secrets = SecretServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        f(configs, secrets)
            .await
            .map(Response::into_inner)
            .map_err(status_error)
    })
}

/// Runs one ConfigService call.
pub(crate) fn with_configs<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(Configs) -> Result<Response<T>, tonic::Status>,
) -> anyhow::Result<T> {
    with_clients(ctx, async |configs, _| f(configs).await)
}

/// Runs one SecretService call.
pub(crate) fn with_secrets<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(Secrets) -> Result<Response<T>, tonic::Status>,
) -> anyhow::Result<T> {
    with_clients(ctx, async |_, secrets| f(secrets).await)
}

/// The request carrying the value read from `source`, which is moved into it rather than
/// copied: tonic encodes the request into its own buffers and drops it, which no caller can
/// wipe, while every buffer of ours is `Zeroizing`.
/// An empty secret is refused: it is almost always an unset variable piped in
/// (`printf %s "$PW"`), and a container would start with no credential at all.
fn put_request(kind: Kind, name: String, source: &ValueSource) -> anyhow::Result<PutFileRequest> {
    let mut data = source.read(&format!("{kind} {name}"))?;
    if kind == Kind::Secret && data.is_empty() {
        return Err(super::invalid(format!(
            "secret {name}: the value is empty (nothing was read from the file or standard input)"
        )));
    }
    Ok(PutFileRequest {
        name,
        data: std::mem::take(&mut *data),
    })
}

/// `create NAME [--from-file F | -]`.
pub(crate) fn create(ctx: &Context, kind: Kind, args: PutArgs) -> anyhow::Result<()> {
    let request = put_request(kind, args.name, &args.source)?;
    let info = with_clients(ctx, async |mut configs, mut secrets| match kind {
        Kind::Config => configs.create_config(request).await,
        Kind::Secret => secrets.create_secret(request).await,
    })?;
    print_created(kind, ctx.output(), info)
}

/// `update NAME [--from-file F | -]`: prints the new version and the deployments rolled.
pub(crate) fn update(ctx: &Context, kind: Kind, args: PutArgs) -> anyhow::Result<()> {
    let name = args.name.clone();
    let request = put_request(kind, args.name, &args.source)?;
    let reply = with_clients(ctx, async |mut configs, mut secrets| match kind {
        Kind::Config => configs.update_config(request).await,
        Kind::Secret => secrets.update_secret(request).await,
    })?;
    print_updated(kind, &name, ctx.output(), reply)
}

/// `ls`.
pub(crate) fn list(ctx: &Context, kind: Kind) -> anyhow::Result<()> {
    let reply = with_clients(ctx, async |mut configs, mut secrets| match kind {
        Kind::Config => configs.list_configs(ListFilesRequest {}).await,
        Kind::Secret => secrets.list_secrets(ListFilesRequest {}).await,
    })?;
    print_list(ctx.output(), reply.files)
}

/// `rm NAME`.
pub(crate) fn remove(ctx: &Context, kind: Kind, name: String) -> anyhow::Result<()> {
    let request = DeleteFileRequest { name: name.clone() };
    with_clients(ctx, async |mut configs, mut secrets| match kind {
        Kind::Config => configs.delete_config(request).await,
        Kind::Secret => secrets.delete_secret(request).await,
    })?;
    match ctx.output() {
        OutputFormat::Json => print_json(&serde_json::json!({ "removed": name })),
        OutputFormat::Table => {
            println!("removed {kind} {name}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_secret_is_refused_an_empty_config_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let source = ValueSource {
            from_file: Some(empty),
            stdin: None,
        };
        let err = put_request(Kind::Secret, "db".into(), &source).unwrap_err();
        let text = crate::chain(&err);
        assert!(
            text.contains("secret db") && text.contains("empty"),
            "{text}"
        );
        assert_eq!(
            crate::exit::kind_of(&err),
            berth_proto::errors::ErrorKind::InvalidArgument
        );
        let request = put_request(Kind::Config, "c".into(), &source).unwrap();
        assert!(request.data.is_empty());
    }
}
