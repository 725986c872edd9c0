// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+FMA) AKVQ-VL decode kernels (row format: kernels/cpu/scalar/akvq_vl.hpp). Eight
/// channels per vector: their two plane bytes are broadcast, shifted per lane (`vpsrlvd` by
/// 0, 2, …, 14) and masked to the 2-bit fields (plus 4× the plane-1 fields for 4-bit rows), then
/// converted to fp32. akvq_row_dot accumulates q_c·code_c with FMA per group and reduces
/// horizontally; akvq_row_axpy adds w·s·code − w·s·z with one FMA per vector. Both differ from
/// scalar only by fp32 summation order / FMA rounding. Quantization, dequantization, group sums
/// and the WHT use scalar. group % 8 ≠ 0 uses scalar.

#include "kvcompress/kernels/cpu/scalar/akvq_vl.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// fp32 codes of channels [c, c + 8) (c % 8 == 0).
inline __m256 akvq_codes8(const std::uint8_t* plane, const std::uint8_t* ext, std::size_t c) {
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3);
  const int b0 = plane[c / 4] | (plane[c / 4 + 1] << 8);
  __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(b0), shifts), three);
  if (ext) {
    const int b1 = ext[c / 4] | (ext[c / 4 + 1] << 8);
    const __m256i e = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(b1), shifts), three);
    v = _mm256_add_epi32(v, _mm256_slli_epi32(e, 2));
  }
  return _mm256_cvtepi32_ps(v);
}

inline float akvq_hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
  return _mm_cvtss_f32(lo);
}

}  // namespace detail

inline void akvq_wht(float* x, std::size_t d, isa::avx2) { akvq_wht(x, d, isa::scalar{}); }

inline float akvq_row_dot(const std::uint8_t* row, const std::uint8_t* ext, std::size_t d, std::size_t group,
                          const float* q, const float* qsum, isa::avx2) {
  if (group % 8 != 0) return akvq_row_dot(row, ext, d, group, q, qsum, isa::scalar{});
  const std::size_t pb = akvq_plane_bytes(d);
  float total = 0.0f;
  for (std::size_t g = 0; g < d / group; ++g) {
    __m256 acc = _mm256_setzero_ps();
    for (std::size_t c = g * group; c < (g + 1) * group; c += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), detail::akvq_codes8(row, ext, c), acc);
    const std::uint8_t* meta = row + pb + 4 * g;
    total += to_float(detail::akvq_scale(meta)) * (detail::akvq_hsum(acc) - static_cast<float>(meta[2]) * qsum[g]);
  }
  return total;
}

inline void akvq_row_axpy(const std::uint8_t* row, const std::uint8_t* ext, std::size_t d, std::size_t group, float w,
                          float* out, isa::avx2) {
  if (group % 8 != 0) return akvq_row_axpy(row, ext, d, group, w, out, isa::scalar{});
  const std::size_t pb = akvq_plane_bytes(d);
  for (std::size_t g = 0; g < d / group; ++g) {
    const std::uint8_t* meta = row + pb + 4 * g;
    const float ws = w * to_float(detail::akvq_scale(meta));
    const __m256 vws = _mm256_set1_ps(ws);
    const __m256 vwz = _mm256_set1_ps(ws * static_cast<float>(meta[2]));
    for (std::size_t c = g * group; c < (g + 1) * group; c += 8) {
      const __m256 t = _mm256_fmsub_ps(vws, detail::akvq_codes8(row, ext, c), vwz);
      _mm256_storeu_ps(out + c, _mm256_add_ps(_mm256_loadu_ps(out + c), t));
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
