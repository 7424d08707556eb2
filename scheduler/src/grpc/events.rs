//! EventService: the cluster's event log as a server stream (`events`). The handler decodes,
//! subscribes to the log and encodes.

use berth_proto::MAX_MESSAGE_BYTES;
use berth_proto::v1::event_service_server::{EventService, EventServiceServer};
use berth_proto::v1::{Event, EventsRequest};
use futures::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::BoxStream;
use crate::events::EventLog;

#[derive(Debug, Clone)]
pub(crate) struct EventApi {
    pub log: EventLog,
}

impl EventApi {
    /// The service, with the scheduler's message size limits.
    pub(crate) fn service(self) -> EventServiceServer<EventApi> {
        EventServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type EventsStream = BoxStream<Event>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let feed = self.log.subscribe(&request.into_inner()).await?;
        let stream = ReceiverStream::new(feed).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
