#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The single test entry point of kvcompress (the README's test command; .ci/run calls it).
#
#   scripts/test.sh            run every stage below, in order
#   scripts/test.sh STAGE...   run only the named stages (release bench asan scalar avx2)
#
# Stages (build directories under build/):
#   release  build/release  Release, -march=native: tests, benchmarks, examples, tools; ctest
#   bench    build/release  every benchmark executable once with --benchmark_min_time=0.01
#                           (target kvcompress_bench_smoke; Google Benchmark 1.7 flag syntax)
#   asan     build/asan     -O1 -g1 (asserts on) + KVCOMPRESS_SANITIZE=ON (ASan+UBSan), tests only; ctest
#   scalar   build/scalar   Release + KVCOMPRESS_FORCE_SCALAR=ON; builds and runs the SIMD-dependent tests (label isa)
#   avx2     build/avx2     Release + KVCOMPRESS_ARCH_FLAGS=-march=x86-64-v3; the same subset
# The packaging tests (label `packaging`) do not depend on the configuration; they run in
# `release` only. Builds are incremental: rerunning after an edit rebuilds what changed.
#
# Environment:
#   KVCOMPRESS_JOBS        build and ctest parallelism (default 2)
#   KVCOMPRESS_KEEP_GOING  1: after a failing stage, run the remaining ones (bench is skipped if
#                          release failed) and fail at the end; default 1 when CI=true, else 0
#   CMAKE_GENERATOR        as for CMake (default: Unix Makefiles)
# ccache is used when it is installed. The real-model tests need the model that
# scripts/fetch_model.sh downloads; when that fails they skip themselves and this script warns.
# The last line printed is a one-line summary with the status and duration of every stage.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
readonly ROOT=$PWD
readonly JOBS=${KVCOMPRESS_JOBS:-2}
if [[ "${CI:-}" == "true" ]]; then
  readonly KEEP_GOING=${KVCOMPRESS_KEEP_GOING:-1}
else
  readonly KEEP_GOING=${KVCOMPRESS_KEEP_GOING:-0}
fi
readonly ALL_STAGES=(release bench asan scalar avx2)
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("${ALL_STAGES[@]}")
for s in "${stages[@]}"; do
  [[ " ${ALL_STAGES[*]} " == *" $s "* ]] || { echo "test.sh: unknown stage '$s' (stages: ${ALL_STAGES[*]})" >&2; exit 2; }
done

launcher_args=()
command -v ccache >/dev/null 2>&1 && launcher_args=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
tests_only=(-DKVCOMPRESS_BUILD_TESTS=ON -DKVCOMPRESS_BUILD_BENCHMARKS=OFF
            -DKVCOMPRESS_BUILD_EXAMPLES=OFF -DKVCOMPRESS_BUILD_TOOLS=OFF)

# configure_and_build DIR [cmake args...]
configure_and_build() {
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" "${launcher_args[@]}" "$@"
  cmake --build "$dir" --parallel "$JOBS"
}
run_ctest() {
  local dir=$1; shift
  ctest --test-dir "$dir" --output-on-failure --parallel "$JOBS" "$@"
}

stage_release() {
  configure_and_build build/release -DCMAKE_BUILD_TYPE=Release
  run_ctest build/release
}
stage_bench() {
  [[ -f build/release/CMakeCache.txt ]] || cmake -S "$ROOT" -B build/release "${launcher_args[@]}" -DCMAKE_BUILD_TYPE=Release
  cmake --build build/release --parallel "$JOBS" --target kvcompress_bench_smoke
}
stage_asan() {
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:check_initialization_order=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  # -O1 -g1: line tables are enough for ASan/UBSan reports, and this compiles ~2.5x faster than
  # the default -O2 -g; no -DNDEBUG, so assertions stay on.
  configure_and_build build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" \
    -DKVCOMPRESS_SANITIZE=ON "${tests_only[@]}"
  run_ctest build/asan -LE packaging
}
# The forced-scalar and AVX2-only stages build and run the SIMD-dependent tests only (kernels,
# cache core, quantization policies: label "isa", target kvcompress_isa_tests); eviction and
# merging logic does not change with the SIMD level and runs in the Release and ASan stages.
isa_stage() {
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" "${launcher_args[@]}" -DCMAKE_BUILD_TYPE=Release "$@" "${tests_only[@]}"
  cmake --build "$dir" --parallel "$JOBS" --target kvcompress_isa_tests
  run_ctest "$dir" -L isa
}
stage_scalar() { isa_stage build/scalar -DKVCOMPRESS_FORCE_SCALAR=ON; }
stage_avx2() { isa_stage build/avx2 -DKVCOMPRESS_ARCH_FLAGS=-march=x86-64-v3; }

t_start=$SECONDS
summary=()
failed=()
finish() {
  local rc=$?
  local total=$((SECONDS - t_start)) verdict="PASS" joined="nothing run"
  [[ $rc -eq 0 ]] || verdict="FAIL (exit $rc; failed: ${failed[*]:-setup})"
  [[ ${#summary[@]} -eq 0 ]] || joined=$(printf '%s, ' "${summary[@]}")
  echo
  echo "================================================================"
  printf 'test.sh: %s | %s | total %dm%02ds\n' "$verdict" "${joined%, }" $((total / 60)) $((total % 60))
}
trap finish EXIT

# The model for the real-model tests (they skip themselves without it).
if [[ -f scripts/fetch_model.sh ]]; then
  if model_path=$(bash scripts/fetch_model.sh); then
    export KVCOMPRESS_MODEL_PATH="$model_path"
    export KVCOMPRESS_MODEL_DIR="${KVCOMPRESS_MODEL_DIR:-$(dirname "$model_path")}"
    echo "test.sh: model at ${KVCOMPRESS_MODEL_PATH}"
  else
    echo "test.sh: WARNING: scripts/fetch_model.sh failed; the real-model tests will skip" >&2
  fi
else
  echo "test.sh: WARNING: scripts/fetch_model.sh not found; the real-model tests will skip" >&2
fi

for stage in "${stages[@]}"; do
  if [[ $stage == bench && " ${failed[*]:-} " == *" release "* ]]; then
    summary+=("bench skipped")
    continue
  fi
  echo
  echo "================ test.sh: stage ${stage} ================"
  t0=$SECONDS
  # A subshell per stage: errexit applies inside it, and its environment stays local.
  set +e
  ( set -e; "stage_${stage}" )
  rc=$?
  set -e
  dt=$((SECONDS - t0))
  if [[ $rc -eq 0 ]]; then
    summary+=("${stage} ok $((dt / 60))m$(printf %02d $((dt % 60)))s")
  else
    summary+=("${stage} FAILED $((dt / 60))m$(printf %02d $((dt % 60)))s")
    failed+=("$stage")
    echo "test.sh: stage ${stage} failed (exit ${rc})" >&2
    [[ $KEEP_GOING == 1 ]] || exit "$rc"
  fi
done
[[ ${#failed[@]} -eq 0 ]] || exit 1
