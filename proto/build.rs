//! Generates the berth.v1 messages and tonic services from proto/ with Debian's protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/berth/v1/types.proto",
        "proto/berth/v1/node.proto",
        "proto/berth/v1/agent.proto",
        "proto/berth/v1/deploy.proto",
        "proto/berth/v1/auth.proto",
        "proto/berth/v1/events.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("berth_v1_descriptor.bin"))
        // Messages that carry config or secret values: their Debug (src/redact.rs) prints
        // lengths, so no log line can hold a value.
        .skip_debug(["berth.v1.FileContent", "berth.v1.PutFileRequest"])
        // Sorted maps: a message encodes to the same bytes every time, so a release id (a
        // digest of a spec) is stable.
        .btree_map(".")
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
