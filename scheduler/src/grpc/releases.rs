//! ReleaseService: Promote (see `promote`); ListReleases and ListAudit are not in this build.

use berth_proto::v1::release_service_server::ReleaseService;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use super::deployments::DeployApi;

#[derive(Debug, Clone)]
pub(crate) struct ReleaseApi {
    /// Promotion applies through the same path as DeploymentService.Apply.
    pub deploy: DeployApi,
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        let reply = super::promote::promote(&self.deploy, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn list_releases(
        &self,
        _request: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        Err(Status::unimplemented("ListReleases: not in this build"))
    }

    async fn list_audit(
        &self,
        _request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        Err(Status::unimplemented("ListAudit: not in this build"))
    }
}
