// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 decode attention over a dense float or half cache. The number of query rows is a
/// template parameter (1..16) so each row keeps its accumulator in a register:
/// - dense_logits: per key row, every 16-channel chunk is loaded (and widened from fp16) once and
///   multiplied into all rows' accumulators; each row's accumulator is reduced at the end of the
///   key row. Each key row is read exactly once for all query rows.
/// - dense_accumulate: tokens are processed in L1-sized tiles; per 32-channel slice of the output
///   (16 for more than 8 rows) the accumulators of all rows stay in registers while the tile's
///   value rows stream by, so DRAM sees each value row once and the output is loaded/stored once
///   per tile.
/// Channel tails (d mod 16) use masked loads. Sums are fp32 in a different order from scalar.

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/dense_attention.hpp"
#include "kvcompress/kernels/cpu/avx512/convert.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline __m512 load16_f32(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16_f32(const half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load16_f32(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16_f32(const half* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }

template <int R, class T>
inline void dense_logits_avx512(const T* k, std::size_t ldk, std::size_t n, int d, const float* q,
                                float* logits, std::size_t ldl) {
  const int dv = d & ~15;
  const __mmask16 tail = tail_mask16(static_cast<std::size_t>(d & 15));
  for (std::size_t t = 0; t < n; ++t) {
    const T* kt = k + t * ldk;
    __m512 acc[R];
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int c = 0; c < dv; c += 16) {
      const __m512 kv = load16_f32(kt + c);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * d + c), kv, acc[r]);
    }
    if (tail) {
      const __m512 kv = load16_f32(kt + dv, tail);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + r * d + dv), kv, acc[r]);
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) logits[static_cast<std::size_t>(r) * ldl + t] = _mm512_reduce_add_ps(acc[r]);
  }
}

/// Tokens per L1 tile of dense_accumulate: ~16 KiB of cache rows.
template <class T>
inline std::size_t dense_tile_tokens(int d) {
  const std::size_t bytes = static_cast<std::size_t>(d) * sizeof(T);
  const std::size_t t = 16384 / (bytes ? bytes : 1);
  return t < 8 ? 8 : t;
}

/// W chunks of 16 channels starting at c0, all R rows, tokens [t0, t1). `mask` applies to the
/// last chunk.
template <int R, int W, class T>
inline void dense_accumulate_slice(const T* v, std::size_t ldv, std::size_t t0, std::size_t t1, int d,
                                   const float* p, std::size_t ldp, float* out, int c0, __mmask16 mask) {
  __m512 acc[R][W];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int w = 0; w < W; ++w) {
      const __mmask16 m = w == W - 1 ? mask : static_cast<__mmask16>(0xffff);
      acc[r][w] = _mm512_maskz_loadu_ps(m, out + r * d + c0 + 16 * w);
    }
  for (std::size_t t = t0; t < t1; ++t) {
    const T* vt = v + t * ldv + c0;
    __m512 vv[W];
    #pragma GCC unroll 16
    for (int w = 0; w < W; ++w)
      vv[w] = w == W - 1 ? load16_f32(vt + 16 * w, mask) : load16_f32(vt + 16 * w);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 pr = _mm512_set1_ps(p[static_cast<std::size_t>(r) * ldp + t]);
      #pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(pr, vv[w], acc[r][w]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int w = 0; w < W; ++w) {
      const __mmask16 m = w == W - 1 ? mask : static_cast<__mmask16>(0xffff);
      _mm512_mask_storeu_ps(out + r * d + c0 + 16 * w, m, acc[r][w]);
    }
}

template <int R, class T>
inline void dense_accumulate_avx512(const T* v, std::size_t ldv, std::size_t n, int d, const float* p,
                                    std::size_t ldp, float* out) {
  constexpr int W = R <= 4 ? 4 : (R <= 8 ? 2 : 1);  // accumulators R·W ≤ 16
  const std::size_t tile = dense_tile_tokens<T>(d);
  const __mmask16 full = static_cast<__mmask16>(0xffff);
  for (std::size_t t0 = 0; t0 < n; t0 += tile) {
    const std::size_t t1 = t0 + tile < n ? t0 + tile : n;
    int c = 0;
    for (; c + 16 * W <= d; c += 16 * W) dense_accumulate_slice<R, W>(v, ldv, t0, t1, d, p, ldp, out, c, full);
    for (; c + 16 <= d; c += 16) dense_accumulate_slice<R, 1>(v, ldv, t0, t1, d, p, ldp, out, c, full);
    if (c < d)
      dense_accumulate_slice<R, 1>(v, ldv, t0, t1, d, p, ldp, out, c, tail_mask16(static_cast<std::size_t>(d - c)));
  }
}

}  // namespace detail

/// AVX-512 dense_logits (see the scalar overload for the contract). T ∈ {float, half}.
template <class T>
inline void dense_logits(const T* k, std::size_t ldk, std::size_t n, int d, const float* q, int rows,
                         float* logits, std::size_t ldl, isa::avx512) {
  detail::dispatch_rows<kMaxQueryRows>(rows, [&](auto r) {
    detail::dense_logits_avx512<decltype(r)::value>(k, ldk, n, d, q, logits, ldl);
  });
}

/// AVX-512 dense_accumulate (see the scalar overload for the contract). T ∈ {float, half}.
template <class T>
inline void dense_accumulate(const T* v, std::size_t ldv, std::size_t n, int d, const float* p,
                             std::size_t ldp, int rows, float* out, isa::avx512) {
  detail::dispatch_rows<kMaxQueryRows>(rows, [&](auto r) {
    detail::dense_accumulate_avx512<decltype(r)::value>(v, ldv, n, d, p, ldp, out);
  });
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
