//! `berth token create|ls|revoke`: bearer tokens for pipelines and people, kept (hashed) by
//! the scheduler. Once the scheduler runs with TLS only admins may manage them.

use std::time::Duration;

use berth_proto::v1::auth_service_client::AuthServiceClient;
use berth_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, TokenInfo};
use clap::Subcommand;
use serde::Serialize;

use crate::Context;
use crate::auth::AuthChannel;
use crate::cluster;
use crate::output::{OutputFormat, print_json, print_rows, timestamp};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it (this once: the scheduler keeps only its hash).
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    Ls(ListArgs),
    /// Revoke a token: calls with it are refused from now on.
    Revoke(RevokeArgs),
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokenRole {
    /// Everything, tokens included.
    Admin,
    /// Deploy, scale, roll back, approve, delete; read.
    Deployer,
    /// Read only.
    Viewer,
}

impl TokenRole {
    fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Deployer => "deployer",
            TokenRole::Viewer => "viewer",
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    #[arg(long, value_enum)]
    role: TokenRole,
    /// Who or what holds it (e.g. the pipeline), shown in listings and the scheduler's log.
    #[arg(long, default_value = "")]
    name: String,
    /// How long it is valid (like 90m, 12h, 30d); 0 for ever.
    #[arg(long, default_value = "30d", value_parser = parse_ttl)]
    ttl: Duration,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// The token's id (the part after `berth_`, as `berth token ls` shows it).
    id: String,
}

pub(crate) fn run(command: TokenCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => create(args, ctx),
        TokenCommand::Ls(args) => list(args, ctx),
        TokenCommand::Revoke(args) => revoke(args, ctx),
    }
}

/// `30d` as well as whatever `--timeout` takes (`90s`, `12h`, `1h30m`); 0 for ever. A TTL
/// under a second is refused: it is no useful lifetime, and sent in whole seconds it would
/// become 0, which means never.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = if let Some(days) = text.trim().strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (like \"12h\" or \"30d\")"))?;
        Duration::from_secs(days.saturating_mul(86_400))
    } else {
        cluster::spec::parse_duration(text)?
    };
    if !ttl.is_zero() && ttl < Duration::from_secs(1) {
        return Err(format!(
            "{text:?} is under one second: a token lives at least 1s (0 for ever)"
        ));
    }
    Ok(ttl)
}

/// Runs `f` with a client of the scheduler's AuthService.
fn with_auth_client<T>(
    ctx: &Context,
    f: impl AsyncFnOnce(AuthServiceClient<AuthChannel>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::remote::block_on(async {
        f(AuthServiceClient::new(
            cluster::channel(ctx.scheduler()).await?,
        ))
        .await
    })
}

#[derive(Debug, Serialize)]
struct Created {
    id: String,
    token: String,
    role: String,
    name: String,
    /// RFC 3339, or "never".
    expires: String,
}

fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    let name = args.name.clone();
    let reply = with_auth_client(ctx, async |mut client| {
        client
            .create_token(CreateTokenRequest {
                role: args.role.as_str().to_string(),
                name: args.name,
                // Both: ttl_ms keeps what whole seconds would truncate; a scheduler older
                // than ttl_ms reads ttl_seconds.
                ttl_seconds: args.ttl.as_secs(),
                ttl_ms: u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX),
            })
            .await
            .map_err(cluster::status_error)
            .map(tonic::Response::into_inner)
    })?;
    let created = Created {
        id: reply.id,
        token: reply.token,
        role: reply.role,
        name,
        expires: timestamp(reply.expires_at_ms),
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&created),
        OutputFormat::Table => {
            println!("{}", created.token);
            eprintln!(
                "token {} ({}) expires {}; it is shown this once, keep it secret",
                created.id, created.role, created.expires
            );
            Ok(())
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    role: String,
    name: String,
    created: String,
    expires: String,
}

impl From<TokenInfo> for Row {
    fn from(t: TokenInfo) -> Self {
        Row {
            id: t.id,
            role: t.role,
            name: t.name,
            created: timestamp(t.created_at_ms),
            expires: timestamp(t.expires_at_ms),
        }
    }
}

fn list(_args: ListArgs, ctx: &Context) -> anyhow::Result<()> {
    let tokens = with_auth_client(ctx, async |mut client| {
        client
            .list_tokens(ListTokensRequest {})
            .await
            .map_err(cluster::status_error)
            .map(|r| r.into_inner().tokens)
    })?;
    let rows: Vec<Row> = tokens.into_iter().map(Row::from).collect();
    print_rows(
        ctx.output(),
        &rows,
        &["ID", "ROLE", "NAME", "CREATED", "EXPIRES"],
        |r| {
            vec![
                r.id.clone(),
                r.role.clone(),
                r.name.clone(),
                r.created.clone(),
                r.expires.clone(),
            ]
        },
    )
}

fn revoke(args: RevokeArgs, ctx: &Context) -> anyhow::Result<()> {
    let id = args.id.clone();
    with_auth_client(ctx, async |mut client| {
        client
            .revoke_token(RevokeTokenRequest { id: args.id })
            .await
            .map_err(cluster::status_error)
            .map(|_| ())
    })?;
    println!("revoked token {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_days() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        assert!(parse_ttl("xd").is_err());
        assert!(parse_ttl("soon").is_err());
        assert_eq!(parse_ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_ttl("1s"), Ok(Duration::from_secs(1)));
        for short in ["500ms", "999ms", "1ms"] {
            let err = parse_ttl(short).unwrap_err();
            assert!(err.contains("under one second"), "{short}: {err}");
        }
    }
}
