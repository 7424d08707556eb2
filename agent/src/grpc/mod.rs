//! The agent's gRPC services: handlers that decode a request, call the node's containers and
//! encode the answer (errors become statuses only through `crate::error`).

pub(crate) mod agent;

pub(crate) use agent::AgentApi;
