// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 softmax reductions. Same exp as the AVX-512 header (Cephes reduction, degree-6
/// polynomial, < 2^-22 relative error); 2^n is applied as two exact power-of-two factors
/// 2^⌊n/2⌋·2^(n−⌊n/2⌋), so only the last multiply rounds and denormal results match a correctly
/// rounded scaling. Arguments below −104 (incl. −inf) give exactly +0; NaN stays NaN.

#include <limits>

#include "kvcompress/kernels/cpu/scalar/softmax.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline __m256 exp_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-104.0f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ);  // false for x < −104 (incl. −inf)
  x = _mm256_max_ps(lo, _mm256_min_ps(_mm256_set1_ps(89.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // n in [−150, 129]: split so each factor is a normal power of two.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_and_ps(keep, _mm256_mul_ps(_mm256_mul_ps(p, f1), f2));
}

}  // namespace detail

/// Largest element; −inf for n = 0.
inline float max_value(const float* x, std::size_t n, isa::avx2) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float best = max_value(x + i, n - i, isa::scalar{});
  for (float v : lanes) best = v > best ? v : best;
  return best;
}

/// x[i] = exp(x[i] − m) in place, returns the sum; m = −inf gives zeros and 0.
inline float exp_shift_sum(float* x, std::size_t n, float m, isa::avx2) {
  if (m == -std::numeric_limits<float>::infinity()) return exp_shift_sum(x, n, m, isa::scalar{});
  const __m256 mv = _mm256_set1_ps(m);
  __m256 s = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = detail::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(x + i, e);
    s = _mm256_add_ps(s, e);
  }
  if (i < n) {  // tail through a padded stack buffer so the polynomial is the same
    alignas(32) float buf[8] = {};
    for (std::size_t j = i; j < n; ++j) buf[j - i] = x[j];
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_set1_epi32(static_cast<int>(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 e = _mm256_and_ps(keep, detail::exp_ps(_mm256_sub_ps(_mm256_load_ps(buf), mv)));
    _mm256_store_ps(buf, e);
    for (std::size_t j = i; j < n; ++j) x[j] = buf[j - i];
    s = _mm256_add_ps(s, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
