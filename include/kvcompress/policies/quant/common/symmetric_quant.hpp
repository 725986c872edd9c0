// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-2 of methods/quantization.md: symmetric abs-max group quantization with signed codes.
///   qmax = 2^(b−1) − 1,  d = amax / qmax,  q = clamp(round(x / d), −qmax, qmax),  x̂ = q·d
/// ggml's q8_0 is b = 8 with ties away from zero and codes computed from the fp32 d while the
/// block stores fp16(d) (ScalePrecision::kFp32Codes); the library default rounds d to fp16 first
/// and computes the codes from the stored value (BB-1 [rec], self-consistent quantize/dequantize).
/// q4_0's signed-extreme trick (d = max/−8, 16 levels) is a format of §10, not this primitive.
/// A zero group (amax = 0) has d = 0, every q = 0, and reconstructs exactly.
/// Codes are int8; a packer takes the unsigned code q + 2^(b−1) ∈ [1, 2^b − 1].

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>  // float16.hpp uses std::is_same_v

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/policies/quant/common/rounding.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Which scale the codes are computed from.
enum class ScalePrecision {
  kFp16First,  ///< codes from the stored fp16 scale ([rec]; quantize and dequantize agree)
  kFp32Codes,  ///< codes from the fp32 scale, fp16 stored (ggml q8_0 bit compatibility)
};

/// Stable name of a ScalePrecision.
inline const char* to_string(ScalePrecision p) {
  return p == ScalePrecision::kFp16First ? "fp16_first" : "fp32_codes";
}

/// Configuration of symmetric_quantize.
struct SymmetricConfig {
  int bits = 8;                                                ///< b ∈ [2, 8]
  Rounding rounding = Rounding::kHalfEven;                     ///< q8_0: kHalfAwayFromZero
  ScalePrecision scale_precision = ScalePrecision::kFp16First;  ///< q8_0: kFp32Codes
};

/// qmax = 2^(b−1) − 1 (127 for 8 bits).
constexpr int symmetric_qmax(int bits) { return (1 << (bits - 1)) - 1; }

/// q = clamp(round(x·inv), −qmax, qmax) with inv = 1/d (0 when d = 0).
KVCOMPRESS_HOST_DEVICE std::int8_t symmetric_code(float x, float inv, int bits,
                                                  Rounding rounding = Rounding::kHalfEven) {
  const float qmax = static_cast<float>(symmetric_qmax(bits));
  return static_cast<std::int8_t>(round_clamp(x * inv, rounding, -qmax, qmax));
}

/// Quantizes n values x[i·stride] into int8 codes and returns the stored fp16 scale d16.
/// Throws InvalidArgument for bits outside [2, 8], n = 0, stride = 0, non-finite inputs or a
/// scale beyond fp16.
inline half symmetric_quantize(const float* x, std::size_t n, std::size_t stride,
                               const SymmetricConfig& cfg, std::int8_t* codes) {
  constexpr const char* where = "quant::common::symmetric_quantize";
  kvcompress::detail::require(cfg.bits >= 2 && cfg.bits <= 8, where, "bits", cfg.bits, "an integer in [2, 8]");
  kvcompress::detail::require(n > 0, where, "n", n, "a group size ≥ 1");
  kvcompress::detail::require(stride > 0, where, "stride", stride, "≥ 1");
  float amax = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v))
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), v, "a finite value");
    amax = std::fabs(v) > amax ? std::fabs(v) : amax;
  }
  const float d = amax / static_cast<float>(symmetric_qmax(cfg.bits));
  kvcompress::detail::require(d <= kHalfMax, where, "max|x|", amax, "a scale max|x|/qmax that fits fp16");
  const half d16{f32_to_f16_bits(d)};
  const float d_codes = cfg.scale_precision == ScalePrecision::kFp16First ? to_float(d16) : d;
  const float inv = d_codes != 0.0f ? 1.0f / d_codes : 0.0f;
  for (std::size_t i = 0; i < n; ++i) codes[i] = symmetric_code(x[i * stride], inv, cfg.bits, cfg.rounding);
  return d16;
}

/// y[i·stride] = q_i·d16 for n contiguous codes.
inline void symmetric_dequantize(const std::int8_t* codes, std::size_t n, half d16, float* y,
                                 std::size_t stride) {
  const float d = to_float(d16);
  for (std::size_t i = 0; i < n; ++i) y[i * stride] = static_cast<float>(codes[i]) * d;
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
