// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 decode kernels over packed ggml rows (contract: kernels/cpu/scalar/ggml.hpp). Same scheme
/// as the AVX-512 header with 8-lane vectors: each eighth of a block (8 channels) is widened
/// once (`vpmovsxbd`, or `vpmovzxbd` + AND/shift for P-GGML nibbles), scaled exactly into x̂ and
/// FMA'd into every query row. Exact fp32 semantics; only the summation order differs from
/// scalar.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/ggml.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline float ggml_load_f16_avx2(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

/// x̂ of eighth E (elements 8·E … 8·E + 7) of the block at blk, as 8 fp32 lanes.
template <GgmlType T>
inline __m256 ggml_eighth_avx2(const std::uint8_t* blk, int e) {
  if constexpr (T == GgmlType::kQ8_0) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * e));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_set1_ps(ggml_load_f16_avx2(blk)));
  } else {
    constexpr int off = T == GgmlType::kQ4_0 ? 2 : 4;
    const __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + off + 8 * (e & 1))));
    const __m256i code = e < 2 ? _mm256_and_si256(w, _mm256_set1_epi32(15)) : _mm256_srli_epi32(w, 4);
    const float d = ggml_load_f16_avx2(blk);
    const float m = T == GgmlType::kQ4_0 ? -8.0f * d : ggml_load_f16_avx2(blk + 2);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(code), _mm256_set1_ps(d), _mm256_set1_ps(m));
  }
}

inline float ggml_hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <GgmlType T, int R>
inline void ggml_logits_avx2(const std::uint8_t* src, std::size_t n, int d, const float* q, float* logits,
                             std::size_t ldl) {
  constexpr std::size_t bb = quant::formats::ggml_block_bytes(T);
  const std::size_t rb = ggml_row_bytes(T, d);
  const int nb = d / quant::formats::kGgmlQK;
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = src + t * rb;
    __m256 acc[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const std::uint8_t* blk = row + static_cast<std::size_t>(b) * bb;
      for (int e = 0; e < 4; ++e) {
        const __m256 x = ggml_eighth_avx2<T>(blk, e);
        const float* qb = q + 32 * b + 8 * e;
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + r * d), x, acc[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) logits[static_cast<std::size_t>(r) * ldl + t] = ggml_hsum_avx2(acc[r]);
  }
}

/// Output channels [c0, c0 + 8·W), W ∈ {1, 2, 4} with c0 % (8·W) == 0 (a slice lies in one block).
template <GgmlType T, int R, int W>
inline void ggml_accumulate_slice_avx2(const std::uint8_t* src, std::size_t n, int d, const float* p,
                                       std::size_t ldp, float* out, int c0) {
  constexpr std::size_t bb = quant::formats::ggml_block_bytes(T);
  const std::size_t rb = ggml_row_bytes(T, d);
  __m256 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(out + r * d + c0 + 8 * w);
  const std::size_t boff = static_cast<std::size_t>(c0 / 32) * bb;
  const int e0 = (c0 % 32) / 8;
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* blk = src + t * rb + boff;
    __m256 x[W];
    for (int w = 0; w < W; ++w) x[w] = ggml_eighth_avx2<T>(blk, e0 + w);
    for (int r = 0; r < R; ++r) {
      const __m256 pr = _mm256_set1_ps(p[static_cast<std::size_t>(r) * ldp + t]);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(pr, x[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(out + r * d + c0 + 8 * w, acc[r][w]);
}

template <GgmlType T, int R>
inline void ggml_accumulate_avx2(const std::uint8_t* src, std::size_t n, int d, const float* p,
                                 std::size_t ldp, float* out) {
  constexpr int W = R <= 3 ? 4 : (R <= 6 ? 2 : 1);  // R·W ≤ 12 of 16 ymm
  for (int c = 0; c < d; c += 8 * W) ggml_accumulate_slice_avx2<T, R, W>(src, n, d, p, ldp, out, c);
}

template <class F>
inline void ggml_dispatch_type_avx2(GgmlType type, F&& f) {
  switch (type) {
    case GgmlType::kQ8_0: f(std::integral_constant<GgmlType, GgmlType::kQ8_0>{}); break;
    case GgmlType::kQ4_0: f(std::integral_constant<GgmlType, GgmlType::kQ4_0>{}); break;
    case GgmlType::kQ4_1: f(std::integral_constant<GgmlType, GgmlType::kQ4_1>{}); break;
  }
}

}  // namespace detail

/// AVX2 ggml_logits (contract: scalar overload).
inline void ggml_logits(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* q, int rows,
                        float* logits, std::size_t ldl, isa::avx2) {
  detail::ggml_dispatch_type_avx2(type, [&](auto tt) {
    detail::dispatch_rows<kGgmlMaxRows>(rows, [&](auto r) {
      detail::ggml_logits_avx2<decltype(tt)::value, decltype(r)::value>(src, n, d, q, logits, ldl);
    });
  });
}

/// AVX2 ggml_accumulate (contract: scalar overload).
inline void ggml_accumulate(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* p,
                            std::size_t ldp, int rows, float* out, isa::avx2) {
  detail::ggml_dispatch_type_avx2(type, [&](auto tt) {
    detail::dispatch_rows<kGgmlMaxRows>(rows, [&](auto r) {
      detail::ggml_accumulate_avx2<decltype(tt)::value, decltype(r)::value>(src, n, d, p, ldp, out);
    });
  });
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
