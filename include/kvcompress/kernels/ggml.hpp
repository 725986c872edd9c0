// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// ggml block-format kernels (q8_0, q4_0, q4_1; methods/quantization.md §10), one overload set per
/// ISA: row quantize/dequantize and the fused decode kernels (logits over packed keys, value
/// accumulation over packed values). Formats and the quantization rules are in
/// policies/quant/formats/ggml_blocks.hpp; the scalar reference is kernels/cpu/scalar/ggml.hpp.
/// Quantizers emit ggml's bytes (scalar only: append is not the hot path); the AVX2/AVX-512 decode
/// kernels keep exact fp32 semantics (no query quantization; rationale in
/// kernels/cpu/avx512/ggml.hpp) and differ from scalar only in summation order.

#include "kvcompress/kernels/cpu/scalar/ggml.hpp"
#include "kvcompress/kernels/cpu/avx2/ggml.hpp"
#include "kvcompress/kernels/cpu/avx512/ggml.hpp"
