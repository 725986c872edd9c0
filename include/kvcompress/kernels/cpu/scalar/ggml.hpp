// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of the ggml block formats (methods/quantization.md §10): row
/// quantize/dequantize (byte-identical to ggml's reference quantizers, see
/// policies/quant/formats/ggml_blocks.hpp) and the fused decode kernels over packed rows.
///
/// A packed row is one token's d channels (d % 32 == 0) as d/32 consecutive ggml blocks
/// (ggml_row_bytes(type, d) bytes, no padding, no alignment); n rows lie at stride row_bytes.
///
/// Fused kernels, exact fp32 semantics (no query quantization):
///   logits[r][t] = Σ_c q_r[c] · x̂_t[c],   x̂ = q·d (q8_0), (q − 8)·d (q4_0), q·d + m (q4_1)
///   out[r][c]   += Σ_t p_r[t] · x̂_t[c]
/// q·d and (q − 8)·d are exact in fp32 (≤ 8 + 11 significant bits), so every ISA forms the same
/// x̂ bit for bit; ISAs differ only in the order of the fp32 sums.

#include <cassert>
#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"
#include "kvcompress/kernels/isa.hpp"
#include "kvcompress/policies/quant/formats/ggml_blocks.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

using quant::formats::GgmlType;
using quant::formats::ggml_row_bytes;

/// Largest number of query rows one call of the ggml decode kernels handles.
inline constexpr int kGgmlMaxRows = 16;

/// Quantizes n rows x[t·ldx …] of d floats into packed rows dst + t·ggml_row_bytes(type, d).
/// Identical bytes on every ISA (only the scalar overload exists: append is not the hot path).
inline void ggml_quantize_rows(GgmlType type, const float* x, std::size_t ldx, std::size_t n, int d,
                               std::uint8_t* dst, isa::scalar) {
  assert(d % quant::formats::kGgmlQK == 0);
  const std::size_t rb = ggml_row_bytes(type, d);
  for (std::size_t t = 0; t < n; ++t) quant::formats::ggml_quantize_row(type, x + t * ldx, d, dst + t * rb);
}

/// Dequantizes n packed rows into dst[t·ld …].
inline void ggml_dequantize_rows(GgmlType type, const std::uint8_t* src, std::size_t n, int d, float* dst,
                                 std::size_t ld, isa::scalar) {
  const std::size_t rb = ggml_row_bytes(type, d);
  for (std::size_t t = 0; t < n; ++t) quant::formats::ggml_dequantize_row(type, src + t * rb, d, dst + t * ld);
}

/// logits[r·ldl + t] = q_r · x̂_t for t in [0, n) over packed rows; q is [rows][d] (pre-scaled),
/// rows in 1..16. fp32, channel order (one accumulator per row).
inline void ggml_logits(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* q, int rows,
                        float* logits, std::size_t ldl, isa::scalar) {
  assert(rows >= 1 && rows <= kGgmlMaxRows);
  constexpr int QK = quant::formats::kGgmlQK;
  const std::size_t rb = ggml_row_bytes(type, d), bb = quant::formats::ggml_block_bytes(type);
  for (std::size_t t = 0; t < n; ++t) {
    float acc[kGgmlMaxRows] = {};
    for (int b = 0; b < d / QK; ++b) {
      float x[QK];
      quant::formats::ggml_dequantize_row(type, src + t * rb + static_cast<std::size_t>(b) * bb, QK, x);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < QK; ++c) acc[r] += q[r * d + b * QK + c] * x[c];
    }
    for (int r = 0; r < rows; ++r) logits[static_cast<std::size_t>(r) * ldl + t] = acc[r];
  }
}

/// out[r·d + c] += Σ_t p[r·ldp + t] · x̂_t[c] over n packed rows; rows in 1..16. fp32, token order.
inline void ggml_accumulate(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* p,
                            std::size_t ldp, int rows, float* out, isa::scalar) {
  assert(rows >= 1 && rows <= kGgmlMaxRows);
  constexpr int QK = quant::formats::kGgmlQK;
  const std::size_t rb = ggml_row_bytes(type, d), bb = quant::formats::ggml_block_bytes(type);
  for (std::size_t t = 0; t < n; ++t) {
    for (int b = 0; b < d / QK; ++b) {
      float x[QK];
      quant::formats::ggml_dequantize_row(type, src + t * rb + static_cast<std::size_t>(b) * bb, QK, x);
      for (int r = 0; r < rows; ++r) {
        const float pr = p[static_cast<std::size_t>(r) * ldp + t];
        for (int c = 0; c < QK; ++c) out[r * d + b * QK + c] += pr * x[c];
      }
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
