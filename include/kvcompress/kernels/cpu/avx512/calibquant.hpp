// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 CalibQuant decode kernels (contract: kernels/cpu/scalar/calibquant.hpp). Two P-CALIB
/// bytes (16 channels, MSB first in each byte) become one __mmask16 through a bit-reversal table
/// (lane j ↔ channel j), and the bits select lanes directly:
///   logits: acc = mask_add(acc, m, acc, (q⊙s)[16 channels])
///   values: acc[16 channels] = mask_add(acc, m, acc, broadcast(p_t))
/// Needs d % 16 == 0 (true for every supported head_dim); other d fall back to AVX2. fp32
/// throughout; only the summation order differs from scalar.

#include <cstddef>
#include <cstdint>

#include "kvcompress/kernels/cpu/avx2/calibquant.hpp"
#include "kvcompress/kernels/cpu/scalar/calibquant.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// Byte with its bit order reversed (bit 7 − j → bit j).
struct CalibQuantReverse {
  std::uint8_t r[256];
  constexpr CalibQuantReverse() : r{} {
    for (int b = 0; b < 256; ++b) {
      int x = 0;
      for (int j = 0; j < 8; ++j) x |= ((b >> (7 - j)) & 1) << j;
      r[b] = static_cast<std::uint8_t>(x);
    }
  }
};
inline constexpr CalibQuantReverse kCalibQuantReverse{};

inline __mmask16 calibquant_mask16(const std::uint8_t* two) {
  return static_cast<__mmask16>(kCalibQuantReverse.r[two[0]] | (kCalibQuantReverse.r[two[1]] << 8));
}

}  // namespace detail

inline void calibquant_key_logits(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                  const float* s, const float* z, const float* q, int rows, float* out,
                                  std::size_t ldl, isa::avx512) {
  if (d % 16 != 0) {
    calibquant_key_logits(codes, stride, n, d, s, z, q, rows, out, ldl, isa::avx2{});
    return;
  }
  alignas(64) float qs[kCalibQuantMaxRows * kCalibQuantMaxDim];
  float bias[kCalibQuantMaxRows];
  const int nv = d / 16;
  for (int r = 0; r < rows; ++r) {
    const float* qr = q + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    __m512 b = _mm512_setzero_ps();
    for (int c = 0; c < d; c += 16) {
      const __m512 qv = _mm512_loadu_ps(qr + c);
      _mm512_store_ps(qs + r * d + c, _mm512_mul_ps(qv, _mm512_loadu_ps(s + c)));
      b = _mm512_fmadd_ps(qv, _mm512_loadu_ps(z + c), b);
    }
    bias[r] = _mm512_reduce_add_ps(b);
  }
  __mmask16 mask[kCalibQuantMaxDim / 16];
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = codes + t * stride;
    for (int i = 0; i < nv; ++i) mask[i] = detail::calibquant_mask16(row + 2 * i);
    for (int r = 0; r < rows; ++r) {
      const float* qr = qs + r * d;
      __m512 a = _mm512_setzero_ps();
      for (int i = 0; i < nv; ++i) a = _mm512_mask_add_ps(a, mask[i], a, _mm512_load_ps(qr + 16 * i));
      out[static_cast<std::size_t>(r) * ldl + t] = _mm512_reduce_add_ps(a) + bias[r];
    }
  }
}

inline void calibquant_value_accumulate(const std::uint8_t* codes, std::size_t stride, std::size_t n, int d,
                                        const float* s, const float* z, const float* p, std::size_t ldp,
                                        int rows, float* out, isa::avx512) {
  if (d % 16 != 0) {
    calibquant_value_accumulate(codes, stride, n, d, s, z, p, ldp, rows, out, isa::avx2{});
    return;
  }
  alignas(64) float acc[kCalibQuantMaxRows * kCalibQuantMaxDim];
  float psum[kCalibQuantMaxRows];
  const int nv = d / 16;
  for (int r = 0; r < rows; ++r) {
    psum[r] = 0.0f;
    for (int c = 0; c < d; ++c) acc[r * d + c] = 0.0f;
  }
  __mmask16 mask[kCalibQuantMaxDim / 16];
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = codes + t * stride;
    for (int i = 0; i < nv; ++i) mask[i] = detail::calibquant_mask16(row + 2 * i);
    for (int r = 0; r < rows; ++r) {
      const float pt = p[static_cast<std::size_t>(r) * ldp + t];
      psum[r] += pt;
      const __m512 pv = _mm512_set1_ps(pt);
      float* ar = acc + r * d;
      for (int i = 0; i < nv; ++i) {
        const __m512 a = _mm512_load_ps(ar + 16 * i);
        _mm512_store_ps(ar + 16 * i, _mm512_mask_add_ps(a, mask[i], a, pv));
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* o = out + static_cast<std::size_t>(r) * static_cast<std::size_t>(d);
    const float* ar = acc + r * d;
    const __m512 ps = _mm512_set1_ps(psum[r]);
    for (int c = 0; c < d; c += 16) {
      const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(s + c), _mm512_load_ps(ar + c)),
                                     _mm512_mul_ps(_mm512_loadu_ps(z + c), ps));
      _mm512_storeu_ps(o + c, _mm512_add_ps(_mm512_loadu_ps(o + c), v));
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
#endif
