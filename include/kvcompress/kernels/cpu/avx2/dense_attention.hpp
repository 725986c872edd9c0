// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+FMA, F16C) decode attention over a dense float or half cache; same structure as the
/// AVX-512 header with 8-wide vectors. With 16 ymm registers at most 8 rows share a pass, so
/// more rows are handled in blocks of ≤ 8 over L1-sized token tiles (DRAM still sees each cache
/// row once). Channel tails (d mod 8) are finished with scalar FMAs.

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/dense_attention.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline __m256 load8_f32(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8_f32(const half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

/// Tokens per L1 tile: ~16 KiB of cache rows.
template <class T>
inline std::size_t dense_tile_tokens_avx2(int d) {
  const std::size_t t = 16384 / (static_cast<std::size_t>(d) * sizeof(T));
  return t < 8 ? 8 : t;
}

template <int R, class T>
inline void dense_logits_avx2(const T* k, std::size_t ldk, std::size_t t0, std::size_t t1, int d,
                              const float* q, float* logits, std::size_t ldl) {
  const int dv = d & ~7;
  for (std::size_t t = t0; t < t1; ++t) {
    const T* kt = k + t * ldk;
    __m256 acc[R];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int c = 0; c < dv; c += 8) {
      const __m256 kv = load8_f32(kt + c);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + c), kv, acc[r]);
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float s = hsum8(acc[r]);
      for (int c = dv; c < d; ++c) s += q[r * d + c] * to_float(kt[c]);
      logits[static_cast<std::size_t>(r) * ldl + t] = s;
    }
  }
}

template <int R, class T>
inline void dense_accumulate_avx2(const T* v, std::size_t ldv, std::size_t t0, std::size_t t1, int d,
                                  const float* p, std::size_t ldp, float* out) {
  constexpr int W = R <= 3 ? 4 : (R <= 6 ? 2 : 1);  // accumulators R·W ≤ 12
  const int dv = d & ~7;
  int c0 = 0;
  for (; c0 + 8 * W <= dv; c0 += 8 * W) {
    __m256 acc[R][W];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(out + r * d + c0 + 8 * w);
    for (std::size_t t = t0; t < t1; ++t) {
      __m256 vv[W];
      #pragma GCC unroll 16
      for (int w = 0; w < W; ++w) vv[w] = load8_f32(v + t * ldv + c0 + 8 * w);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m256 pr = _mm256_broadcast_ss(p + static_cast<std::size_t>(r) * ldp + t);
        #pragma GCC unroll 16
        for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(pr, vv[w], acc[r][w]);
      }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 16
      for (int w = 0; w < W; ++w) _mm256_storeu_ps(out + r * d + c0 + 8 * w, acc[r][w]);
  }
  for (; c0 < dv; c0 += 8) {
    __m256 acc[R];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm256_loadu_ps(out + r * d + c0);
    for (std::size_t t = t0; t < t1; ++t) {
      const __m256 vv = load8_f32(v + t * ldv + c0);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + static_cast<std::size_t>(r) * ldp + t), vv, acc[r]);
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + r * d + c0, acc[r]);
  }
  for (int c = dv; c < d; ++c)
    for (std::size_t t = t0; t < t1; ++t) {
      const float vc = to_float(v[t * ldv + c]);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) out[r * d + c] += p[static_cast<std::size_t>(r) * ldp + t] * vc;
    }
}

/// Runs f(row0, rows_in_block) over blocks of at most 8 rows.
template <class F>
inline void for_row_blocks8(int rows, F&& f) {
  for (int r0 = 0; r0 < rows; r0 += 8) f(r0, rows - r0 < 8 ? rows - r0 : 8);
}

}  // namespace detail

/// AVX2 dense_logits (see the scalar overload for the contract). T ∈ {float, half}.
template <class T>
inline void dense_logits(const T* k, std::size_t ldk, std::size_t n, int d, const float* q, int rows,
                         float* logits, std::size_t ldl, isa::avx2) {
  const std::size_t tile = detail::dense_tile_tokens_avx2<T>(d);
  for (std::size_t t0 = 0; t0 < n; t0 += tile) {
    const std::size_t t1 = t0 + tile < n ? t0 + tile : n;
    detail::for_row_blocks8(rows, [&](int r0, int rb) {
      detail::dispatch_rows<8>(rb, [&](auto r) {
        detail::dense_logits_avx2<decltype(r)::value>(k, ldk, t0, t1, d, q + r0 * d, logits + r0 * ldl, ldl);
      });
    });
  }
}

/// AVX2 dense_accumulate (see the scalar overload for the contract). T ∈ {float, half}.
template <class T>
inline void dense_accumulate(const T* v, std::size_t ldv, std::size_t n, int d, const float* p,
                             std::size_t ldp, int rows, float* out, isa::avx2) {
  const std::size_t tile = detail::dense_tile_tokens_avx2<T>(d);
  for (std::size_t t0 = 0; t0 < n; t0 += tile) {
    const std::size_t t1 = t0 + tile < n ? t0 + tile : n;
    detail::for_row_blocks8(rows, [&](int r0, int rb) {
      detail::dispatch_rows<8>(rb, [&](auto r) {
        detail::dense_accumulate_avx2<decltype(r)::value>(v, ldv, t0, t1, d, p + r0 * ldp, ldp, out + r0 * d);
      });
    });
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
