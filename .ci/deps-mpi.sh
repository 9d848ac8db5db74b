#!/usr/bin/env bash
# Installs what `--features mpi` (data-parallel training under mpirun) needs,
# when missing: Open MPI and its headers (the `mpi` crate, rsmpi, binds the
# system's MPI library; bindgen reads mpi.h through libclang; pkg-config finds
# the library), then exports the environment a root CI container on 2 cores
# needs to run 2 ranks.
#
# Usage: `source .ci/deps-mpi.sh` (installs and exports into the calling shell),
# or `bash .ci/deps-mpi.sh` (installs only). Idempotent.

_ldam_deps_mpi() {
    local -a sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    local missing=()
    for package in libopenmpi-dev openmpi-bin libclang-dev pkg-config; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        "${sudo_cmd[@]}" apt-get update -qq || true
        "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
    fi
    # Open MPI refuses to run as root unless told twice (containers run as root).
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # More ranks than cores (2 ranks on a 2-core machine whose cores others share).
    export OMPI_MCA_rmaps_base_oversubscribe=1
    # Containers forbid the cross-memory-attach (CMA) copies of the shared-memory
    # transport; fall back to plain copies.
    export OMPI_MCA_btl_vader_single_copy_mechanism=none
}

_ldam_deps_mpi
