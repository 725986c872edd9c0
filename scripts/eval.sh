#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Real-model evaluation in one command: installs what is missing, fetches SmolLM2-135M-Instruct
# (scripts/fetch_model.sh), builds tools/llama's kvc_eval and prints the table for every policy in
# tools/llama/policy_table.hpp (also written to build/eval/eval.md, plot build/eval/kl_vs_bits.png).
#   scripts/eval.sh            contexts 512, 2048 and 8192 (about an hour on one core)
#   scripts/eval.sh --quick    context 512 only (about a minute)
# Other arguments go to kvc_eval (see tools/README.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
model=$(scripts/fetch_model.sh)
cmake -S . -B build/eval -DCMAKE_BUILD_TYPE=Release -DKVCOMPRESS_BUILD_TESTS=OFF \
  -DKVCOMPRESS_BUILD_BENCHMARKS=OFF -DKVCOMPRESS_BUILD_EXAMPLES=OFF -DKVCOMPRESS_BUILD_TOOLS=ON >/dev/null
cmake --build build/eval --parallel "${KVCOMPRESS_JOBS:-2}" --target kvc_eval
build/eval/tools/kvc_eval --model "$model" --out-md build/eval/eval.md --out-png build/eval/kl_vs_bits.png "$@"
