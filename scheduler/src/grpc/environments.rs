//! EnvironmentService: create, list and delete environments (`environments::Environments`).

use berth_proto::v1::environment_service_server::EnvironmentService;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::environments::Environments;
use crate::error::SchedError;

#[derive(Debug, Clone)]
pub(crate) struct EnvironmentApi {
    pub environments: Environments,
}

#[tonic::async_trait]
impl EnvironmentService for EnvironmentApi {
    async fn create_environment(
        &self,
        request: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        let env = request
            .into_inner()
            .environment
            .ok_or_else(|| SchedError::invalid("environment", "missing"))?;
        Ok(Response::new(
            self.environments.create(env, now_ms()).await?,
        ))
    }

    async fn list_environments(
        &self,
        _request: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsResponse>, Status> {
        let environments = self.environments.list().await?;
        Ok(Response::new(ListEnvironmentsResponse { environments }))
    }

    async fn delete_environment(
        &self,
        request: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteEnvironmentResponse>, Status> {
        self.environments.delete(&request.into_inner().name).await?;
        Ok(Response::new(DeleteEnvironmentResponse {}))
    }
}
