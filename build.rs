//! Generates the ONNX message types from the vendored `onnx.proto` (ONNX 1.23.2,
//! Apache-2.0, see `src/onnx/LICENSE-onnx.proto.txt`) with a pure-Rust protobuf
//! compiler, so no `protoc` binary is needed.
//!
//! With the `torch` feature it also sets the run-time library path of the
//! binaries, tests and examples to libtorch's `lib/` folder (an rpath), so they run
//! without `LD_LIBRARY_PATH`; with `torch` and `cuda` it links libtorch's CUDA
//! library, which nothing references by symbol and the linker would otherwise drop.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/onnx/onnx.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["src/onnx"])?;
    prost_build::Config::new()
        // Tensor payloads decode as zero-copy slices of the file buffer, which keeps
        // peak memory near the file size when patching multi-gigabyte models.
        .bytes(["."])
        .compile_fds(descriptors)?;
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        link_libtorch()?;
    }
    Ok(())
}

/// libtorch's `lib/` folder, found the way `torch-sys` finds it: `$LIBTORCH_LIB`
/// or `$LIBTORCH` (plus `/lib`), else the `torch` package of `python3` when
/// `LIBTORCH_USE_PYTORCH` is set, else the system location `/usr/lib`.
fn libtorch_lib_dir() -> Result<PathBuf, Box<dyn std::error::Error>> {
    for var in [
        "LIBTORCH",
        "LIBTORCH_LIB",
        "LIBTORCH_USE_PYTORCH",
        "VIRTUAL_ENV",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(dir) = std::env::var_os("LIBTORCH_LIB").or_else(|| std::env::var_os("LIBTORCH")) {
        return Ok(PathBuf::from(dir).join("lib"));
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let output = std::process::Command::new(python)
            .args([
                "-c",
                "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output()
            .map_err(|e| format!("LIBTORCH_USE_PYTORCH is set but {python} did not run: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "LIBTORCH_USE_PYTORCH is set but `import torch` failed in {python}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        return Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()));
    }
    if std::path::Path::new("/usr/lib/libtorch.so").exists() {
        return Ok(PathBuf::from("/usr/lib"));
    }
    Err(
        "the `torch` feature needs libtorch 2.13.0: run `source .ci/deps-torch.sh` \
         (installs the torch==2.13.0 wheel into .deps/torch and sets LIBTORCH), or set \
         LIBTORCH_USE_PYTORCH=1 with a python3 that has torch==2.13.0"
            .into(),
    )
}

fn link_libtorch() -> Result<(), Box<dyn std::error::Error>> {
    let lib = libtorch_lib_dir()?;
    let lib = lib.canonicalize().unwrap_or(lib);
    // libtorch_cpu finds its CUDA runtime companions through its own rpath
    // ($ORIGIN/../../nvidia/...), so libtorch's folder is the only one needed.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    Ok(())
}
