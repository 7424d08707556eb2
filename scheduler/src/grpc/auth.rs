//! AuthService: token management over `auth::Tokens`. The auth layer lets admins only
//! through once TLS is on.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::auth_service_server::{AuthService, AuthServiceServer};
use berth_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse,
    RevokeTokenRequest, RevokeTokenResponse, TokenInfo,
};
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Tokens};
use crate::records::TokenRecord;
use crate::store::Store;

/// AuthService over the store's tokens.
pub(crate) fn token_service(store: Arc<dyn Store>) -> AuthServiceServer<TokenApi> {
    AuthServiceServer::new(TokenApi {
        tokens: Tokens::new(store),
    })
}

fn info(record: TokenRecord) -> TokenInfo {
    TokenInfo {
        id: record.id,
        role: record.role,
        name: record.name,
        created_at_ms: record.created_at_ms,
        expires_at_ms: record.expires_at_ms,
    }
}

/// The lifetime a CreateToken request asks for (None: never): `ttl_ms` when set, which
/// keeps what whole seconds would round down to 0 (never), else `ttl_seconds`.
pub(crate) fn requested_ttl(req: &CreateTokenRequest) -> Option<Duration> {
    match (req.ttl_ms, req.ttl_seconds) {
        (0, 0) => None,
        (0, secs) => Some(Duration::from_secs(secs)),
        (ms, _) => Some(Duration::from_millis(ms)),
    }
}

/// AuthService: token management. The auth layer lets admins only through once TLS is on.
#[derive(Debug, Clone)]
pub(crate) struct TokenApi {
    pub tokens: Tokens,
}

#[tonic::async_trait]
impl AuthService for TokenApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let by = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        let created = self
            .tokens
            .create(&req.role, &req.name, requested_ttl(&req))
            .await?;
        tracing::info!(
            id = %created.record.id,
            role = %created.record.role,
            name = %created.record.name,
            by = %by.map_or_else(|| "loopback".to_string(), |c| c.to_string()),
            "token created"
        );
        Ok(Response::new(CreateTokenResponse {
            id: created.record.id,
            token: created.token,
            role: created.record.role,
            expires_at_ms: created.record.expires_at_ms,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let tokens = self.tokens.list().await?.into_iter().map(info).collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let by = request.extensions().get::<Caller>().cloned();
        let id = request.into_inner().id;
        self.tokens.revoke(&id).await?;
        tracing::info!(
            %id,
            by = %by.map_or_else(|| "loopback".to_string(), |c| c.to_string()),
            "token revoked"
        );
        Ok(Response::new(RevokeTokenResponse {}))
    }
}
