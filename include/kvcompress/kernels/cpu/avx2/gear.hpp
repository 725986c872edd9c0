// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+FMA, F16C) versions of GEAR's low-rank decode kernels (contract and factor layout:
/// kernels/cpu/scalar/gear.hpp). With the factor-major layout every loop runs over contiguous
/// fp16: 8 lanes are widened with `vcvtph2ps` and FMA'd. Exact fp32 semantics; only the
/// summation order differs from scalar. AVX-512 builds use these overloads through the tag chain
/// (the low-rank terms are O(rank·(n + d)) per block, far below the backbone's cost). The outlier
/// corrections share the scalar body (a few entries per vector) with F16C widening.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvcompress/kernels/cpu/scalar/gear.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline __m256 gear_load8_f16(const std::uint8_t* base, std::size_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + 2 * i)));
}
inline float gear_hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
/// Σ_j x[j]·f16[j] over j < n (x fp32 contiguous).
inline float gear_dot_f16_avx2(const float* x, const std::uint8_t* f, std::size_t n) {
  __m256 acc = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), gear_load8_f16(f, j), acc);
  float s = gear_hsum_avx2(acc);
  const int tail = static_cast<int>(n - j);  // < 8
  for (int u = 0; u < tail; ++u) s += x[j + u] * gear_f16(f + 2 * j, static_cast<std::size_t>(u));
  return s;
}

/// F16C scalar widening for the outlier kernels.
struct GearF16C {
  static float load(const std::uint8_t* base, std::size_t i) {
    std::uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return _cvtsh_ss(h);
  }
};

}  // namespace detail

inline void gear_key_outlier_logits(const std::uint8_t* groups, int G, int d, int bits, const std::uint8_t* entries,
                                    int per, std::size_t n, const std::uint8_t* qf, const std::uint8_t* pf, int rank,
                                    bool lowrank_at_outliers, const float* q, int rows, float* logits,
                                    std::size_t ldl, isa::avx2) {
  detail::gear_key_outlier_logits_impl<detail::GearF16C>(groups, G, d, bits, entries, per, n, qf, pf, rank,
                                                         lowrank_at_outliers, q, rows, logits, ldl);
}

inline void gear_value_outlier_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                          const std::uint8_t* entries, int per, const std::uint8_t* qf,
                                          const std::uint8_t* pf, int rank, bool lowrank_at_outliers,
                                          const float* p, std::size_t ldp, int rows, float* out, isa::avx2) {
  detail::gear_value_outlier_accumulate_impl<detail::GearF16C>(rows_data, n, d, Gv, bits, entries, per, qf, pf, rank,
                                                               lowrank_at_outliers, p, ldp, rows, out);
}

inline void gear_lowrank_logits(const std::uint8_t* qf, const std::uint8_t* pf, std::size_t n, int d, int rank,
                                const float* q, int rows, float* logits, std::size_t ldl, isa::avx2) {
  if (rank <= 0) return;
  const std::size_t ud = static_cast<std::size_t>(d);
  float a[kKiviMaxRows][kGearMaxRank];
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < rank; ++i) a[r][i] = detail::gear_dot_f16_avx2(q + r * d, pf + 2 * (i * ud), ud);
  std::size_t t = 0;
  for (; t + 8 <= n; t += 8)
    for (int r = 0; r < rows; ++r) {
      float* o = logits + static_cast<std::size_t>(r) * ldl + t;
      __m256 acc = _mm256_loadu_ps(o);
      for (int i = 0; i < rank; ++i) acc = _mm256_fmadd_ps(_mm256_set1_ps(a[r][i]), detail::gear_load8_f16(qf, i * n + t), acc);
      _mm256_storeu_ps(o, acc);
    }
  const int tail = static_cast<int>(n - t);  // < 8
  for (int u = 0; u < tail; ++u)
    for (int r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int i = 0; i < rank; ++i) acc += a[r][i] * detail::gear_f16(qf + 2 * (t + u), static_cast<std::size_t>(i) * n);
      logits[static_cast<std::size_t>(r) * ldl + t + u] += acc;
    }
}

inline void gear_lowrank_accumulate(const std::uint8_t* qf, const std::uint8_t* pf, std::size_t n, int d, int rank,
                                    const float* p, std::size_t ldp, int rows, float* out, isa::avx2) {
  if (rank <= 0) return;
  const std::size_t ud = static_cast<std::size_t>(d);
  float b[kKiviMaxRows][kGearMaxRank];
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < rank; ++i)
      b[r][i] = detail::gear_dot_f16_avx2(p + static_cast<std::size_t>(r) * ldp, qf + 2 * (i * n), n);
  std::size_t c = 0;
  for (; c + 8 <= ud; c += 8)
    for (int r = 0; r < rows; ++r) {
      float* o = out + static_cast<std::size_t>(r) * ud + c;
      __m256 acc = _mm256_loadu_ps(o);
      for (int i = 0; i < rank; ++i) acc = _mm256_fmadd_ps(_mm256_set1_ps(b[r][i]), detail::gear_load8_f16(pf, i * ud + c), acc);
      _mm256_storeu_ps(o, acc);
    }
  const int tail = static_cast<int>(ud - c);  // < 8
  for (int u = 0; u < tail; ++u)
    for (int r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int i = 0; i < rank; ++i) acc += b[r][i] * detail::gear_f16(pf + 2 * (c + u), static_cast<std::size_t>(i) * ud);
      out[static_cast<std::size_t>(r) * ud + c + u] += acc;
    }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
