// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 softmax reductions. exp is Cephes-style: n = round(x·log2 e), r = x − n·ln 2 (two-part
/// Cody–Waite constant, |r| ≤ ln2/2), e^r by a degree-6 polynomial (1 + r + r²·P5(r)), then
/// `vscalefps` applies 2^n with a single correctly rounded step, so denormal results and overflow
/// to +inf behave like std::exp. Measured max relative error against exp in double: < 2^-22
/// (≈ 2 ulp) over [−104, 88.7]; arguments below −104 (incl. −inf) give exactly +0, NaN stays NaN.

#include <limits>

#include "kvcompress/kernels/cpu/scalar/softmax.hpp"
#include "kvcompress/kernels/cpu/avx512/convert.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// e^x for 16 lanes (see the file comment for the error bound).
inline __m512 exp_ps(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-104.0f);
  const __mmask16 zero = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);  // −inf and deep underflow → +0
  x = _mm512_max_ps(lo, _mm512_min_ps(_mm512_set1_ps(89.0f), x));  // NaN passes through
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~zero), _mm512_scalef_ps(p, n));
}

}  // namespace detail

/// Largest element (NaN entries are skipped like the scalar compare); −inf for n = 0.
inline float max_value(const float* x, std::size_t n, isa::avx512) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m0 = ninf, m1 = ninf;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
    m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(n - i);
    m0 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, m, x + i), m0);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/// x[i] = exp(x[i] − m) in place, returns the sum; m = −inf gives zeros and 0.
inline float exp_shift_sum(float* x, std::size_t n, float m, isa::avx512) {
  if (m == -std::numeric_limits<float>::infinity()) return exp_shift_sum(x, n, m, isa::scalar{});
  const __m512 mv = _mm512_set1_ps(m);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 e0 = detail::exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
    const __m512 e1 = detail::exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv));
    _mm512_storeu_ps(x + i, e0);
    _mm512_storeu_ps(x + i + 16, e1);
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(n - i);
    const __m512 e = detail::exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv));
    _mm512_mask_storeu_ps(x + i, k, e);
    s0 = _mm512_mask_add_ps(s0, k, s0, e);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
