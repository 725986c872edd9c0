// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 decode kernels over packed ggml rows (formats: policies/quant/formats/ggml_blocks.hpp;
/// contract: kernels/cpu/scalar/ggml.hpp). Exact fp32 semantics, like the scalar reference:
/// every 16-element half of a block is widened once (`vpmovsxbd` for q8_0, `vpmovzxbd` + AND /
/// shift for the P-GGML nibbles of q4_0/q4_1), converted and scaled into x̂ with one multiply or
/// FMA that is exact or rounds exactly like scalar (q·d and (q − 8)·d are exact; q4_1's q·d + m
/// rounds once either way), and multiplied into all query rows' accumulators. Results differ
/// from scalar only in the order of the fp32 sums.
///
/// Why not VNNI with an int8 query (ggml's q8_0 × q8_0 dot)? This path keeps the exact fp32
/// semantics of scalar (no query-quantization error, ≤ d_q/2 per channel with
/// d_q = max|q_block|/127 for ggml's scheme), and per 16-lane half block costs 3–4 uops to widen
/// (load/extend, convert, scale), shared by all GQA rows, against R FMAs per row — the dense
/// fp16 kernel's per-row FMA count with 1.9× (q8_0) to 3.6× (q4_0) fewer bytes. Measured
/// (Zen 4, 16384 tokens × 8 KV heads, d = 128, 4 rows per KV head, one thread, CPU time):
/// dense fp16 ≈ 9.4 ms, q8_0 ≈ 7.6 ms, q4_0 ≈ 6.4 ms, q4_1 ≈ 6.4 ms for logits + accumulation,
/// i.e. ≈ 4.5 / 3.0 / 3.2 GB/s of packed bytes: compute-bound, so a VNNI logits path (int8
/// query per block, tokens in lanes) is the next speed step; it is not implemented yet.
///
/// - ggml_logits: per token, each 32-channel block is dequantized once (two zmm) and FMA'd into
///   every row's two accumulators (one per half; one for more than 8 rows); the row sums are
///   reduced at the end of the token, four rows at a time with shared shuffles. Each packed byte is read once per call.
/// - ggml_accumulate: per slice of 16·W output channels (W = 4, 2, 1 for ≤ 4, ≤ 8, ≤ 16 rows)
///   all rows' accumulators stay in registers while the call's rows stream by (≤ 64 tokens per
///   store block: L1-resident after the first slice); the output is loaded and stored once per
///   slice.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/ggml.hpp"
#include "kvcompress/kernels/cpu/avx2/ggml.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

inline float ggml_load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

/// x̂ of half H (elements 16·H … 16·H + 15) of the block at blk, as 16 fp32 lanes.
template <GgmlType T, int H>
inline __m512 ggml_half_avx512(const std::uint8_t* blk) {
  if constexpr (T == GgmlType::kQ8_0) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 + 16 * H));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), _mm512_set1_ps(ggml_load_f16(blk)));
  } else {
    constexpr int off = T == GgmlType::kQ4_0 ? 2 : 4;
    const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + off)));
    const __m512i code = H == 0 ? _mm512_and_si512(w, _mm512_set1_epi32(15)) : _mm512_srli_epi32(w, 4);
    const float d = ggml_load_f16(blk);
    const float m = T == GgmlType::kQ4_0 ? -8.0f * d : ggml_load_f16(blk + 2);  // −8·d is exact
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(code), _mm512_set1_ps(d), _mm512_set1_ps(m));
  }
}

/// Horizontal sums of four vectors as the lanes of one __m128 (a, b, c, d order).
inline __m128 ggml_reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 ab = _mm256_hadd_ps(a8, b8);    // a01 a23 b01 b23 | a45 a67 b45 b67
  const __m256 cd = _mm256_hadd_ps(c8, d8);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0..3 b0..3 c0..3 d0..3 | a4..7 …
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

template <GgmlType T, int R>
inline void ggml_logits_avx512(const std::uint8_t* src, std::size_t n, int d, const float* q, float* logits,
                               std::size_t ldl) {
  constexpr int QK = quant::formats::kGgmlQK;
  constexpr bool kTwo = R <= 8;  // two accumulators per row while registers allow
  constexpr std::size_t bb = quant::formats::ggml_block_bytes(T);
  const std::size_t rb = ggml_row_bytes(T, d);
  const int nb = d / QK;
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = src + t * rb;
    __m512 a0[R], a1[kTwo ? R : 1];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) a0[r] = _mm512_setzero_ps();
    if constexpr (kTwo) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) a1[r] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; ++b) {
      const std::uint8_t* blk = row + static_cast<std::size_t>(b) * bb;
      const __m512 x0 = ggml_half_avx512<T, 0>(blk);
      const __m512 x1 = ggml_half_avx512<T, 1>(blk);
      const float* qb = q + b * QK;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        a0[r] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + r * d), x0, a0[r]);
        if constexpr (kTwo) a1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + r * d + 16), x1, a1[r]);
        else a0[r] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + r * d + 16), x1, a0[r]);
      }
    }
    if constexpr (kTwo) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) a0[r] = _mm512_add_ps(a0[r], a1[r]);
    }
    int r = 0;
    for (; r + 4 <= R; r += 4) {  // four rows reduced together (shared shuffles)
      alignas(16) float s4[4];
      _mm_store_ps(s4, ggml_reduce4(a0[r], a0[r + 1], a0[r + 2], a0[r + 3]));
      for (int i = 0; i < 4; ++i) logits[static_cast<std::size_t>(r + i) * ldl + t] = s4[i];
    }
    for (; r < R; ++r) logits[static_cast<std::size_t>(r) * ldl + t] = _mm512_reduce_add_ps(a0[r]);
  }
}

/// Output channels [c0, c0 + 16·W) (W a power of two ≤ 4; c0 % 16 == 0), all R rows.
template <GgmlType T, int R, int W>
inline void ggml_accumulate_slice_avx512(const std::uint8_t* src, std::size_t n, int d, const float* p,
                                         std::size_t ldp, float* out, int c0) {
  constexpr int QK = quant::formats::kGgmlQK;
  constexpr std::size_t bb = quant::formats::ggml_block_bytes(T);
  const std::size_t rb = ggml_row_bytes(T, d);
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_loadu_ps(out + r * d + c0 + 16 * w);
  const std::size_t blk0 = static_cast<std::size_t>(c0 / QK) * bb;
  const int h0 = (c0 / 16) % 2;  // first half (only W == 1 can start on an odd half)
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* blk = src + t * rb + blk0;
    __m512 x[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) {
      const std::uint8_t* bw = blk + static_cast<std::size_t>((h0 + w) / 2) * bb;
      x[w] = ((h0 + w) % 2 == 0) ? ggml_half_avx512<T, 0>(bw) : ggml_half_avx512<T, 1>(bw);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 pr = _mm512_set1_ps(p[static_cast<std::size_t>(r) * ldp + t]);
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(pr, x[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(out + r * d + c0 + 16 * w, acc[r][w]);
}

template <GgmlType T, int R>
inline void ggml_accumulate_avx512(const std::uint8_t* src, std::size_t n, int d, const float* p,
                                   std::size_t ldp, float* out) {
  constexpr int W = R <= 4 ? 4 : (R <= 8 ? 2 : 1);  // R·W ≤ 16 accumulators
  int c = 0;
  for (; c + 16 * W <= d; c += 16 * W) ggml_accumulate_slice_avx512<T, R, W>(src, n, d, p, ldp, out, c);
  for (; c < d; c += 32) ggml_accumulate_slice_avx512<T, R, (W >= 2 ? 2 : 1)>(src, n, d, p, ldp, out, c);
}

template <class F>
inline void ggml_dispatch_type(GgmlType type, F&& f) {
  switch (type) {
    case GgmlType::kQ8_0: f(std::integral_constant<GgmlType, GgmlType::kQ8_0>{}); break;
    case GgmlType::kQ4_0: f(std::integral_constant<GgmlType, GgmlType::kQ4_0>{}); break;
    case GgmlType::kQ4_1: f(std::integral_constant<GgmlType, GgmlType::kQ4_1>{}); break;
  }
}

}  // namespace detail

/// AVX-512 ggml_dequantize_rows: bit-identical to scalar (x̂ formed exactly as scalar does).
inline void ggml_dequantize_rows(GgmlType type, const std::uint8_t* src, std::size_t n, int d, float* dst,
                                 std::size_t ld, isa::avx512) {
  detail::ggml_dispatch_type(type, [&](auto tt) {
    constexpr GgmlType T = decltype(tt)::value;
    constexpr std::size_t bb = quant::formats::ggml_block_bytes(T);
    const std::size_t rb = ggml_row_bytes(T, d);
    for (std::size_t t = 0; t < n; ++t)
      for (int b = 0; b < d / quant::formats::kGgmlQK; ++b) {
        const std::uint8_t* blk = src + t * rb + static_cast<std::size_t>(b) * bb;
        float* y = dst + t * ld + 32 * b;
        _mm512_storeu_ps(y, detail::ggml_half_avx512<T, 0>(blk));
        _mm512_storeu_ps(y + 16, detail::ggml_half_avx512<T, 1>(blk));
      }
  });
}

/// AVX-512 ggml_logits (contract: scalar overload).
inline void ggml_logits(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* q, int rows,
                        float* logits, std::size_t ldl, isa::avx512) {
  detail::ggml_dispatch_type(type, [&](auto tt) {
    detail::dispatch_rows<kGgmlMaxRows>(rows, [&](auto r) {
      detail::ggml_logits_avx512<decltype(tt)::value, decltype(r)::value>(src, n, d, q, logits, ldl);
    });
  });
}

/// AVX-512 ggml_accumulate (contract: scalar overload).
inline void ggml_accumulate(GgmlType type, const std::uint8_t* src, std::size_t n, int d, const float* p,
                            std::size_t ldp, int rows, float* out, isa::avx512) {
  detail::ggml_dispatch_type(type, [&](auto tt) {
    detail::dispatch_rows<kGgmlMaxRows>(rows, [&](auto r) {
      detail::ggml_accumulate_avx512<decltype(tt)::value, decltype(r)::value>(src, n, d, p, ldp, out);
    });
  });
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
