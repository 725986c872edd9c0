// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-1 of methods/quantization.md: asymmetric uniform (min–max) group quantization with b bits,
/// L = 2^b − 1 levels, in two variants.
///
/// Float zero point (KIVI, GEAR, VidKV, OTT, CalibQuant [rec]):
///   lo = α·min(x), hi = α·max(x)                        (clip ratio α ∈ (0, 1], 1 = no clipping)
///   s16 = fp16((hi − lo) / L),  z16 = fp16(lo)          (metadata rounded to fp16 FIRST [rec])
///   q = clamp(round((x − z16) · (1 / s16)), 0, L)      (reciprocal, then one product: no FMA)
///   x̂ = q · s16 + z16
///   zero range (s16 == 0): every q = 0 and x̂ = z16, exact for a constant fp16 group [rec].
///
/// Integer zero point (KVQuant "clamp" option, AKVQ-VL):
///   s16 = fp16((hi − lo) / L),  z = clamp(−round(lo · (1 / s16)), 0, L)
///   q = clamp(round(x · (1 / s16)) + z, 0, L),  x̂ = s16 · (q − z)
///   zero range (s16 == 0) [rec]: s16 = fp16(|lo|) and z = 1 if lo < 0, z = 0 otherwise, so the
///   formulas above give (q, z) = (1, 0) for lo > 0, (0, 1) for lo < 0 and s = q = z = 0 for lo = 0.
///   Unlike the float variant the group minimum is no longer reproduced exactly (error ≤ s/2), and
///   a group that does not straddle 0 is clamped at one end (z saturates at 0 or L), as in KVQuant.
///
/// The arithmetic is fixed to the expression KIVI's kernels use (kernels/cpu/scalar/kivi.hpp):
/// fp32 throughout, reciprocal of the fp16 scale, one product, then rounding — so KIVI's scalar
/// kernel is this quantizer with α = 1 and half-to-even rounding, byte for byte. Rounding is
/// half-to-even by default; ggml-compatible formats pass Rounding::kTruncAddHalf (rounding.hpp).
///
/// Error bound (test oracle, α = 1): |x − x̂| ≤ s16/2 + L·|s − s16| + |lo − z16| (+ fp32 ulps);
/// with α < 1 the bound holds only for x inside [lo, hi].
///
/// The KVCOMPRESS_HOST_DEVICE functions are the unchecked per-element/per-group core that kernels
/// (CPU and CUDA) call; affine_quantize / affine_int_quantize validate their arguments and throw
/// InvalidArgument, and are what policies call off the hot path.

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

/// Smallest and largest bit width the generic affine quantizer supports (codes fit a uint8).
inline constexpr int kAffineMinBits = 1;
inline constexpr int kAffineMaxBits = 8;

/// L = 2^b − 1, the largest code of a b-bit quantizer.
constexpr int affine_levels(int bits) { return (1 << bits) - 1; }

/// Closed value range [lo, hi] of one group (after the clip ratio).
struct GroupRange {
  float lo;
  float hi;
};

/// fp16 metadata of a float-zero-point group (4 bytes, the layout KIVI stores).
struct AffineParams {
  half scale;  ///< s16 ≥ 0; 0 marks a zero-range group (every code 0, x̂ = z16)
  half zero;   ///< z16 = fp16(lo), the (clipped) group minimum
};

/// Metadata of an integer-zero-point group.
struct AffineIntParams {
  half scale;         ///< s16 ≥ 0 (|lo| for a zero-range group, see the file comment)
  std::uint8_t zero;  ///< z ∈ [0, L]: the code that reconstructs 0
};

/// Configuration of the checked group quantizers.
struct AffineConfig {
  int bits = 2;                             ///< b ∈ [1, 8]
  float clip = 1.0f;                        ///< α ∈ (0, 1]: lo = α·min, hi = α·max
  Rounding rounding = Rounding::kHalfEven;  ///< [rec] default; ggml uses kTruncAddHalf
};

/// Min and max of n values x[i·stride], each multiplied by the clip ratio α (unchecked core).
KVCOMPRESS_HOST_DEVICE GroupRange group_range(const float* x, std::size_t n, std::size_t stride,
                                              float clip) {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 1; i < n; ++i) {
    const float v = x[i * stride];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  return {clip * lo, clip * hi};
}

/// 1/s as the quantizers use it; 0 for a zero scale (then every scaled value is 0).
KVCOMPRESS_HOST_DEVICE float affine_inverse_scale(float scale) {
  return scale != 0.0f ? 1.0f / scale : 0.0f;
}

/// Float-zero-point metadata from a range: s16 = fp16((hi − lo)/L), z16 = fp16(lo).
KVCOMPRESS_HOST_DEVICE AffineParams affine_params(GroupRange r, int bits) {
  const float s = (r.hi - r.lo) / static_cast<float>(affine_levels(bits));
  return {half{f32_to_f16_bits(s)}, half{f32_to_f16_bits(r.lo)}};
}

/// q = clamp(round((x − z16)·inv), 0, L), inv = affine_inverse_scale(s16): the one code rule.
KVCOMPRESS_HOST_DEVICE std::uint8_t affine_code(float x, float z16, float inv, int bits,
                                                Rounding rounding = Rounding::kHalfEven) {
  const float diff = x - z16;
  const float y = diff * inv;
  return static_cast<std::uint8_t>(round_clamp(y, rounding, 0.0f, static_cast<float>(affine_levels(bits))));
}

/// x̂ = q·s16 + z16.
KVCOMPRESS_HOST_DEVICE float affine_dequant(std::uint8_t q, AffineParams p) {
  return static_cast<float>(q) * to_float(p.scale) + to_float(p.zero);
}

/// Integer-zero-point metadata from a range, zero-range rule included (file comment).
KVCOMPRESS_HOST_DEVICE AffineIntParams affine_int_params(GroupRange r, int bits,
                                                         Rounding rounding = Rounding::kHalfEven) {
  const float L = static_cast<float>(affine_levels(bits));
  const std::uint16_t s16 = f32_to_f16_bits((r.hi - r.lo) / L);
  const float s = f16_bits_to_f32(s16);
  if (s == 0.0f) {
    const float mag = r.lo < 0.0f ? -r.lo : r.lo;
    return {half{f32_to_f16_bits(mag)}, static_cast<std::uint8_t>(r.lo < 0.0f ? 1 : 0)};
  }
  const float off = round_with(r.lo * affine_inverse_scale(s), rounding);  // round(lo/s) ≤ 0 when lo ≤ 0
  float z = -off;
  z = z > 0.0f ? z : 0.0f;
  z = z < L ? z : L;
  return {half{s16}, static_cast<std::uint8_t>(z)};
}

/// q = clamp(round(x·inv) + z, 0, L), inv = affine_inverse_scale(s16).
KVCOMPRESS_HOST_DEVICE std::uint8_t affine_int_code(float x, float inv, std::uint8_t zero, int bits,
                                                    Rounding rounding = Rounding::kHalfEven) {
  const float y = x * inv;
  const float q = round_with(y, rounding) + static_cast<float>(zero);
  const float L = static_cast<float>(affine_levels(bits));
  return static_cast<std::uint8_t>(q > 0.0f ? (q < L ? q : L) : 0.0f);
}

/// x̂ = s16·(q − z).
KVCOMPRESS_HOST_DEVICE float affine_int_dequant(std::uint8_t q, AffineIntParams p) {
  return to_float(p.scale) * static_cast<float>(static_cast<int>(q) - static_cast<int>(p.zero));
}

namespace detail {

/// Argument checks shared by the checked group quantizers; returns the validated range.
inline GroupRange checked_group_range(const char* where, const float* x, std::size_t n,
                                      std::size_t stride, const AffineConfig& cfg) {
  kvcompress::detail::require(cfg.bits >= kAffineMinBits && cfg.bits <= kAffineMaxBits, where, "bits",
                              cfg.bits, "an integer in [1, 8]");
  kvcompress::detail::require(n > 0, where, "n", n, "a group size ≥ 1");
  kvcompress::detail::require(stride > 0, where, "stride", stride, "≥ 1");
  kvcompress::detail::require(cfg.clip > 0.0f && cfg.clip <= 1.0f, where, "clip", cfg.clip,
                              "a clip ratio in (0, 1]");
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v) || std::fabs(v) > kHalfMax) {
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), v,
                                  "a finite value with |x| ≤ 65504 (fp16 metadata)");
    }
  }
  const GroupRange r = group_range(x, n, stride, cfg.clip);
  const float s = (r.hi - r.lo) / static_cast<float>(affine_levels(cfg.bits));
  kvcompress::detail::require(s <= kHalfMax, where, "max(x) - min(x)", r.hi - r.lo,
                              "a range whose scale (max − min)/L fits fp16 (≤ 65504)");
  return r;
}

}  // namespace detail

/// Quantizes one group of n values x[i·stride] with a float zero point (BB-1) and writes n codes
/// (one per byte, contiguous; pack them with bit_packing.hpp). Throws InvalidArgument for bits
/// outside [1, 8], n = 0, stride = 0, clip outside (0, 1], non-finite or beyond-fp16 inputs.
/// \param x     [n] values at stride `stride` (per-channel groups walk the token axis).
/// \param codes [n] output codes in [0, 2^bits − 1].
/// \return the fp16 metadata (s16, z16).
inline AffineParams affine_quantize(const float* x, std::size_t n, std::size_t stride,
                                    const AffineConfig& cfg, std::uint8_t* codes) {
  const GroupRange r = detail::checked_group_range("quant::common::affine_quantize", x, n, stride, cfg);
  const AffineParams p = affine_params(r, cfg.bits);
  const float z = to_float(p.zero);
  const float inv = affine_inverse_scale(to_float(p.scale));
  for (std::size_t i = 0; i < n; ++i) codes[i] = affine_code(x[i * stride], z, inv, cfg.bits, cfg.rounding);
  return p;
}

/// y[i·stride] = q_i·s16 + z16 for n contiguous codes.
inline void affine_dequantize(const std::uint8_t* codes, std::size_t n, AffineParams p, float* y,
                              std::size_t stride) {
  for (std::size_t i = 0; i < n; ++i) y[i * stride] = affine_dequant(codes[i], p);
}

/// Quantizes one group with an integer zero point (BB-1 variant); same checks and layout as
/// affine_quantize.
inline AffineIntParams affine_int_quantize(const float* x, std::size_t n, std::size_t stride,
                                           const AffineConfig& cfg, std::uint8_t* codes) {
  const GroupRange r =
      detail::checked_group_range("quant::common::affine_int_quantize", x, n, stride, cfg);
  const AffineIntParams p = affine_int_params(r, cfg.bits, cfg.rounding);
  const float inv = affine_inverse_scale(to_float(p.scale));
  for (std::size_t i = 0; i < n; ++i)
    codes[i] = affine_int_code(x[i * stride], inv, p.zero, cfg.bits, cfg.rounding);
  return p;
}

/// y[i·stride] = s16·(q_i − z) for n contiguous codes.
inline void affine_int_dequantize(const std::uint8_t* codes, std::size_t n, AffineIntParams p,
                                  float* y, std::size_t stride) {
  for (std::size_t i = 0; i < n; ++i) y[i * stride] = affine_int_dequant(codes[i], p);
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
