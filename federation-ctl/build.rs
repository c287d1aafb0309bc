//! Compiles the peering and control APIs with protox (pure Rust), so a build needs no `protoc`.
//! The gateway discovery API is compiled by east-west-gateway and used from there.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/isthmus/peering/v1/peering.proto",
        "proto/isthmus/control/v1/control.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // The CLI prints the operator views (`status`, `check`, ...) as JSON and YAML as they
        // come: field names follow the proto, times are Unix ms (`*_ms`).
        .message_attribute(".isthmus.control.v1", "#[derive(serde::Serialize)]")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
