// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 KVQuant decode kernels (contract and row format: kernels/cpu/scalar/kvquant.hpp):
/// codes of 16 channels unpacked at once (4-byte gather, variable shift, mask), the shared LUT
/// (≤ 16 entries) looked up with a register permute and the per-channel LUT of static keys with
/// a float gather; then 16-lane fp32 FMA dot products / axpy with a masked tail.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/avx2/kvquant.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// AVX-512 LUT decoder (same contract as KvqScalarLut).
struct KvqAvx512Lut {
  void operator()(int bits, const std::uint8_t* codes, std::size_t d, const float* table, std::size_t stride,
                  float hr, float off, bool affine, float* x) const {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i vb = _mm512_set1_epi32(bits), mask = _mm512_set1_epi32((1 << bits) - 1);
    const __m512i seven = _mm512_set1_epi32(7), vs = _mm512_set1_epi32(static_cast<int>(stride));
    const __m512 vh = _mm512_set1_ps(hr), vo = _mm512_set1_ps(off);
    const bool permute = stride == 0 && bits <= 4;
    const __m512 lut = permute ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (1u << bits)) - 1u), table)
                               : _mm512_setzero_ps();
    std::size_t c = 0;
    for (; c + 16 <= d; c += 16) {
      const __m512i ch = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c)), lane);
      const __m512i bit = _mm512_mullo_epi32(ch, vb);
      const __m512i w = _mm512_i32gather_epi32(_mm512_srli_epi32(bit, 3), codes, 1);
      __m512i idx = _mm512_and_si512(_mm512_srlv_epi32(w, _mm512_and_si512(bit, seven)), mask);
      __m512 y;
      if (permute) {
        y = _mm512_permutexvar_ps(idx, lut);
      } else {
        if (stride) idx = _mm512_add_epi32(idx, _mm512_mullo_epi32(ch, vs));
        y = _mm512_i32gather_ps(idx, table, 4);
      }
      if (affine) y = _mm512_fmadd_ps(y, vh, vo);
      _mm512_storeu_ps(x + c, y);
    }
    for (; c < d; ++c) {
      const float y = table[c * stride + kvq_code(codes, c, bits)];
      x[c] = affine ? y * hr + off : y;
    }
  }
};

/// AVX-512 overload of kvq_dot_rows.
inline void kvq_dot_rows(const float* x, std::size_t d, const float* q, int rows, float* out, std::size_t ldl,
                         isa::avx512) {
  const std::size_t d16 = d / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (d - d16)) - 1u);
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * d;
    __m512 acc = _mm512_setzero_ps();
    for (std::size_t c = 0; c < d16; c += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qr + c), _mm512_loadu_ps(x + c), acc);
    if (tail) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, qr + d16), _mm512_maskz_loadu_ps(tail, x + d16), acc);
    out[static_cast<std::size_t>(r) * ldl] = _mm512_reduce_add_ps(acc);
  }
}

/// AVX-512 overload of kvq_axpy_rows.
inline void kvq_axpy_rows(const float* x, std::size_t d, const float* p, std::size_t ldp, int rows, float* out,
                          isa::avx512) {
  const std::size_t d16 = d / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (d - d16)) - 1u);
  for (int r = 0; r < rows; ++r) {
    const float w = p[static_cast<std::size_t>(r) * ldp];
    if (w == 0.0f) continue;
    const __m512 wv = _mm512_set1_ps(w);
    float* o = out + static_cast<std::size_t>(r) * d;
    for (std::size_t c = 0; c < d16; c += 16)
      _mm512_storeu_ps(o + c, _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + c), _mm512_loadu_ps(o + c)));
    if (tail)
      _mm512_mask_storeu_ps(o + d16, tail,
                            _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x + d16), _mm512_maskz_loadu_ps(tail, o + d16)));
  }
}

/// AVX-512 overload of kvq_logits.
inline void kvq_logits(const std::uint8_t* key_rows, std::size_t stride, std::size_t n, const KvqRowFormat& f,
                       const KvqTables& t, const float* q, int rows, float* logits, std::size_t ldl, float* buf,
                       isa::avx512) {
  detail::kvq_logits_impl(key_rows, stride, n, f, t, q, rows, logits, ldl, buf,
                          [](const float* x, std::size_t d, const float* qq, int r, float* o, std::size_t l) {
                            kvq_dot_rows(x, d, qq, r, o, l, isa::avx512{});
                          },
                          KvqAvx512Lut{});
}

/// AVX-512 overload of kvq_accumulate.
inline void kvq_accumulate(const std::uint8_t* key_rows, std::size_t kstride, const std::uint8_t* value_rows,
                           std::size_t vstride, std::size_t n, const KvqRowFormat& f, const KvqTables& t,
                           const float* p, std::size_t ldp, int rows, float* out, float* buf, isa::avx512) {
  detail::kvq_accumulate_impl(key_rows, kstride, value_rows, vstride, n, f, t, p, ldp, rows, out, buf,
                              [](const float* x, std::size_t d, const float* pp, std::size_t l, int r, float* o) {
                                kvq_axpy_rows(x, d, pp, l, r, o, isa::avx512{});
                              },
                              KvqAvx512Lut{});
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
