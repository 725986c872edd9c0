// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-14 of methods/quantization.md: rotary position embedding (RoPE, Su et al. 2021, arXiv
/// 2104.09864) for pre-RoPE key stores (KVQuant, CQ) and for the exact inverse rotation that
/// writes a merged post-RoPE key back into a pre-RoPE store (BB-16 rule 4).
///
/// Pair i ∈ [0, d/2) rotates by the angle pos·θ_i, θ_i = base^(−2i/d):
///   x'_a = x_a·cos − x_b·sin,   x'_b = x_a·sin + x_b·cos
/// with (a, b) = (i, i + d/2) for RopeLayout::kRotateHalf (HF Llama "rotate_half", KVQuant
/// App. C) or (2i, 2i + 1) for kInterleaved (GPT-J / original Meta Llama).
/// Scaling: kLinear divides the position by `factor` (position interpolation); kNtk replaces the
/// base by base·factor^(d/(d−2)) (static "NTK-aware" scaling). Llama-3 / YaRN schedules are not
/// covered.
/// Angles, cos and sin are computed in double and rounded to fp32 once; the rotation itself runs
/// in fp32. The inverse uses the same cos and the negated sin, i.e. the exact transpose of the
/// forward fp32 matrix, so rotate-then-unrotate is the identity up to fp32 rounding of the
/// products (≈ 1e-7 relative).

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Which channels form a rotation pair.
enum class RopeLayout {
  kRotateHalf,   ///< (i, i + d/2): HF Llama/Mistral/Qwen
  kInterleaved,  ///< (2i, 2i + 1): GPT-J, original Meta Llama
};

/// Context-extension scaling of the rotation.
enum class RopeScaling {
  kNone,    ///< angle = pos·θ_i
  kLinear,  ///< angle = (pos / factor)·θ_i
  kNtk,     ///< base' = base·factor^(d/(d−2))
};

/// Stable names for logs.
inline const char* to_string(RopeLayout l) { return l == RopeLayout::kRotateHalf ? "rotate_half" : "interleaved"; }
inline const char* to_string(RopeScaling s) {
  return s == RopeScaling::kNone ? "none" : (s == RopeScaling::kLinear ? "linear" : "ntk");
}

/// RoPE parameters the host hands to a pre-RoPE store.
struct RopeParams {
  std::size_t head_dim = 128;                    ///< d, even
  double base = 10000.0;                         ///< θ base (Llama 10000, Llama-3 500000)
  RopeLayout layout = RopeLayout::kRotateHalf;   ///< pairing convention
  RopeScaling scaling = RopeScaling::kNone;      ///< context-extension scaling
  double factor = 1.0;                           ///< scaling factor (> 0)
};

namespace detail {

inline void check_rope(const char* where, const RopeParams& p) {
  kvcompress::detail::require(p.head_dim >= 2 && p.head_dim % 2 == 0, where, "head_dim", p.head_dim,
                              "an even head dimension ≥ 2");
  kvcompress::detail::require(std::isfinite(p.base) && p.base > 1.0, where, "base", p.base, "a finite base > 1");
  kvcompress::detail::require(std::isfinite(p.factor) && p.factor > 0.0, where, "factor", p.factor,
                              "a finite scaling factor > 0");
}

/// Rotates x by `position` (may be negative: the inverse rotation).
inline void rope_rotate(float* x, const RopeParams& p, double position) {
  const std::size_t half = p.head_dim / 2;
  const double d = static_cast<double>(p.head_dim);
  const double base = p.scaling == RopeScaling::kNtk ? p.base * std::pow(p.factor, d / (d - 2.0)) : p.base;
  const double pos = p.scaling == RopeScaling::kLinear ? position / p.factor : position;
  for (std::size_t i = 0; i < half; ++i) {
    const double theta = std::pow(base, -2.0 * static_cast<double>(i) / d);
    const float c = static_cast<float>(std::cos(pos * theta));
    const float s = static_cast<float>(std::sin(pos * theta));
    const std::size_t a = p.layout == RopeLayout::kRotateHalf ? i : 2 * i;
    const std::size_t b = p.layout == RopeLayout::kRotateHalf ? i + half : 2 * i + 1;
    const float xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xa * s + xb * c;
  }
}

}  // namespace detail

/// Applies RoPE at absolute position pos to one head vector x[0..d) in place.
/// Throws InvalidArgument for an odd or zero head_dim, base ≤ 1 or factor ≤ 0.
inline void rope_apply(float* x, const RopeParams& p, std::int64_t pos) {
  detail::check_rope("quant::common::rope_apply", p);
  detail::rope_rotate(x, p, static_cast<double>(pos));
}

/// Undoes rope_apply at position pos (rotation by −pos: the transpose of the forward matrix).
inline void rope_unapply(float* x, const RopeParams& p, std::int64_t pos) {
  detail::check_rope("quant::common::rope_unapply", p);
  detail::rope_rotate(x, p, -static_cast<double>(pos));
}

/// Applies RoPE to rows[r·ld .. r·ld + d) at positions pos[r], r ∈ [0, n) (a pre-RoPE store's
/// keys after dequantization, with the slots' original positions).
inline void rope_apply_rows(float* rows, std::size_t n, std::size_t ld, const std::int32_t* pos,
                            const RopeParams& p) {
  constexpr const char* where = "quant::common::rope_apply_rows";
  detail::check_rope(where, p);
  kvcompress::detail::require(n == 0 || ld >= p.head_dim, where, "ld", ld, "≥ head_dim");
  for (std::size_t r = 0; r < n; ++r) detail::rope_rotate(rows + r * ld, p, static_cast<double>(pos[r]));
}

/// Inverse of rope_apply_rows.
inline void rope_unapply_rows(float* rows, std::size_t n, std::size_t ld, const std::int32_t* pos,
                              const RopeParams& p) {
  constexpr const char* where = "quant::common::rope_unapply_rows";
  detail::check_rope(where, p);
  kvcompress::detail::require(n == 0 || ld >= p.head_dim, where, "ld", ld, "≥ head_dim");
  for (std::size_t r = 0; r < n; ++r) detail::rope_rotate(rows + r * ld, p, -static_cast<double>(pos[r]));
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
