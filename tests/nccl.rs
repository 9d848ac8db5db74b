//! NCCL through `cudarc` (`--features mpi,cuda`; `.ci/gpu-check-mpi.sh` runs
//! these after `source .ci/deps-nccl.sh`). On a machine without a GPU they
//! check the errors that say what is missing; on a GPU machine they join a
//! communicator of one rank and sum a device buffer with it.

use cudarc::driver::result as cuda;
use ldam_onnx::distributed::nccl::{self, Nccl};
use ldam_onnx::distributed::World;

/// The release `.ci/deps-nccl.sh` installs (nvidia-nccl-cu13 2.29.7).
const PINNED: i32 = 22907;

fn wheel_on_library_path() -> bool {
    std::env::var("LD_LIBRARY_PATH").is_ok_and(|p| p.contains(".deps/nccl"))
}

fn gpu_driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[test]
fn nccl_loads_from_the_pinned_wheel_or_says_how_to_install_it() {
    match nccl::version() {
        Ok(version) => assert_eq!(version, PINNED, "an NCCL other than the pinned wheel's"),
        Err(e) => {
            assert!(
                !wheel_on_library_path(),
                "NCCL is on LD_LIBRARY_PATH but does not load: {e}"
            );
            let message = e.to_string();
            assert!(
                message.contains("nvidia-nccl-cu13") && message.contains("deps-nccl.sh"),
                "{message}"
            );
        }
    }
}

#[test]
fn one_rank_sums_a_gpu_buffer_in_place_or_names_what_is_missing() {
    let world = World::single();
    if !gpu_driver_present() {
        let error = Nccl::new(&world, 0).err().expect("no driver, no NCCL");
        assert!(error.to_string().contains("libcuda.so.1"), "{error}");
        return;
    }
    let nccl = Nccl::new(&world, 0).unwrap();
    let values = [1.5f32, -2.0, 3.25, 0.0, 1e-30];
    // SAFETY: a buffer of `values.len()` float32 values on the current GPU,
    // used only here and freed at the end.
    unsafe {
        let buffer = cuda::malloc_sync(std::mem::size_of_val(&values)).unwrap();
        cuda::memcpy_htod_sync(buffer, &values[..]).unwrap();
        nccl.sum_in_place(buffer as *mut std::ffi::c_void, values.len())
            .unwrap();
        let mut back = [0.0f32; 5];
        cuda::memcpy_dtoh_sync(&mut back[..], buffer).unwrap();
        // One rank: the sum is the rank's own buffer, to the bit.
        assert_eq!(back, values);
        nccl.zero(buffer as *mut std::ffi::c_void, values.len())
            .unwrap();
        cuda::memcpy_dtoh_sync(&mut back[..], buffer).unwrap();
        assert_eq!(back, [0.0; 5]);
        cuda::free_sync(buffer).unwrap();
    }
}
