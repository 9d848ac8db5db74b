//! The world of a data-parallel run: this process's rank among `size`
//! processes, its rank on its node, and the few collective operations training
//! needs (a sum of one fused f32 buffer, a broadcast, agreement on a flag or a
//! checksum). Without `--features mpi`, or outside an MPI launcher, the world
//! is this one process and every collective is the identity, so the default
//! build needs no MPI.
//!
//! Under `mpirun -np K` (or `srun`) the world is MPI's `MPI_COMM_WORLD`
//! (rsmpi against the system's MPI library); the ranks train one model on
//! contiguous slices of every global batch (see
//! [`crate::backend::distributed`]).

pub mod loss;
#[cfg(feature = "mpi")]
mod mpi_world;
#[cfg(all(feature = "mpi", feature = "cuda"))]
pub mod nccl;

use crate::error::{Error, Result};

/// The processes of one run.
pub struct World {
    rank: usize,
    size: usize,
    local_rank: usize,
    check_ranks: bool,
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_world::MpiWorld>,
}

/// Set (to anything) in the environment of a data-parallel run, the ranks
/// compare checksums of their parameters and momentum buffers after every step
/// and stop with an error when they differ (a test mode: one more small
/// allreduce per step).
pub const CHECK_RANKS_ENV: &str = "LDAM_ONNX_CHECK_RANKS";

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("mpi", &self.is_mpi())
            .finish()
    }
}

/// The world size an MPI launcher announces in the environment (Open MPI,
/// MPICH/Hydra and PMIx launchers, Slurm), if any.
pub fn launched_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS",
    ]
    .iter()
    .find_map(|key| std::env::var(key).ok()?.parse().ok())
}

/// Whether an MPI launcher started this process (rather than a shell).
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .any(|key| std::env::var_os(key).is_some())
}

impl World {
    /// This process alone.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            check_ranks: false,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The world this process was started in: MPI's when an MPI launcher
    /// started it (initialising MPI, which the world finalises when dropped),
    /// else this process alone. A launch of several processes by a build
    /// without MPI is an error, not K independent runs writing one folder.
    pub fn from_environment() -> Result<World> {
        if !launched_by_mpi() {
            return Ok(World::single());
        }
        #[cfg(feature = "mpi")]
        {
            let (mpi, rank, size, local_rank) = mpi_world::MpiWorld::initialize()?;
            Ok(World {
                rank,
                size,
                local_rank,
                check_ranks: std::env::var_os(CHECK_RANKS_ENV).is_some(),
                mpi: Some(mpi),
            })
        }
        #[cfg(not(feature = "mpi"))]
        {
            match launched_size() {
                Some(size) if size > 1 => Err(Error::Distributed {
                    rank: None,
                    reason: format!(
                        "started by an MPI launcher as one of {size} processes, but this build has \
                         no MPI support: build with `--features mpi` (see the README's \
                         data-parallel section)"
                    ),
                }),
                _ => Ok(World::single()),
            }
        }
    }

    /// 0-based rank of this process.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank of this process among those on its node (which GPU it uses).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Whether the ranks compare their state after every step ([`CHECK_RANKS_ENV`]).
    pub fn check_ranks(&self) -> bool {
        self.check_ranks
    }

    /// Whether this process writes the run's files (rank 0).
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }

    /// Whether the world is MPI's (even with one process): training then runs
    /// the split step with its allreduce.
    pub fn is_mpi(&self) -> bool {
        #[cfg(feature = "mpi")]
        {
            self.mpi.is_some()
        }
        #[cfg(not(feature = "mpi"))]
        {
            false
        }
    }

    /// One line for the start of a run.
    pub fn describe(&self) -> String {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return format!(
                "world: {} rank{} over MPI ({}); rank {} on {}, local rank {}",
                self.size,
                if self.size == 1 { "" } else { "s" },
                mpi.library,
                self.rank,
                mpi.host,
                self.local_rank
            );
        }
        "world: 1 process (no MPI)".to_string()
    }

    /// Sums `buffer` elementwise over all ranks, in place; every rank receives
    /// the same sum.
    pub fn sum_in_place(&self, buffer: &mut [f32]) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.sum_in_place(buffer);
        }
        let _ = buffer;
        Ok(())
    }

    /// Replaces `buffer` on every rank by its mean over the ranks.
    pub fn average_in_place(&self, buffer: &mut [f32]) -> Result<()> {
        self.sum_in_place(buffer)?;
        let ranks = self.size as f32;
        for value in buffer.iter_mut() {
            *value /= ranks;
        }
        Ok(())
    }

    /// `checksum` when every rank passed the same one (of state that must be
    /// identical `when`), else an error saying so.
    pub fn require_identical(&self, checksum: u64, when: &str) -> Result<u64> {
        let (low, high) = self.min_max(checksum)?;
        if low != high {
            return Err(self.error(format!(
                "the ranks hold different state {when} (checksums from {low:016x} to {high:016x}); \
                 was every rank started with the same model, data and settings?"
            )));
        }
        Ok(checksum)
    }

    /// In the rank-check mode ([`CHECK_RANKS_ENV`]), after `step`: requires
    /// every rank's parameters and momentum buffers (their `checksum`) to be
    /// identical, and says so on rank 0. Otherwise nothing.
    pub fn check_step(&self, step: u64, checksum: impl FnOnce() -> u64) -> Result<()> {
        if !self.check_ranks {
            return Ok(());
        }
        let sum = self.require_identical(checksum(), &format!("after step {step}"))?;
        if self.is_writer() {
            eprintln!(
                "rank check: step {step}: {} ranks hold identical parameters and momentum ({sum:016x})",
                self.size
            );
        }
        Ok(())
    }

    /// Whether `flag` is set on any rank.
    pub fn any(&self, flag: bool) -> Result<bool> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return Ok(mpi.max_u64(u64::from(flag)) > 0);
        }
        Ok(flag)
    }

    /// The smallest and largest of `value` over all ranks.
    pub fn min_max(&self, value: u64) -> Result<(u64, u64)> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            // min(v) = !max(!v): one reduction for both.
            let [high, low] = mpi.max_u64_pair([value, !value]);
            return Ok((!low, high));
        }
        Ok((value, value))
    }

    /// Replaces `bytes` on every rank by rank `root`'s.
    pub fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.broadcast(root, bytes);
        }
        let _ = (root, bytes);
        Ok(())
    }

    /// Ends every process of the world with `code` (MPI_Abort), so that no rank
    /// waits forever in a collective for one that failed. Without MPI, exits.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.abort(code);
        }
        std::process::exit(code)
    }

    /// An error of this rank's part of the run.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Distributed {
            rank: Some(self.rank),
            reason: reason.into(),
        }
    }
}

/// FNV-1a over the bytes of `values`: equal on two ranks exactly when their
/// values are equal to the bit (up to a 2^-64 chance).
pub fn checksum<'a>(values: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for slice in values {
        for value in slice {
            for byte in value.to_bits().to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    hash
}

/// The contiguous part of `n` examples that `rank` of `size` takes: equal
/// parts when `size` divides `n`, else the first `n % size` ranks take one more.
pub fn slice_of(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batch_in_order_without_overlap() {
        for n in 0..20 {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| slice_of(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for pair in parts.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(pair[0].len() >= pair[1].len());
                    assert!(pair[0].len() - pair[1].len() <= 1);
                }
            }
        }
    }

    #[test]
    fn checksum_sees_one_flipped_bit_and_the_sign_of_zero() {
        let a = [1.0f32, 2.0, 0.0];
        let mut b = a;
        b[1] = f32::from_bits(b[1].to_bits() ^ 1);
        assert_ne!(checksum([&a[..]]), checksum([&b[..]]));
        assert_ne!(checksum([&a[..]]), checksum([&[1.0f32, 2.0, -0.0][..]]));
        assert_eq!(checksum([&a[..2], &a[2..]]), checksum([&a[..]]));
    }

    #[test]
    fn a_single_world_is_rank_0_of_1_and_its_collectives_are_identities() {
        let world = World::single();
        assert_eq!(
            (world.rank(), world.size(), world.is_writer()),
            (0, 1, true)
        );
        let mut buffer = vec![1.5f32, -2.0];
        world.sum_in_place(&mut buffer).unwrap();
        assert_eq!(buffer, [1.5, -2.0]);
        assert!(world.any(true).unwrap());
        assert_eq!(world.min_max(7).unwrap(), (7, 7));
    }
}
