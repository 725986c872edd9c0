// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-6 of methods/quantization.md: vector quantization with multi-dimensional codebooks, as
/// Coupled Quantization (CQ, arXiv 2405.03917, §3) uses it. A d-vector is split into d/c
/// sub-vectors of c contiguous channels; sub-vector g is replaced by the index of its nearest
/// centroid (squared L2) in codebook g of 2^b centroids × c channels; ties → lowest index.
/// Distances are accumulated in fp32 in channel order 0..c−1 (a SIMD kernel that sums in another
/// order may resolve exact near-ties differently; the brute-force check in the tests is exact).
/// Encoding costs O(2^b·c) per sub-vector (CQ §3 Ambiguities). Codebooks come from the weighted
/// k-means of calib/kmeans.hpp.
///
/// Codebook memory: codebooks[g·codebook_stride + k·c + j] = centroid k of group g, channel j
/// ([d/c][2^b][c] when codebook_stride = 2^b·c; codebook_stride = 0 shares one codebook).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Largest codebook index width (CQ uses 8, 10 and 12 bits; indices are uint16).
inline constexpr int kVqMaxBits = 16;

/// Σ_j (a_j − b_j)² in fp32, j = 0..c−1 in order.
KVCOMPRESS_HOST_DEVICE float squared_distance(const float* a, const float* b, int c) {
  float s = 0.0f;
  for (int j = 0; j < c; ++j) {
    const float e = a[j] - b[j];
    s += e * e;
  }
  return s;
}

/// Index of the centroid of codebook [k][c] nearest x (ties → lowest index).
KVCOMPRESS_HOST_DEVICE std::uint32_t nearest_centroid(const float* x, const float* codebook,
                                                      std::size_t k, int c) {
  std::uint32_t best = 0;
  float best_dist = squared_distance(x, codebook, c);
  for (std::size_t i = 1; i < k; ++i) {
    const float dist = squared_distance(x, codebook + i * static_cast<std::size_t>(c), c);
    if (dist < best_dist) {
      best = static_cast<std::uint32_t>(i);
      best_dist = dist;
    }
  }
  return best;
}

namespace detail {

inline void check_vq(const char* where, std::size_t d, int c, int bits) {
  kvcompress::detail::require(c >= 1, where, "c", c, "a sub-vector width ≥ 1");
  kvcompress::detail::require(d > 0 && d % static_cast<std::size_t>(c) == 0, where, "d", d,
                              "a positive multiple of c = " + std::to_string(c));
  kvcompress::detail::require(bits >= 1 && bits <= kVqMaxBits, where, "bits", bits, "an integer in [1, 16]");
}

}  // namespace detail

/// Encodes one d-vector into d/c codebook indices.
/// \param codebooks group g's codebook [2^bits][c] at codebooks + g·codebook_stride.
/// Throws InvalidArgument for c = 0, d not a positive multiple of c, bits outside [1, 16] or a
/// non-finite input.
inline void vq_encode(const float* x, std::size_t d, int c, const float* codebooks,
                      std::size_t codebook_stride, int bits, std::uint16_t* idx) {
  constexpr const char* where = "quant::common::vq_encode";
  detail::check_vq(where, d, c, bits);
  for (std::size_t i = 0; i < d; ++i) {
    if (!std::isfinite(x[i]))
      kvcompress::detail::require(false, where, ("x[" + std::to_string(i) + "]").c_str(), x[i], "a finite value");
  }
  const std::size_t k = std::size_t{1} << bits;
  for (std::size_t g = 0; g < d / static_cast<std::size_t>(c); ++g)
    idx[g] = static_cast<std::uint16_t>(
        nearest_centroid(x + g * static_cast<std::size_t>(c), codebooks + g * codebook_stride, k, c));
}

/// Decodes d/c indices into a d-vector (y = the chosen centroids). Throws InvalidArgument for
/// the same shape errors as vq_encode or an index ≥ 2^bits.
inline void vq_decode(const std::uint16_t* idx, std::size_t d, int c, const float* codebooks,
                      std::size_t codebook_stride, int bits, float* y) {
  constexpr const char* where = "quant::common::vq_decode";
  detail::check_vq(where, d, c, bits);
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g) {
    if (idx[g] >= (std::size_t{1} << bits))
      kvcompress::detail::require(false, where, ("idx[" + std::to_string(g) + "]").c_str(), idx[g], "an index < 2^bits");
    const float* centroid = codebooks + g * codebook_stride + idx[g] * cc;
    for (std::size_t j = 0; j < cc; ++j) y[g * cc + j] = centroid[j];
  }
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
