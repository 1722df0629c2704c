//! Generates the etcd v3 client (`proto/etcd.proto`) and the node-to-node API
//! (`proto/cluster.proto`) with protox, a pure-Rust protobuf compiler, so building needs no
//! `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_dir.join("etcd.proto"),
        proto_dir.join("cluster.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
