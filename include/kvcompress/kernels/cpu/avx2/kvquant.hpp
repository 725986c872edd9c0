// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 KVQuant decode kernels (contract and row format: kernels/cpu/scalar/kvquant.hpp). Codes
/// of 8 channels are unpacked at once (a 4-byte gather at each code's byte, variable shift, mask)
/// and looked up with a float gather (pre-scaled per-channel LUT for static keys, the shared LUT
/// + FMA with (hr, off) otherwise); outliers, sinks and RoPE as scalar. The per-slot dot products
/// with all query rows and the value axpy run on 8-lane fp32 FMA with a scalar tail.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/scalar/kvquant.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

namespace detail {
inline float kvq_hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
}  // namespace detail

/// AVX2 LUT decoder (same contract as KvqScalarLut).
struct KvqAvx2Lut {
  void operator()(int bits, const std::uint8_t* codes, std::size_t d, const float* table, std::size_t stride,
                  float hr, float off, bool affine, float* x) const {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i vb = _mm256_set1_epi32(bits), mask = _mm256_set1_epi32((1 << bits) - 1);
    const __m256i seven = _mm256_set1_epi32(7), vs = _mm256_set1_epi32(static_cast<int>(stride));
    const __m256 vh = _mm256_set1_ps(hr), vo = _mm256_set1_ps(off);
    std::size_t c = 0;
    for (; c + 8 <= d; c += 8) {
      const __m256i ch = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c)), lane);
      const __m256i bit = _mm256_mullo_epi32(ch, vb);
      const __m256i w = _mm256_i32gather_epi32(reinterpret_cast<const int*>(codes), _mm256_srli_epi32(bit, 3), 1);
      __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_and_si256(bit, seven)), mask);
      if (stride) idx = _mm256_add_epi32(idx, _mm256_mullo_epi32(ch, vs));
      __m256 y = _mm256_i32gather_ps(table, idx, 4);
      if (affine) y = _mm256_fmadd_ps(y, vh, vo);
      _mm256_storeu_ps(x + c, y);
    }
    for (; c < d; ++c) {
      const float y = table[c * stride + kvq_code(codes, c, bits)];
      x[c] = affine ? y * hr + off : y;
    }
  }
};

/// AVX2 overload of kvq_dot_rows.
inline void kvq_dot_rows(const float* x, std::size_t d, const float* q, int rows, float* out, std::size_t ldl,
                         isa::avx2) {
  const std::size_t d8 = d / 8 * 8;
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * d;
    __m256 acc = _mm256_setzero_ps();
    for (std::size_t c = 0; c < d8; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qr + c), _mm256_loadu_ps(x + c), acc);
    float s = detail::kvq_hsum_avx2(acc);
    for (std::size_t c = d8; c < d; ++c) s += qr[c] * x[c];
    out[static_cast<std::size_t>(r) * ldl] = s;
  }
}

/// AVX2 overload of kvq_axpy_rows.
inline void kvq_axpy_rows(const float* x, std::size_t d, const float* p, std::size_t ldp, int rows, float* out,
                          isa::avx2) {
  const std::size_t d8 = d / 8 * 8;
  for (int r = 0; r < rows; ++r) {
    const float w = p[static_cast<std::size_t>(r) * ldp];
    if (w == 0.0f) continue;
    const __m256 wv = _mm256_set1_ps(w);
    float* o = out + static_cast<std::size_t>(r) * d;
    for (std::size_t c = 0; c < d8; c += 8)
      _mm256_storeu_ps(o + c, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + c), _mm256_loadu_ps(o + c)));
    for (std::size_t c = d8; c < d; ++c) o[c] += w * x[c];
  }
}

/// AVX2 overload of kvq_logits.
inline void kvq_logits(const std::uint8_t* key_rows, std::size_t stride, std::size_t n, const KvqRowFormat& f,
                       const KvqTables& t, const float* q, int rows, float* logits, std::size_t ldl, float* buf,
                       isa::avx2) {
  detail::kvq_logits_impl(key_rows, stride, n, f, t, q, rows, logits, ldl, buf,
                          [](const float* x, std::size_t d, const float* qq, int r, float* o, std::size_t l) {
                            kvq_dot_rows(x, d, qq, r, o, l, isa::avx2{});
                          },
                          KvqAvx2Lut{});
}

/// AVX2 overload of kvq_accumulate.
inline void kvq_accumulate(const std::uint8_t* key_rows, std::size_t kstride, const std::uint8_t* value_rows,
                           std::size_t vstride, std::size_t n, const KvqRowFormat& f, const KvqTables& t,
                           const float* p, std::size_t ldp, int rows, float* out, float* buf, isa::avx2) {
  detail::kvq_accumulate_impl(key_rows, kstride, value_rows, vstride, n, f, t, p, ldp, rows, out, buf,
                              [](const float* x, std::size_t d, const float* pp, std::size_t l, int r, float* o) {
                                kvq_axpy_rows(x, d, pp, l, r, o, isa::avx2{});
                              },
                              KvqAvx2Lut{});
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
