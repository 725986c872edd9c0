// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 bulk conversion between fp32 and half / bfloat16, bit-identical to core/float16.hpp.
/// half ↔ fp32 uses F16C-class `vcvtph2ps` / `vcvtps2ph` (rounding mode 0 = nearest even; the
/// tests check all 65536 halves and a dense fp32 sweep). fp32 → bfloat16 deliberately does NOT
/// use AVX512-BF16 `vcvtneps2bf16`: that instruction flushes denormal inputs/outputs to zero, so
/// the round-to-nearest-even of float16.hpp is emulated with four integer ops instead. Tails use
/// masked loads and stores.

#include "kvcompress/kernels/cpu/scalar/convert.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline __mmask16 tail_mask16(std::size_t rest) {
  return static_cast<__mmask16>((1u << rest) - 1u);  // rest in [0, 16)
}

/// fp32 bits → bfloat16 bits in the low half of each 32-bit lane (float16.hpp's rule).
inline __m512i f32_to_bf16_lanes(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

/// 16 binary16 → fp32. `vcvtph2ps` quiets signalling NaNs while f16_bits_to_f32 keeps them
/// signalling, so lanes holding an sNaN get the quiet bit cleared again (rare, branch skipped).
inline __m512 cvtph_ps_exact(__m256i h) {
  __m512 f = _mm512_cvtph_ps(h);
  const __mmask16 snan =
      _mm256_cmpeq_epi16_mask(_mm256_and_si256(h, _mm256_set1_epi16(0x7e00)), _mm256_set1_epi16(0x7c00)) &
      _mm256_test_epi16_mask(h, _mm256_set1_epi16(0x01ff));
  if (snan) {
    const __m512i u = _mm512_castps_si512(f);
    f = _mm512_castsi512_ps(_mm512_mask_and_epi32(u, snan, u, _mm512_set1_epi32(~0x00400000)));
  }
  return f;
}

}  // namespace detail

/// binary16 → fp32 (vcvtph2ps, signalling NaNs kept signalling).
inline void convert(const half* src, float* dst, std::size_t n, isa::avx512) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, detail::cvtph_ps_exact(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  if (i < n) {
    const __mmask16 m = detail::tail_mask16(n - i);
    _mm512_mask_storeu_ps(dst + i, m, detail::cvtph_ps_exact(_mm256_maskz_loadu_epi16(m, src + i)));
  }
}

/// bfloat16 → fp32 (zero-extend and shift).
inline void convert(const bfloat16* src, float* dst, std::size_t n, isa::avx512) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  if (i < n) {
    const __mmask16 m = detail::tail_mask16(n - i);
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
    _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
}

/// fp32 → binary16, round to nearest even (vcvtps2ph, imm = nearest | no exceptions).
inline void convert(const float* src, half* dst, std::size_t n, isa::avx512) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (i < n) {
    const __mmask16 m = detail::tail_mask16(n - i);
    _mm256_mask_storeu_epi16(dst + i, m,
                             _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

/// fp32 → bfloat16, round to nearest even with denormals kept (integer emulation).
inline void convert(const float* src, bfloat16* dst, std::size_t n, isa::avx512) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtepi32_epi16(detail::f32_to_bf16_lanes(_mm512_loadu_ps(src + i))));
  if (i < n) {
    const __mmask16 m = detail::tail_mask16(n - i);
    _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtepi32_epi16(detail::f32_to_bf16_lanes(_mm512_maskz_loadu_ps(m, src + i))));
  }
}

/// fp32 copy.
inline void convert(const float* src, float* dst, std::size_t n, isa::avx512) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(src + i));
  if (i < n) {
    const __mmask16 m = detail::tail_mask16(n - i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
