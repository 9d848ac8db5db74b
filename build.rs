//! Generates the ONNX message types from the vendored `onnx.proto` (ONNX 1.23.2,
//! Apache-2.0, see `src/onnx/LICENSE-onnx.proto.txt`) with a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/onnx/onnx.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["src/onnx"])?;
    prost_build::Config::new()
        // Tensor payloads decode as zero-copy slices of the file buffer, which keeps
        // peak memory near the file size when patching multi-gigabyte models.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
