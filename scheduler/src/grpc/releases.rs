//! ReleaseService: promotion (`promote`), what runs where (`releases`) and the audit log
//! (`audit`). The handlers decode, call the domain and encode.

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::deployments::DeployApi;
use crate::audit;

#[derive(Debug, Clone)]
pub(crate) struct ReleaseApi {
    /// Promotion applies through the same path as DeploymentService.Apply; the lists read the
    /// same deployments, and every promotion is audited like an Apply.
    pub deploy: DeployApi,
}

impl ReleaseApi {
    /// The service, with the scheduler's message size limits.
    pub(crate) fn service(self) -> ReleaseServiceServer<ReleaseApi> {
        ReleaseServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        let who = audit::who(request.extensions());
        let reply = self
            .deploy
            .promote_audited(who, request.into_inner())
            .await?;
        Ok(Response::new(reply))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        let app = request.into_inner().app;
        let api = &self.deploy;
        let mut deployments = Vec::new();
        for name in api.deployments.names().await? {
            deployments.push(api.controller.current(&name).await?);
        }
        let store = api.controller.store.as_ref();
        Ok(Response::new(
            crate::releases::list(store, &app, &deployments).await?,
        ))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let entries = self.deploy.audit.list(&request.into_inner()).await?;
        Ok(Response::new(ListAuditResponse { entries }))
    }
}
