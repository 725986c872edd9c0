// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+FMA) CQ kernels (layouts: kernels/cpu/scalar/cq.hpp). The decode loops only:
///  * cq_centroid_table: 8 centroids per vector along the transposed codebook's K axis, one FMA
///    per channel of the group (scalar: mul then add; the difference is within fp32 rounding).
///  * cq_table_logits: 8 slots per vector; per group the 8 indices (contiguous in the
///    group-major block layout) are widened and `vgatherdps` fetches their table entries; groups
///    are summed in the same order as scalar, so with equal tables the logits are bit-identical.
///  * cq_prob_gather: per (group, channel) an 8-wide FMA dot product over K.
/// Encoding and the probability scatter stay scalar (a scatter with repeated indices has no
/// AVX2 form). K < 8 (b < 3) uses scalar.

#include "kvcompress/kernels/cpu/scalar/cq.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline float cq_hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
  return _mm_cvtss_f32(lo);
}
inline __m256i cq_load8(const std::uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i cq_load8(const std::uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace detail

template <class Index>
inline void cq_encode(const float* x, std::size_t d, int c, const float* cb, std::size_t ncent, Index* idx,
                      std::size_t stride, isa::avx2) {
  cq_encode(x, d, c, cb, ncent, idx, stride, isa::scalar{});
}
template <class Index>
inline void cq_dequantize(const Index* idx, std::size_t stride, std::size_t d, int c, const float* cb,
                          std::size_t ncent, float* y, isa::avx2) {
  cq_dequantize(idx, stride, d, c, cb, ncent, y, isa::scalar{});
}
template <class Index>
inline void cq_prob_scatter(const Index* idx, std::size_t stride, std::size_t n, std::size_t groups,
                            const float* p, float* psum, std::size_t ncent, isa::avx2) {
  cq_prob_scatter(idx, stride, n, groups, p, psum, ncent, isa::scalar{});
}

inline void cq_centroid_table(const float* q, std::size_t d, int c, const float* cbt, std::size_t ncent,
                              float* table, isa::avx2) {
  if (ncent % 8 != 0) return cq_centroid_table(q, d, c, cbt, ncent, table, isa::scalar{});
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g) {
    float* tg = table + g * ncent;
    const float* base = cbt + g * cc * ncent;
    for (std::size_t k = 0; k < ncent; k += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (std::size_t t = 0; t < cc; ++t)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(q[g * cc + t]), _mm256_loadu_ps(base + t * ncent + k), acc);
      _mm256_storeu_ps(tg + k, acc);
    }
  }
}

template <class Index>
inline void cq_table_logits(const Index* idx, std::size_t stride, std::size_t n, std::size_t groups,
                            const float* table, std::size_t ncent, float* out, isa::avx2) {
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (std::size_t g = 0; g < groups; ++g) {
      const __m256i ix = detail::cq_load8(idx + g * stride + j);
      acc = _mm256_add_ps(acc, _mm256_i32gather_ps(table + g * ncent, ix, 4));
    }
    _mm256_storeu_ps(out + j, acc);
  }
  if (j < n) cq_table_logits(idx + j, stride, n - j, groups, table, ncent, out + j, isa::scalar{});
}

inline void cq_prob_gather(const float* psum, std::size_t d, int c, const float* cbt, std::size_t ncent,
                           float* out, isa::avx2) {
  if (ncent % 8 != 0) return cq_prob_gather(psum, d, c, cbt, ncent, out, isa::scalar{});
  const std::size_t cc = static_cast<std::size_t>(c);
  for (std::size_t g = 0; g < d / cc; ++g) {
    const float* pg = psum + g * ncent;
    for (std::size_t t = 0; t < cc; ++t) {
      const float* col = cbt + (g * cc + t) * ncent;
      __m256 acc = _mm256_setzero_ps();
      for (std::size_t k = 0; k < ncent; k += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(pg + k), _mm256_loadu_ps(col + k), acc);
      out[g * cc + t] += detail::cq_hsum(acc);
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
