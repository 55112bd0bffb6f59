//! Compiles the AxonServer `.proto` files with protox (no `protoc` needed)
//! and generates prost messages plus tonic clients and servers.

const PROTO_DIR: &str = "proto";
const PROTO_FILES: [&str; 5] = [
    "common.proto",
    "control.proto",
    "command.proto",
    "query.proto",
    "event.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{file}");
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_DIR])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
