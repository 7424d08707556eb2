//! ReleaseService: what runs where (`releases`) and the audit log (`audit`). The handlers
//! decode, call the domain and encode.

use std::sync::Arc;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::audit::Audit;
use crate::controller::Controller;
use crate::deployments::Deployments;

#[derive(Debug, Clone)]
pub(crate) struct ReleaseApi {
    pub deployments: Deployments,
    pub controller: Arc<Controller>,
    pub audit: Audit,
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
        _request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        Err(Status::unimplemented("Promote: not in this build"))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        let app = request.into_inner().app;
        let mut deployments = Vec::new();
        for name in self.deployments.names().await? {
            deployments.push(self.controller.current(&name).await?);
        }
        let store = self.controller.store.as_ref();
        Ok(Response::new(
            crate::releases::list(store, &app, &deployments).await?,
        ))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let entries = self.audit.list(&request.into_inner()).await?;
        Ok(Response::new(ListAuditResponse { entries }))
    }
}
