//! Compiles the .proto files with protox (a pure-Rust protobuf compiler: no protoc
//! needed) into a `FileDescriptorSet`, and generates the Rust code from that set with
//! tonic's prost builder. The encoded descriptor set is also written to `OUT_DIR` for
//! gRPC reflection and tooling.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "proto";
/// The runtime's packages (`concord.transport.v1`, `concord.api.v1`).
const RUNTIME_FILES: &[&str] = &[
    "proto/concord/transport/v1/transport.proto",
    "proto/concord/api/v1/api.proto",
];
/// The coordination service (`concord.v1`), which uses `concord.api.v1`'s messages
/// (its generated code names them `super::api::v1::...`, see `src/lib.rs`).
const SERVICE_FILES: &[&str] = &["proto/concord/v1/service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in RUNTIME_FILES.iter().chain(SERVICE_FILES) {
        println!("cargo:rerun-if-changed={file}");
    }
    let files: Vec<&str> = RUNTIME_FILES.iter().chain(SERVICE_FILES).copied().collect();
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("concord_descriptor_set.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Payloads are `bytes::Bytes`, so converting to and from concord_raft types
        // shares buffers instead of copying them.
        .bytes(".")
        // The rerun lines above cover the inputs; no protoc run to watch.
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
