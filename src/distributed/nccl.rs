//! NCCL between the ranks' GPUs (`--features mpi,cuda`): the fused gradient
//! buffer is summed where ONNX Runtime's CUDA provider left it, in device
//! memory, as Horovod and PyTorch's DistributedDataParallel do. MPI stays the
//! launcher and the control channel: rank 0 creates NCCL's unique id and the
//! world broadcasts it over MPI before every rank joins the communicator.
//!
//! NCCL and the CUDA driver are loaded at run time through `cudarc`: the
//! build needs neither, and a machine without them gets an error naming the
//! library, not a missing symbol at start. NCCL comes from the
//! `nvidia-nccl-cu13` wheel (the one torch's CUDA 13 build depends on); its
//! file is `libnccl.so.2`, which `cudarc` looks for as `libnccl.so`, so a link
//! of that name must be on `LD_LIBRARY_PATH` (`.ci/deps-nccl.sh` makes one).

use super::World;
use crate::error::{Error, Result};
use cudarc::driver::{result as cuda, sys as cuda_sys};
use cudarc::nccl::{result as nccl, sys as nccl_sys};
use std::ffi::c_void;

/// One rank's member of the world's NCCL communicator, on its GPU.
pub struct Nccl {
    comm: nccl_sys::ncclComm_t,
    ordinal: usize,
}

/// NCCL's version as a number (2.29.7 is 22907); needs only the library.
pub fn version() -> Result<i32> {
    require_nccl()?;
    nccl::get_nccl_version().map_err(|e| nccl_error("asking NCCL's version", e))
}

fn nccl_error(context: &str, e: nccl::NcclError) -> Error {
    Error::Runtime {
        reason: format!("NCCL: {context}: {e:?}"),
    }
}

fn cuda_error(context: &str, e: cuda::DriverError) -> Error {
    Error::Runtime {
        reason: format!("CUDA driver: {context}: {e}"),
    }
}

/// An error unless NCCL can be loaded (`cudarc` panics on a missing library;
/// this turns that into a message).
fn require_nccl() -> Result<()> {
    // SAFETY: only tries to open the library by its names.
    if unsafe { nccl_sys::is_culib_present() } {
        return Ok(());
    }
    Err(Error::Runtime {
        reason: "the NCCL library cannot be loaded: install the nvidia-nccl-cu13 wheel and put a \
                 libnccl.so link to its libnccl.so.2 on LD_LIBRARY_PATH (`source \
                 .ci/deps-nccl.sh` does both)"
            .into(),
    })
}

/// An error unless the CUDA driver and NCCL can be loaded.
fn require_libraries() -> Result<()> {
    // SAFETY: only tries to open the library by its names.
    if !unsafe { cuda_sys::is_culib_present() } {
        return Err(Error::Runtime {
            reason: "the CUDA driver library (libcuda.so.1) cannot be loaded: NCCL needs an \
                     NVIDIA GPU and its driver"
                .into(),
        });
    }
    require_nccl()
}

impl Nccl {
    /// Joins the world's NCCL communicator on GPU `ordinal` (every rank calls
    /// this at the same point: it is collective).
    pub fn new(world: &World, ordinal: usize) -> Result<Nccl> {
        // Agree first, so that one rank lacking NCCL stops every rank with
        // an error instead of leaving the others in the broadcast.
        let ready = require_libraries();
        if world.any(ready.is_err())? {
            return Err(world.error(match ready {
                Err(e) => e.to_string(),
                Ok(()) => "another rank cannot load NCCL or the CUDA driver".to_string(),
            }));
        }
        cuda::init().map_err(|e| cuda_error("initialising", e))?;
        let device =
            cuda::device::get(ordinal as i32).map_err(|e| cuda_error("opening the GPU", e))?;
        // SAFETY: `device` comes from `device::get`. The primary context is
        // the one ONNX Runtime's CUDA provider (the runtime API) uses, so
        // making it current puts NCCL on the same device and context.
        unsafe {
            let context = cuda::primary_ctx::retain(device)
                .map_err(|e| cuda_error("retaining the GPU's primary context", e))?;
            cuda::ctx::set_current(context)
                .map_err(|e| cuda_error("making the GPU's context current", e))?;
        }
        let mut id = if world.is_writer() {
            let id = nccl::get_uniqueid().map_err(|e| nccl_error("creating the unique id", e))?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        world.broadcast(0, &mut id)?;
        let mut unique = nccl_sys::ncclUniqueId { internal: [0; 128] };
        if id.len() != unique.internal.len() {
            return Err(world.error(format!(
                "NCCL's unique id arrived with {} bytes, not {}",
                id.len(),
                unique.internal.len()
            )));
        }
        for (slot, byte) in unique.internal.iter_mut().zip(&id) {
            *slot = *byte as std::ffi::c_char;
        }
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` is written by NCCL; every rank passes the same id
        // and the world's size and its own rank.
        unsafe {
            nccl::comm_init_rank(&mut comm, world.size() as i32, unique, world.rank() as i32)
                .map_err(|e| nccl_error("joining the communicator", e))?;
        }
        Ok(Nccl { comm, ordinal })
    }

    /// The GPU this rank's communicator uses.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Sums `count` float32 values at `buffer` over the ranks, in place, and
    /// waits for the sum. Waits first for all work on the device, so that
    /// whatever wrote `buffer` (ONNX Runtime's own stream) has finished.
    ///
    /// # Safety
    /// `buffer` must address at least `count` float32 values in this rank's
    /// GPU memory, written by nothing else until this returns.
    pub unsafe fn sum_in_place(&self, buffer: *mut c_void, count: usize) -> Result<()> {
        cuda::ctx::synchronize().map_err(|e| cuda_error("waiting for the gradients", e))?;
        let stream: nccl_sys::cudaStream_t = std::ptr::null_mut();
        nccl::all_reduce(
            buffer,
            buffer,
            count,
            nccl_sys::ncclDataType_t::ncclFloat32,
            nccl_sys::ncclRedOp_t::ncclSum,
            self.comm,
            stream,
        )
        .map_err(|e| nccl_error("summing the gradients", e))?;
        cuda::stream::synchronize(std::ptr::null_mut())
            .map_err(|e| cuda_error("waiting for the sum", e))
    }

    /// Sets `count` float32 values at `buffer` to +0.0 (a rank with no
    /// examples in a batch still adds its part to the sum).
    ///
    /// # Safety
    /// As for [`Nccl::sum_in_place`].
    pub unsafe fn zero(&self, buffer: *mut c_void, count: usize) -> Result<()> {
        cuda::memset_d8_sync(buffer as cuda_sys::CUdeviceptr, 0, count * 4)
            .map_err(|e| cuda_error("zeroing the gradient buffer", e))
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: `comm` was created by `comm_init_rank` and is not used after.
        // A failure to destroy at the end of a run has no one left to tell.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}
