// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+F16C) bulk conversion between fp32 and half / bfloat16, bit-identical to
/// core/float16.hpp: F16C `vcvtph2ps` / `vcvtps2ph` (nearest even) for half, integer round to
/// nearest even for bfloat16. Tails (< 8 elements) go through the scalar overload.

#include "kvcompress/kernels/cpu/scalar/convert.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// fp32 → bfloat16 bits in the low half of each 32-bit lane (float16.hpp's rule).
inline __m256i f32_to_bf16_lanes(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  // |u| > 0x7f800000 as signed compare is safe: both sides are non-negative 31-bit values.
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

/// Packs the low 16 bits of eight 32-bit lanes (each ≤ 0xffff) into 8 contiguous words.
inline __m128i pack_lanes_u16(__m256i v) {
  const __m256i p = _mm256_packus_epi32(v, v);  // per 128-bit lane: [v0..3, v0..3 | v4..7, v4..7]
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08));  // qwords 0 and 2
}

/// 8 binary16 → fp32; signalling NaNs stay signalling (vcvtph2ps would quiet them).
inline __m256 cvtph_ps_exact(__m128i h) {
  __m256 f = _mm256_cvtph_ps(h);
  const __m128i snan = _mm_andnot_si128(
      _mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x01ff)), _mm_setzero_si128()),
      _mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7e00)), _mm_set1_epi16(0x7c00)));
  if (!_mm_testz_si128(snan, snan)) {
    const __m256i wide = _mm256_and_si256(_mm256_cvtepi16_epi32(snan), _mm256_set1_epi32(0x00400000));
    f = _mm256_castsi256_ps(_mm256_andnot_si256(wide, _mm256_castps_si256(f)));
  }
  return f;
}

}  // namespace detail

/// binary16 → fp32 (vcvtph2ps, signalling NaNs kept signalling).
inline void convert(const half* src, float* dst, std::size_t n, isa::avx2) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, detail::cvtph_ps_exact(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  convert(src + i, dst + i, n - i, isa::scalar{});
}

/// bfloat16 → fp32.
inline void convert(const bfloat16* src, float* dst, std::size_t n, isa::avx2) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  convert(src + i, dst + i, n - i, isa::scalar{});
}

/// fp32 → binary16, round to nearest even (vcvtps2ph).
inline void convert(const float* src, half* dst, std::size_t n, isa::avx2) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  convert(src + i, dst + i, n - i, isa::scalar{});
}

/// fp32 → bfloat16, round to nearest even (integer emulation).
inline void convert(const float* src, bfloat16* dst, std::size_t n, isa::avx2) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     detail::pack_lanes_u16(detail::f32_to_bf16_lanes(_mm256_loadu_ps(src + i))));
  convert(src + i, dst + i, n - i, isa::scalar{});
}

/// fp32 copy.
inline void convert(const float* src, float* dst, std::size_t n, isa::avx2) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
  convert(src + i, dst + i, n - i, isa::scalar{});
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
