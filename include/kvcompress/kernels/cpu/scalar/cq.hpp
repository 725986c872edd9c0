// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of CQ (Coupled Quantization, arXiv 2405.03917; methods/
/// quantization.md §3, BB-6): c-channel sub-vectors coded by the index of their nearest centroid.
///
/// Layouts (one stream, one of K/V; G = d/c groups, K = 2^b centroids):
///   natural codebook    cb [G][K][c]   (encode, per-slot dequantization)
///   transposed codebook cbt[G][c][K]   (the per-step table and the value gather run along K)
///   indices of a block  idx[G][stride] (group-major: the indices of consecutive slots for one
///                                       group are contiguous, so SIMD gathers 8/16 slots at once)
/// Index = std::uint8_t (b ≤ 8) or std::uint16_t (b ≤ 16).
///
/// Fused attention (BB-15 style, "never dequantize the history"):
///   logits:     table[g][k] = q[g·c .. g·c+c) · C_g[k]   once per query row and step (K·d MACs),
///               then logit_j = Σ_g table[g][idx_j[g]]     (G lookups per slot)
///   accumulate: P[g][k] = Σ_{j: idx_j[g] = k} p_j         (G scatter-adds per slot),
///               then out[g·c + t] += Σ_k P[g][k]·C_g[k][t] (K·d MACs per row)
/// Both are exact re-associations of Σ_j p_j·v̂_j and q·k̂_j; only the fp32 summation order differs
/// from dense attention over the dequantized rows.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/isa.hpp"
#include "kvcompress/policies/quant/common/vector_quant.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Encodes one d-vector: idx[g·stride] = nearest centroid of x[g·c .. g·c+c) in cb[g] (ties →
/// lowest index, BB-6; O(K·c) per group).
template <class Index>
inline void cq_encode(const float* x, std::size_t d, int c, const float* cb, std::size_t ncent, Index* idx,
                      std::size_t stride, isa::scalar) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g)
    idx[g * stride] = static_cast<Index>(quant::common::nearest_centroid(x + g * cc, cb + g * ncent * cc, ncent, c));
}

/// y[0..d) = the centroids of one slot's indices idx[g·stride].
template <class Index>
inline void cq_dequantize(const Index* idx, std::size_t stride, std::size_t d, int c, const float* cb,
                          std::size_t ncent, float* y, isa::scalar) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g) {
    const float* centroid = cb + (g * ncent + idx[g * stride]) * cc;
    for (std::size_t t = 0; t < cc; ++t) y[g * cc + t] = centroid[t];
  }
}

/// table[g·K + k] = Σ_t q[g·c + t]·cbt[g][t][k] for one query row (fp32, t ascending).
inline void cq_centroid_table(const float* q, std::size_t d, int c, const float* cbt, std::size_t ncent,
                              float* table, isa::scalar) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g) {
    float* tg = table + g * ncent;
    for (std::size_t k = 0; k < ncent; ++k) tg[k] = 0.0f;
    for (std::size_t t = 0; t < cc; ++t) {
      const float qt = q[g * cc + t];
      const float* col = cbt + (g * cc + t) * ncent;
      for (std::size_t k = 0; k < ncent; ++k) tg[k] += qt * col[k];
    }
  }
}

/// out[j] = Σ_g table[g·K + idx[g·stride + j]] for slots j < n (one query row; g ascending).
template <class Index>
inline void cq_table_logits(const Index* idx, std::size_t stride, std::size_t n, std::size_t groups,
                            const float* table, std::size_t ncent, float* out, isa::scalar) {
  for (std::size_t j = 0; j < n; ++j) {
    float s = 0.0f;
    for (std::size_t g = 0; g < groups; ++g) s += table[g * ncent + idx[g * stride + j]];
    out[j] = s;
  }
}

/// psum[g·K + idx[g·stride + j]] += p[j] for slots j < n (one row).
template <class Index>
inline void cq_prob_scatter(const Index* idx, std::size_t stride, std::size_t n, std::size_t groups,
                            const float* p, float* psum, std::size_t ncent, isa::scalar) {
  for (std::size_t g = 0; g < groups; ++g) {
    const Index* ig = idx + g * stride;
    float* pg = psum + g * ncent;
    for (std::size_t j = 0; j < n; ++j) pg[ig[j]] += p[j];
  }
}

/// out[g·c + t] += Σ_k psum[g·K + k]·cbt[g][t][k] (one row; k ascending).
inline void cq_prob_gather(const float* psum, std::size_t d, int c, const float* cbt, std::size_t ncent,
                           float* out, isa::scalar) {
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g)
    for (std::size_t t = 0; t < cc; ++t) {
      const float* col = cbt + (g * cc + t) * ncent;
      float s = 0.0f;
      for (std::size_t k = 0; k < ncent; ++k) s += psum[g * ncent + k] * col[k];
      out[g * cc + t] += s;
    }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
