// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of AKVQ-VL (arXiv 2501.15021; methods/quantization.md §5): per-token
/// asymmetric quantization with an integer zero point (BB-1 variant, common/affine_quant.hpp) of
/// Walsh–Hadamard-rotated rows (BB-9), 2 or 4 bits, groups of `group` channels.
///
/// Row format (identical on every ISA), d channels, G = d/group groups:
///   row: [d/4 bytes] plane 0, 2-bit fields packed LSB-first (channel c at bits 2·(c mod 4) of
///        byte c/4, P-KIVI order within a byte), then G × 4 bytes of metadata
///        {fp16 scale, uint8 zero, uint8 pad}
///   ext: [d/4 bytes] plane 1 (4-bit rows only): code = plane0 + 4·plane1
/// Reconstruction x̂_c = s_g·(code_c − z_g). 2-bit rows use clip 0.8, 4-bit rows clip 1.0 (the
/// paper's ratios; lo = ratio·min, hi = ratio·max, the spec's [rec]).
///
/// Fused decode kernels (no dequantized history): q·x̂ = Σ_g s_g·(Σ_{c∈g} q_c·code_c − z_g·Σ_{c∈g} q_c)
/// with the per-group query sums computed once per row and step (BB-15 post-scaling), and
/// out += w·x̂ as out_c += (w·s_g)·code_c − w·s_g·z_g.
///
/// akvq_wht is the block-diagonal normalized WHT of common/hadamard.hpp (same butterflies, same
/// block order) without its heap-allocated block list, for the decode path.

#include <cstddef>
#include <cstdint>

#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/isa.hpp"
#include "kvcompress/policies/quant/common/affine_quant.hpp"
#include "kvcompress/policies/quant/common/hadamard.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Bytes of one 2-bit plane of d channels.
constexpr std::size_t akvq_plane_bytes(std::size_t d) { return d / 4; }
/// Bytes of one base row (plane 0 + metadata).
constexpr std::size_t akvq_row_bytes(std::size_t d, std::size_t group) { return d / 4 + 4 * (d / group); }
/// Clip ratio of a b-bit row (paper: 0.8 for 2-bit, 1.0 for 4-bit).
constexpr float akvq_default_clip(int bits) { return bits == 2 ? 0.8f : 1.0f; }

/// In-place normalized block-diagonal WHT of x[0..d) (d even; blocks largest first).
inline void akvq_wht(float* x, std::size_t d, isa::scalar) {
  std::size_t off = 0;
  for (std::size_t bit = std::size_t{1} << 15; bit != 0; bit >>= 1)
    if (d & bit) {
      quant::common::wht_power_of_two(x + off, bit);
      off += bit;
    }
}

namespace detail {
inline half akvq_scale(const std::uint8_t* meta) {
  half h;
  h.bits = static_cast<std::uint16_t>(meta[0] | (meta[1] << 8));
  return h;
}
inline std::uint32_t akvq_field(const std::uint8_t* plane, std::size_t c) { return (plane[c / 4] >> (2 * (c % 4))) & 3u; }
}  // namespace detail

/// Quantizes x[0..d) (already rotated) to `bits` ∈ {2, 4} with clip ratio `clip`: plane 0 and
/// metadata to row, plane 1 to ext (bits == 4 only).
inline void akvq_quantize_row(const float* x, std::size_t d, std::size_t group, int bits, float clip, std::uint8_t* row,
                              std::uint8_t* ext, isa::scalar) {
  namespace qc = quant::common;
  const std::size_t pb = akvq_plane_bytes(d);
  for (std::size_t i = 0; i < pb; ++i) {
    row[i] = 0;
    if (bits == 4) ext[i] = 0;
  }
  for (std::size_t g = 0; g < d / group; ++g) {
    const float* xg = x + g * group;
    const qc::AffineIntParams p = qc::affine_int_params(qc::group_range(xg, group, 1, clip), bits);
    const float inv = qc::affine_inverse_scale(to_float(p.scale));
    for (std::size_t c = 0; c < group; ++c) {
      const std::uint32_t code = qc::affine_int_code(xg[c], inv, p.zero, bits);
      const std::size_t ch = g * group + c;
      row[ch / 4] = static_cast<std::uint8_t>(row[ch / 4] | ((code & 3u) << (2 * (ch % 4))));
      if (bits == 4) ext[ch / 4] = static_cast<std::uint8_t>(ext[ch / 4] | ((code >> 2) << (2 * (ch % 4))));
    }
    std::uint8_t* meta = row + pb + 4 * g;
    meta[0] = static_cast<std::uint8_t>(p.scale.bits & 0xff);
    meta[1] = static_cast<std::uint8_t>(p.scale.bits >> 8);
    meta[2] = p.zero;
    meta[3] = 0;
  }
}

/// y[0..d) = the reconstruction of a row (ext == nullptr: 2-bit row).
inline void akvq_dequantize_row(const std::uint8_t* row, const std::uint8_t* ext, std::size_t d, std::size_t group,
                                float* y, isa::scalar) {
  const std::size_t pb = akvq_plane_bytes(d);
  for (std::size_t g = 0; g < d / group; ++g) {
    const std::uint8_t* meta = row + pb + 4 * g;
    quant::common::AffineIntParams p{detail::akvq_scale(meta), meta[2]};
    for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
      const std::uint32_t code = detail::akvq_field(row, c) + (ext ? 4u * detail::akvq_field(ext, c) : 0u);
      y[c] = quant::common::affine_int_dequant(static_cast<std::uint8_t>(code), p);
    }
  }
}

/// Per-group sums of a (rotated) query row: qsum[g] = Σ_{c∈g} q_c.
inline void akvq_group_sums(const float* q, std::size_t d, std::size_t group, float* qsum, isa::scalar) {
  for (std::size_t g = 0; g < d / group; ++g) {
    float s = 0.0f;
    for (std::size_t c = g * group; c < (g + 1) * group; ++c) s += q[c];
    qsum[g] = s;
  }
}

/// q·x̂ of one row: Σ_g s_g·(Σ_c q_c·code_c − z_g·qsum_g).
inline float akvq_row_dot(const std::uint8_t* row, const std::uint8_t* ext, std::size_t d, std::size_t group,
                          const float* q, const float* qsum, isa::scalar) {
  const std::size_t pb = akvq_plane_bytes(d);
  float total = 0.0f;
  for (std::size_t g = 0; g < d / group; ++g) {
    const std::uint8_t* meta = row + pb + 4 * g;
    float s = 0.0f;
    for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
      const std::uint32_t code = detail::akvq_field(row, c) + (ext ? 4u * detail::akvq_field(ext, c) : 0u);
      s += q[c] * static_cast<float>(code);
    }
    total += to_float(detail::akvq_scale(meta)) * (s - static_cast<float>(meta[2]) * qsum[g]);
  }
  return total;
}

/// out[c] += w·x̂_c for one row.
inline void akvq_row_axpy(const std::uint8_t* row, const std::uint8_t* ext, std::size_t d, std::size_t group, float w,
                          float* out, isa::scalar) {
  const std::size_t pb = akvq_plane_bytes(d);
  for (std::size_t g = 0; g < d / group; ++g) {
    const std::uint8_t* meta = row + pb + 4 * g;
    const float ws = w * to_float(detail::akvq_scale(meta));
    const float wz = ws * static_cast<float>(meta[2]);
    for (std::size_t c = g * group; c < (g + 1) * group; ++c) {
      const std::uint32_t code = detail::akvq_field(row, c) + (ext ? 4u * detail::akvq_field(ext, c) : 0u);
      out[c] += ws * static_cast<float>(code) - wz;
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
