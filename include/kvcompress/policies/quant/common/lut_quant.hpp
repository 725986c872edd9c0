// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-5 of methods/quantization.md: scalar non-uniform codebook (LUT) quantization, as KVQuant's
/// nuqX datatypes use it (arXiv 2401.18079 §3.4; reference SqueezeAILab/KVQuant at 57a2383).
/// Each vector (a channel for keys, a token for values) carries an affine normalization
/// (offset, half_range), both fp16:
///   n = (x − offset) / half_range,   code = argmin_i |LUT[i] − n| (ties → lowest index, as the
///   KVQuant CUDA kernels),           x̂ = LUT[code]·half_range + offset.
/// A vector with half_range = 0 (constant during calibration) maps every x to the entry nearest
/// 0 and reconstructs `offset` (KVQuant §2 [rec] edge case; the caller treats x ≠ offset as an
/// outlier). Outliers themselves are not handled here: extract them first (outliers.hpp) and
/// store them in a TokenSparse (token_sparse.hpp), whose values override the dense codes.
/// The LUT need not be sorted (the search is linear); KVQuant's k-means LUTs are sorted
/// ascending ([rec]), which kernels may exploit. Kernels may pre-scale the LUT per vector
/// (LUT_c[i] = LUT[i]·hr_c + off_c); that gives the same x̂ up to one fp32 rounding.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>  // float16.hpp uses std::is_same_v

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Per-vector normalization of a LUT quantizer (values exactly representable in fp16).
struct LutNormalization {
  float offset;      ///< (t_hi + t_lo)/2
  float half_range;  ///< (t_hi − t_lo)/2 ≥ 0
};

/// Normalization of the range [lo, hi], rounded to fp16: offset = fp16((hi + lo)/2),
/// half_range = fp16((hi − lo)/2). Throws InvalidArgument unless lo ≤ hi, both finite and within
/// the fp16 range.
inline LutNormalization lut_normalization(float lo, float hi) {
  constexpr const char* where = "quant::common::lut_normalization";
  kvcompress::detail::require(std::isfinite(lo) && std::fabs(lo) <= kHalfMax, where, "lo", lo,
                              "a finite value with |lo| ≤ 65504");
  kvcompress::detail::require(std::isfinite(hi) && std::fabs(hi) <= kHalfMax, where, "hi", hi,
                              "a finite value with |hi| ≤ 65504");
  kvcompress::detail::require(lo <= hi, where, "hi", hi, "≥ lo = " + std::to_string(lo));
  return {f16_bits_to_f32(f32_to_f16_bits(0.5f * (hi + lo))), f16_bits_to_f32(f32_to_f16_bits(0.5f * (hi - lo)))};
}

/// Index of the LUT entry nearest v (|LUT[i] − v| minimal, ties → lowest index).
KVCOMPRESS_HOST_DEVICE std::uint8_t nearest_lut_index(const float* lut, int size, float v) {
  int best = 0;
  float best_dist = std::fabs(lut[0] - v);
  for (int i = 1; i < size; ++i) {
    const float dist = std::fabs(lut[i] - v);
    if (dist < best_dist) {
      best = i;
      best_dist = dist;
    }
  }
  return static_cast<std::uint8_t>(best);
}

/// Code of x under normalization nrm (half_range = 0 → the entry nearest 0).
KVCOMPRESS_HOST_DEVICE std::uint8_t lut_code(float x, LutNormalization nrm, const float* lut, int size) {
  const float n = nrm.half_range != 0.0f ? (x - nrm.offset) / nrm.half_range : 0.0f;
  return nearest_lut_index(lut, size, n);
}

/// x̂ = LUT[code]·half_range + offset.
KVCOMPRESS_HOST_DEVICE float lut_dequant(std::uint8_t code, LutNormalization nrm, const float* lut) {
  return lut[code] * nrm.half_range + nrm.offset;
}

namespace detail {

inline void check_lut(const char* where, const float* lut, int bits, LutNormalization nrm) {
  kvcompress::detail::require(bits >= 1 && bits <= 8, where, "bits", bits, "an integer in [1, 8] (2^bits LUT entries)");
  for (int i = 0; i < (1 << bits); ++i) {
    if (!std::isfinite(lut[i]))
      kvcompress::detail::require(false, where, ("lut[" + std::to_string(i) + "]").c_str(), lut[i], "a finite value");
  }
  kvcompress::detail::require(std::isfinite(nrm.offset), where, "offset", nrm.offset, "a finite value");
  kvcompress::detail::require(std::isfinite(nrm.half_range) && nrm.half_range >= 0.0f, where, "half_range",
                              nrm.half_range, "a finite value ≥ 0");
}

}  // namespace detail

/// Quantizes n values x[i·stride] of one vector with a 2^bits-entry LUT into n codes.
/// Throws InvalidArgument for bits outside [1, 8], a non-finite LUT entry or normalization, a
/// negative half_range, n = 0, stride = 0 or a non-finite input.
inline void lut_quantize(const float* x, std::size_t n, std::size_t stride, LutNormalization nrm,
                         const float* lut, int bits, std::uint8_t* codes) {
  constexpr const char* where = "quant::common::lut_quantize";
  detail::check_lut(where, lut, bits, nrm);
  kvcompress::detail::require(n > 0, where, "n", n, "a vector length ≥ 1");
  kvcompress::detail::require(stride > 0, where, "stride", stride, "≥ 1");
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v))
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), v, "a finite value");
    codes[i] = lut_code(v, nrm, lut, 1 << bits);
  }
}

/// y[i·stride] = LUT[codes[i]]·half_range + offset. Throws InvalidArgument for a code ≥ 2^bits.
inline void lut_dequantize(const std::uint8_t* codes, std::size_t n, LutNormalization nrm,
                           const float* lut, int bits, float* y, std::size_t stride) {
  constexpr const char* where = "quant::common::lut_dequantize";
  detail::check_lut(where, lut, bits, nrm);
  for (std::size_t i = 0; i < n; ++i) {
    if (codes[i] >= (1u << bits))
      kvcompress::detail::require(false, where, ("codes[" + std::to_string(i) + "]").c_str(),
                                  static_cast<unsigned>(codes[i]), "a code < 2^bits");
    y[i * stride] = lut_dequant(codes[i], nrm, lut);
  }
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
