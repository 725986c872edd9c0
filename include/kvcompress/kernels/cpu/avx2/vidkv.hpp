// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 VidKV kernels (contract: kernels/cpu/scalar/vidkv.hpp). A plane's 32 token codes become
/// four 8-lane float vectors: b = 1 by broadcasting the word, shifting lane j right by j (and by
/// 8, 16, 24 for the other vectors) and masking bit 0; b = 2 the same on the two words with
/// shifts 2j. Logits FMA the broadcast plane weight into four token accumulators per row;
/// value dots FMA the codes with the row's 32 probabilities and reduce once per plane.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/scalar/vidkv.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// The 32 codes of a plane as four vectors of 8 tokens.
inline void vidkv_codes_avx2(const std::uint32_t* plane, int bits, __m256 c[4]) {
  if (bits == 1) {
    const __m256i w = _mm256_set1_epi32(static_cast<int>(plane[0]));
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i sh = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < 4; ++v)
      c[v] = _mm256_cvtepi32_ps(
          _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_add_epi32(sh, _mm256_set1_epi32(8 * v))), one));
  } else {
    const __m256i three = _mm256_set1_epi32(3);
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (int v = 0; v < 4; ++v) {
      const __m256i w = _mm256_set1_epi32(static_cast<int>(plane[v >> 1]));
      c[v] = _mm256_cvtepi32_ps(
          _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_add_epi32(sh, _mm256_set1_epi32(16 * (v & 1)))), three));
    }
  }
}

inline float vidkv_hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace detail

inline void vidkv_plane_logits(const std::uint32_t* words, int bits, int planes, const float* w, std::size_t ldw,
                               int rows, float* out, std::size_t ldl, isa::avx2) {
  for (int r0 = 0; r0 < rows; r0 += 2) {
    const int nr = rows - r0 < 2 ? 1 : 2;
    __m256 acc[2][4];
    for (int a = 0; a < 2; ++a)
      for (int v = 0; v < 4; ++v) acc[a][v] = _mm256_setzero_ps();
    __m256 c[4];
    for (int p = 0; p < planes; ++p) {
      detail::vidkv_codes_avx2(words + static_cast<std::size_t>(p * bits), bits, c);
      for (int a = 0; a < nr; ++a) {
        const __m256 wv = _mm256_set1_ps(w[static_cast<std::size_t>(r0 + a) * ldw + static_cast<std::size_t>(p)]);
        for (int v = 0; v < 4; ++v) acc[a][v] = _mm256_fmadd_ps(wv, c[v], acc[a][v]);
      }
    }
    for (int a = 0; a < nr; ++a) {
      float* o = out + static_cast<std::size_t>(r0 + a) * ldl;
      for (int v = 0; v < 4; ++v) _mm256_storeu_ps(o + 8 * v, _mm256_add_ps(_mm256_loadu_ps(o + 8 * v), acc[a][v]));
    }
  }
}

inline void vidkv_plane_dot(const std::uint32_t* words, int bits, int planes, const float* p, std::size_t ldp,
                            int rows, float* out, std::size_t ldo, isa::avx2) {
  __m256 c[4];
  for (int q = 0; q < planes; ++q) {
    detail::vidkv_codes_avx2(words + static_cast<std::size_t>(q * bits), bits, c);
    for (int r = 0; r < rows; ++r) {
      const float* pr = p + static_cast<std::size_t>(r) * ldp;
      __m256 a = _mm256_mul_ps(_mm256_loadu_ps(pr), c[0]);
      for (int v = 1; v < 4; ++v) a = _mm256_fmadd_ps(_mm256_loadu_ps(pr + 8 * v), c[v], a);
      out[static_cast<std::size_t>(r) * ldo + static_cast<std::size_t>(q)] = detail::vidkv_hsum_avx2(a);
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
