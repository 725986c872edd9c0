#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Quality benchmarks in one command: builds tools/quality's kvc_quant_quality and
# kvc_evict_quality and writes their Markdown tables to tools/results/quant_quality.md (synthetic
# LLM-like data + the real SmolLM2 activations in tests/data) and tools/results/evict_quality.md
# (synthetic multimodal workload, budgets 5/10/20/50 %). No model download needed.
#   scripts/quality.sh            full sizes (a few minutes on one core)
#   scripts/quality.sh --quick    tiny sizes (seconds; what CI's smoke tests run)
# Environment: KVCOMPRESS_BUILD_DIR (default build/quality), KVCOMPRESS_JOBS (default 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
quick=()
if [[ "${1:-}" == "--quick" ]]; then quick=(--quick); fi
build=${KVCOMPRESS_BUILD_DIR:-build/quality}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DKVCOMPRESS_BUILD_TESTS=OFF \
  -DKVCOMPRESS_BUILD_BENCHMARKS=OFF -DKVCOMPRESS_BUILD_EXAMPLES=OFF -DKVCOMPRESS_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" --parallel "${KVCOMPRESS_JOBS:-2}" --target kvc_quant_quality kvc_evict_quality
mkdir -p tools/results
"$build"/tools/quality/kvc_quant_quality "${quick[@]}" \
  --activations tests/data/smollm2_activations_v1.bin --out tools/results/quant_quality.md
"$build"/tools/quality/kvc_evict_quality "${quick[@]}" --out tools/results/evict_quality.md
