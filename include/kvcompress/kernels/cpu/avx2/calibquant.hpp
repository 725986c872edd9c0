// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 CalibQuant decode kernels (contract: kernels/cpu/scalar/calibquant.hpp). One code byte
/// (8 channels, MSB first) is broadcast to 8 lanes, ANDed with the lane masks {128, 64, …, 1} and
/// compared for equality: the result is an all-ones lane mask exactly where the bit is set, so
///   logits: acc += mask AND (q⊙s)[8 channels]        (Σ_c (q_c s_c)·code_c, no multiply)
///   values: acc[8 channels] += mask AND broadcast(p_t)  (Σ_t p_t·code_{t,c})
/// Each token's masks are built once and reused for every query row. fp32 throughout.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/scalar/calibquant.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// Lane mask (all ones / zero per channel) of the 8 bits of one P-CALIB byte.
inline __m256 calibquant_byte_mask_avx2(std::uint8_t byte) {
  const __m256i bits = _mm256_setr_epi32(128, 64, 32, 16, 8, 4, 2, 1);
  const __m256i b = _mm256_and_si256(_mm256_set1_epi32(byte), bits);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, bits));
}

inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace detail

inline void calibquant_key_logits(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                  const float* s, const float* z, const float* q, int rows, float* out,
                                  std::size_t ldl, isa::avx2) {
  alignas(32) float qs[kCalibQuantMaxRows * kCalibQuantMaxDim];
  float bias[kCalibQuantMaxRows];
  const int nb = d / 8;
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    __m256 b = _mm256_setzero_ps();
    for (int c = 0; c < d; c += 8) {
      const __m256 qv = _mm256_loadu_ps(qr + c);
      _mm256_store_ps(qs + r * d + c, _mm256_mul_ps(qv, _mm256_loadu_ps(s + c)));
      b = _mm256_fmadd_ps(qv, _mm256_loadu_ps(z + c), b);
    }
    bias[r] = detail::hsum_avx2(b);
  }
  __m256 mask[kCalibQuantMaxDim / 8];
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = codes + t * stride;
    for (int i = 0; i < nb; ++i) mask[i] = detail::calibquant_byte_mask_avx2(row[i]);
    for (int r = 0; r < rows; ++r) {
      const float* qr = qs + r * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int i = 0;
      for (; i + 1 < nb; i += 2) {
        a0 = _mm256_add_ps(a0, _mm256_and_ps(mask[i], _mm256_load_ps(qr + 8 * i)));
        a1 = _mm256_add_ps(a1, _mm256_and_ps(mask[i + 1], _mm256_load_ps(qr + 8 * i + 8)));
      }
      if (i < nb) a0 = _mm256_add_ps(a0, _mm256_and_ps(mask[i], _mm256_load_ps(qr + 8 * i)));
      out[static_cast<std::size_t>(r) * ldl + t] = detail::hsum_avx2(_mm256_add_ps(a0, a1)) + bias[r];
    }
  }
}

inline void calibquant_value_accumulate(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                        const float* s, const float* z, const float* p, std::size_t ldp,
                                        int rows, float* out, isa::avx2) {
  alignas(32) float acc[kCalibQuantMaxRows * kCalibQuantMaxDim];
  float psum[kCalibQuantMaxRows];
  const int nb = d / 8;
  for (int r = 0; r < rows; ++r) {
    psum[r] = 0.0f;
    for (int c = 0; c < d; ++c) acc[r * d + c] = 0.0f;
  }
  __m256 mask[kCalibQuantMaxDim / 8];
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = codes + t * stride;
    for (int i = 0; i < nb; ++i) mask[i] = detail::calibquant_byte_mask_avx2(row[i]);
    for (int r = 0; r < rows; ++r) {
      const float pt = p[static_cast<std::size_t>(r) * ldp + t];
      psum[r] += pt;
      const __m256 pv = _mm256_set1_ps(pt);
      float* ar = acc + r * d;
      for (int i = 0; i < nb; ++i)
        _mm256_store_ps(ar + 8 * i, _mm256_add_ps(_mm256_load_ps(ar + 8 * i), _mm256_and_ps(mask[i], pv)));
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* o = out + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    const float* ar = acc + r * d;
    const __m256 ps = _mm256_set1_ps(psum[r]);
    for (int c = 0; c < d; c += 8) {
      const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(s + c), _mm256_load_ps(ar + c)),
                                     _mm256_mul_ps(_mm256_loadu_ps(z + c), ps));
      _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_loadu_ps(o + c), v));
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
