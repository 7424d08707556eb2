//! ConfigService and SecretService over `files::Files`: each handler decodes, calls the domain and encodes. No reply carries a secret's value, and requests are never logged (their Debug prints lengths only anyway).

use std::path::Path;

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::config_service_server::{ConfigService, ConfigServiceServer};
use berth_proto::v1::secret_service_server::{SecretService, SecretServiceServer};
use berth_proto::v1::{
    DeleteFileRequest, DeleteFileResponse, FileInfo, GetConfigResponse, GetFileRequest,
    ListFilesRequest, ListFilesResponse, PutFileRequest, RotateSecretsKeyRequest,
    RotateSecretsKeyResponse, UpdateFileResponse,
};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::audit::{Audit, who};
use crate::clock::now_ms;
use crate::deployments::Deployments;
use crate::files::{Files, Kind, Updated};

/// Both services: configs and secrets share the domain and the deployments they roll.
#[derive(Debug, Clone)]
pub(crate) struct FilesApi {
    pub files: Files,
    pub deployments: Deployments,
    /// Updates that roll deployments append an "apply" entry per deployment.
    pub audit: Audit,
}

impl FilesApi {
    /// The two services, with the scheduler's message size limits (a 1 MiB value fits).
    pub(crate) fn services(self) -> (ConfigServiceServer<FilesApi>, SecretServiceServer<FilesApi>) {
        let configs = ConfigServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let secrets = SecretServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        (configs, secrets)
    }

    async fn create(&self, kind: Kind, req: PutFileRequest) -> Result<FileInfo, Status> {
        // A secret's bytes are wiped once sealed.
        let data = Zeroizing::new(req.data);
        Ok(self.files.create(kind, &req.name, &data, now_ms()).await?)
    }

    async fn update(
        &self,
        kind: Kind,
        who: String,
        req: PutFileRequest,
    ) -> Result<UpdateFileResponse, Status> {
        let data = Zeroizing::new(req.data);
        let Updated {
            info,
            changed,
            rolled,
        } = self
            .files
            .update(kind, &req.name, &data, &self.deployments, now_ms())
            .await?;
        // Names and versions only: an entry never carries the value.
        let detail = format!("{} {} v{}", kind.noun(), info.name, info.version);
        self.audit
            .record_rolled(&self.deployments, &who, &detail, &rolled)
            .await;
        Ok(UpdateFileResponse {
            info: Some(info),
            changed,
            rolled,
        })
    }

    async fn list(&self, kind: Kind) -> Result<ListFilesResponse, Status> {
        Ok(ListFilesResponse {
            files: self.files.list(kind).await?,
        })
    }

    async fn delete(
        &self,
        kind: Kind,
        req: DeleteFileRequest,
    ) -> Result<DeleteFileResponse, Status> {
        self.files.delete(kind, &req.name).await?;
        Ok(DeleteFileResponse {})
    }
}

#[tonic::async_trait]
impl ConfigService for FilesApi {
    async fn create_config(
        &self,
        request: Request<PutFileRequest>,
    ) -> Result<Response<FileInfo>, Status> {
        Ok(Response::new(
            self.create(Kind::Config, request.into_inner()).await?,
        ))
    }

    async fn update_config(
        &self,
        request: Request<PutFileRequest>,
    ) -> Result<Response<UpdateFileResponse>, Status> {
        Ok(Response::new(
            self.update(
                Kind::Config,
                who(request.extensions()),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn get_config(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let req = request.into_inner();
        let (info, data) = self.files.get(Kind::Config, &req.name, req.version).await?;
        Ok(Response::new(GetConfigResponse {
            info: Some(info),
            data,
        }))
    }

    async fn list_configs(
        &self,
        _request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        Ok(Response::new(self.list(Kind::Config).await?))
    }

    async fn delete_config(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        Ok(Response::new(
            self.delete(Kind::Config, request.into_inner()).await?,
        ))
    }
}

#[tonic::async_trait]
impl SecretService for FilesApi {
    async fn create_secret(
        &self,
        request: Request<PutFileRequest>,
    ) -> Result<Response<FileInfo>, Status> {
        Ok(Response::new(
            self.create(Kind::Secret, request.into_inner()).await?,
        ))
    }

    async fn update_secret(
        &self,
        request: Request<PutFileRequest>,
    ) -> Result<Response<UpdateFileResponse>, Status> {
        Ok(Response::new(
            self.update(
                Kind::Secret,
                who(request.extensions()),
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn get_secret(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<FileInfo>, Status> {
        let req = request.into_inner();
        let (info, _) = self.files.get(Kind::Secret, &req.name, req.version).await?;
        Ok(Response::new(info))
    }

    async fn list_secrets(
        &self,
        _request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        Ok(Response::new(self.list(Kind::Secret).await?))
    }

    async fn delete_secret(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        Ok(Response::new(
            self.delete(Kind::Secret, request.into_inner()).await?,
        ))
    }

    async fn rotate_secrets_key(
        &self,
        request: Request<RotateSecretsKeyRequest>,
    ) -> Result<Response<RotateSecretsKeyResponse>, Status> {
        let req = request.into_inner();
        let rotated = self.files.rotate(Path::new(&req.new_key_file)).await?;
        Ok(Response::new(RotateSecretsKeyResponse {
            old_key_id: rotated.old_key_id,
            new_key_id: rotated.new_key_id,
            rewrapped: rotated.rewrapped,
        }))
    }
}
