// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-3 of methods/quantization.md: 1-bit sign and ternary ("1.58-bit") quantization with an
/// abs-mean scale, per group. The scale α = mean(|x|) is computed in double, rounded to fp16 and
/// the codes use the rounded value (BB-1's metadata rule).
///   1-bit:   code = 1 if x ≥ 0 else 0 (−0 counts as ≥ 0);
///            x̂ ∈ {0, α} (SignLevels::kZeroOrScale, VidKV eq. 5, faithful default) or
///            x̂ = ±α (kPlusMinusScale, the symmetric option of VidKV §6 [rec]).
///   ternary: τ = γ·α, t = sign(x)·[|x| > τ] ∈ {−1, 0, 1}, stored code t + 1 ∈ {0, 1, 2};
///            x̂ = α·t (TernaryScale::kAlpha, [rec]) or x̂ = t (kNone: VidKV's reference
///            dequantizer, which drops α — §6 Ambiguities). VidKV: γ = 0.7 (paper), 0.5 (code).
/// Packing: 1-bit codes with any 1-bit layout, ternary codes as 2-bit P-KIVI or 5 trits per byte
/// (bit_packing.hpp).

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

/// Reconstruction levels of 1-bit sign codes.
enum class SignLevels {
  kZeroOrScale,     ///< code 0 → 0, code 1 → α (VidKV faithful default)
  kPlusMinusScale,  ///< code 0 → −α, code 1 → +α
};

/// Reconstruction of ternary codes.
enum class TernaryScale {
  kAlpha,  ///< x̂ = α·t ([rec])
  kNone,   ///< x̂ = t (VidKV reference dequantizer)
};

/// Stable names for test logs.
inline const char* to_string(SignLevels l) {
  return l == SignLevels::kZeroOrScale ? "zero_or_scale" : "plus_minus_scale";
}
inline const char* to_string(TernaryScale s) { return s == TernaryScale::kAlpha ? "alpha" : "none"; }

namespace detail {

/// fp16(mean |x|) of a validated group (accumulated in double).
inline half checked_abs_mean(const char* where, const float* x, std::size_t n, std::size_t stride) {
  kvcompress::detail::require(n > 0, where, "n", n, "a group size ≥ 1");
  kvcompress::detail::require(stride > 0, where, "stride", stride, "≥ 1");
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v) || std::fabs(v) > kHalfMax)
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), v,
                                  "a finite value with |x| ≤ 65504 (fp16 scale)");
    sum += std::fabs(static_cast<double>(v));
  }
  return half{f32_to_f16_bits(static_cast<float>(sum / static_cast<double>(n)))};
}

}  // namespace detail

/// 1-bit sign quantization of n values x[i·stride]: codes[i] = x ≥ 0, returns fp16(mean |x|).
inline half sign_quantize(const float* x, std::size_t n, std::size_t stride, std::uint8_t* codes) {
  const half alpha = detail::checked_abs_mean("quant::common::sign_quantize", x, n, stride);
  for (std::size_t i = 0; i < n; ++i) codes[i] = x[i * stride] >= 0.0f ? 1 : 0;
  return alpha;
}

/// Reconstructs n 1-bit codes into y[i·stride] with the chosen levels.
inline void sign_dequantize(const std::uint8_t* codes, std::size_t n, half alpha, SignLevels levels,
                            float* y, std::size_t stride) {
  const float a = to_float(alpha);
  const float lo = levels == SignLevels::kZeroOrScale ? 0.0f : -a;
  for (std::size_t i = 0; i < n; ++i) y[i * stride] = codes[i] ? a : lo;
}

/// Ternary quantization of n values x[i·stride] with threshold τ = γ·α16: codes[i] = t + 1.
/// Returns α16 = fp16(mean |x|). Throws InvalidArgument for γ < 0 or non-finite, n = 0,
/// stride = 0 or non-finite inputs.
inline half ternary_quantize(const float* x, std::size_t n, std::size_t stride, float gamma,
                             std::uint8_t* codes) {
  constexpr const char* where = "quant::common::ternary_quantize";
  kvcompress::detail::require(std::isfinite(gamma) && gamma >= 0.0f, where, "gamma", gamma,
                              "a finite threshold factor ≥ 0 (VidKV: 0.7)");
  const half alpha = detail::checked_abs_mean(where, x, n, stride);
  const float tau = gamma * to_float(alpha);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    codes[i] = v > tau ? 2 : (v < -tau ? 0 : 1);
  }
  return alpha;
}

/// Reconstructs n ternary codes (t + 1) into y[i·stride].
inline void ternary_dequantize(const std::uint8_t* codes, std::size_t n, half alpha, TernaryScale scale,
                               float* y, std::size_t stride) {
  const float a = scale == TernaryScale::kAlpha ? to_float(alpha) : 1.0f;
  for (std::size_t i = 0; i < n; ++i) y[i * stride] = a * static_cast<float>(static_cast<int>(codes[i]) - 1);
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
