//! Generates the Rust wire types and tonic stubs from `proto/hearth/v1/*.proto`.
//!
//! `protox` parses the `.proto` files in pure Rust, so building Hearth needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/hearth/v1/federation.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Model and update chunks are large: `Bytes` lets a server slice one buffer into chunks without copying.
        .bytes(".hearth.v1")
        .compile_fds(fds)?;
    Ok(())
}
