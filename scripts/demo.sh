#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's "main job": build kvcompress in Release (-march=native) and show what it does.
#   1. runs examples/00_quickstart;
#   2. runs the decode benchmarks at a 16384-token context (every cache, 1 and 2 threads, short
#      runs) and prints a compact table: attend time, KV bytes read per second, fraction of the
#      DRAM read bandwidth measured by the same process, bits per value, speedup over dense fp16.
# Usage: scripts/demo.sh [extra decode_bench flags, e.g. --benchmark_min_time=0.5]
# Environment: KVCOMPRESS_JOBS (default 2) build parallelism; KVCOMPRESS_DEMO_CONTEXT (16384).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
readonly BUILD=build/demo
readonly JOBS=${KVCOMPRESS_JOBS:-2}
readonly CONTEXT=${KVCOMPRESS_DEMO_CONTEXT:-16384}
launcher_args=()
command -v ccache >/dev/null 2>&1 && launcher_args=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

echo "== demo: building (Release, -march=native) in ${BUILD}"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${launcher_args[@]}" \
  -DKVCOMPRESS_BUILD_TESTS=OFF -DKVCOMPRESS_BUILD_TOOLS=OFF \
  -DKVCOMPRESS_BUILD_EXAMPLES=ON -DKVCOMPRESS_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$BUILD" --parallel "$JOBS"

quickstart=$(find "$BUILD/examples" -type f -perm -u+x -name '*quickstart*' 2>/dev/null | head -n1 || true)
if [[ -n "$quickstart" ]]; then
  echo
  echo "== demo: ${quickstart#"$BUILD"/}"
  "$quickstart"
else
  echo "demo.sh: WARNING: no quickstart executable under $BUILD/examples" >&2
fi

echo
echo "== demo: decode attention at a ${CONTEXT}-token context (one layer, 32 q / 8 kv heads, d = 128)"
json="$BUILD/decode_${CONTEXT}.json"
"$BUILD/bench/decode_bench" --benchmark_filter="^decode/.*/${CONTEXT}/" --benchmark_min_time=0.1 \
  --benchmark_out="$json" --benchmark_out_format=json "$@"

if command -v python3 >/dev/null 2>&1; then
  echo
  python3 - "$json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
ctx = doc.get("context", {})
rows = [b for b in doc["benchmarks"] if b.get("run_type", "iteration") == "iteration" and "error_occurred" not in b]
scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
print(f"DRAM read bandwidth: {ctx.get('dram_read_bw', '?')}")
hdr = f"{'cache':<10} {'thr':>3} {'attend µs':>10} {'GB/s':>7} {'bw_frac':>8} {'bits/val':>8} {'KV MiB':>7} {'vs f16':>7}"
print(hdr)
print("-" * len(hdr))
for b in rows:
    parts = b["name"].split("/")
    cache, threads = parts[1], parts[3].lstrip("t")
    us = b.get("median_us", b["real_time"] * scale.get(b.get("time_unit", "ns"), 1e-3))
    print(f"{cache:<10} {threads:>3} {us:>10.1f} {b['bytes_per_second'] / 1e9:>7.2f} {b['bw_fraction']:>8.3f} "
          f"{b['bits_per_value']:>8.2f} {b['kv_MiB']:>7.1f} {b['speedup_vs_dense_f16']:>6.2f}x")
PY
fi
