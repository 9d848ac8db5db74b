//! MPI's world through rsmpi: the only file that names the `mpi` crate.

use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

pub(super) struct MpiWorld {
    // Dropped before the universe, whose drop finalises MPI.
    communicator: SimpleCommunicator,
    _universe: Universe,
    pub(super) library: String,
    pub(super) host: String,
}

impl MpiWorld {
    /// Initialises MPI (once per process): the world with this process's
    /// rank, the world's size and the process's rank on its node.
    pub(super) fn initialize() -> Result<(MpiWorld, usize, usize, usize)> {
        let universe = mpi::initialize().ok_or_else(|| Error::Distributed {
            rank: None,
            reason: "MPI is already initialised in this process".into(),
        })?;
        let communicator = universe.world();
        let rank = communicator.rank() as usize;
        let size = communicator.size() as usize;
        // Processes sharing memory share a node: their ranks among themselves
        // are the local ranks (what OMPI_COMM_WORLD_LOCAL_RANK says under Open MPI).
        let local_rank = communicator.split_shared(communicator.rank()).rank() as usize;
        let library = mpi::environment::library_version()
            .ok()
            .and_then(|v| {
                v.lines()
                    .next()
                    .map(|l| l.trim().trim_end_matches(',').to_string())
            })
            .unwrap_or_else(|| "unknown MPI".to_string());
        let host = mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string());
        let world = MpiWorld {
            communicator,
            _universe: universe,
            library,
            host,
        };
        Ok((world, rank, size, local_rank))
    }

    pub(super) fn sum_in_place(&self, buffer: &mut [f32]) {
        let send = buffer.to_vec();
        self.communicator
            .all_reduce_into(&send[..], buffer, SystemOperation::sum());
    }

    pub(super) fn max_u64(&self, value: u64) -> u64 {
        let mut out = 0u64;
        self.communicator
            .all_reduce_into(&value, &mut out, SystemOperation::max());
        out
    }

    pub(super) fn max_u64_pair(&self, values: [u64; 2]) -> [u64; 2] {
        let mut out = [0u64; 2];
        self.communicator
            .all_reduce_into(&values[..], &mut out[..], SystemOperation::max());
        out
    }

    pub(super) fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        let root = self.communicator.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    pub(super) fn abort(&self, code: i32) -> ! {
        self.communicator.abort(code)
    }
}
