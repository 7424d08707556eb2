//! gRPC server reflection for berth's daemons in both protocol versions: `grpc.reflection.v1`
//! and `grpc.reflection.v1alpha`, which Python's grpcio-reflection, Postman, Evans and older
//! grpcurl still speak (they get UNIMPLEMENTED from a v1-only server).

use tonic::transport::server::Router;
use tonic_reflection::server::{Builder, Error};

/// Adds both reflection services to `router`. Each describes berth.v1, `grpc.health.v1` and
/// both reflection services, so a client of either version lists every service the daemon
/// serves (tonic's builder would otherwise list only its own version).
pub fn add_to<L>(router: Router<L>) -> Result<Router<L>, Error> {
    let described = || {
        Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok(router
        .add_service(described().build_v1()?)
        .add_service(described().build_v1alpha()?))
}
