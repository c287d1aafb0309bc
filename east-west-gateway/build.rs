//! Compiles the gateway discovery API with protox (pure Rust), so a build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/isthmus/gateway/v1/gateway.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Identity holds the private key: its Debug is written by hand in api.rs.
        .skip_debug([".isthmus.gateway.v1.Identity"])
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
