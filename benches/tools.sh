# Shared by the benchmark scripts (sourced, not run): logging, GNU time for peak
# memory, and a python with the modules a script needs.
#
#   source "$ROOT/benches/tools.sh"; bench_python onnx numpy -- onnxruntime
#
# bench_python sets PY: $BENCH_PYTHON if given, else the first of
# .deps/py-export, $PYTHON (python3) and target/bench-venv that imports every
# module named before `--`, else target/bench-venv created with those and the
# optional packages named after it.

log() { printf '>> %s\n' "$*" >&2; }

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (Debian package 'time')"
    SUDO=; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get install -y time >/dev/null || { log "need /usr/bin/time: apt-get install -y time"; exit 1; }
fi

bench_python() {
    local modules=() extra=()
    while (($#)) && [[ $1 != -- ]]; do modules+=("$1"); shift; done
    (($#)) && shift && extra=("$@")
    local imports; imports=$(IFS=,; echo "${modules[*]}")
    has_modules() { "$1" -c "import $imports" >/dev/null 2>&1; }
    PY=${BENCH_PYTHON:-}
    if [[ -z $PY ]]; then
        local venv=$ROOT/target/bench-venv candidate
        for candidate in "$ROOT/.deps/py-export/bin/python" "${PYTHON:-python3}" "$venv/bin/python"; do
            if has_modules "$candidate"; then PY=$candidate; break; fi
        done
        if [[ -z $PY ]]; then
            log "creating target/bench-venv with ${modules[*]} ${extra[*]}"
            [[ -x $venv/bin/python ]] || "${PYTHON:-python3}" -m venv "$venv"
            "$venv/bin/python" -m pip install --quiet "${modules[@]}" "${extra[@]}"
            PY=$venv/bin/python
        fi
    fi
    has_modules "$PY" || { log "$PY cannot import ${modules[*]}"; exit 1; }
    log "python: $PY"
}
