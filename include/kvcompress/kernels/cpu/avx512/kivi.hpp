// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 KIVI kernels (layouts and quantization rule: kernels/cpu/scalar/kivi.hpp).
///
/// Quantizers: min/max, fp16 metadata (`vcvtps2ph`, nearest even) and codes
/// (`(x − z16)·inv` → `vrndscaleps` nearest even → clamp) are the scalar float operations lane by
/// lane, so the packed blobs are byte-identical to scalar (min/max keep scalar's first-zero
/// rule for ±0).
///
/// Key logits with VNNI (KVCOMPRESS_HAS_AVX512_VNNI): per (row r, key group, chunk of up to
/// kKiviQueryChunk = 256 channels) the folded query qs_c = q_c·s_c (fp32, as in scalar) is
/// quantized to int8: α = max_c |qs_c| / 127, qi_c = nearbyint(qs_c·127/max) ∈ [−127, 127].
/// A 64-byte code block becomes 64 u8 codes [16 tokens][4 channels] per channel quad with one
/// shift and one AND; `vpdpbusd` with the broadcast 4 query bytes of that quad accumulates 16
/// token dot products exactly in int32 (≤ 255·127·256 < 2^24, so the int→float conversion is
/// exact). The logit is Σ_chunks α·Σ_c qi_c·code_tc + Σ_c q_c·z_c.
/// Error bound versus the exact fp32 value of Σ_c qs_c·code_tc (+ the fp32 rounding of the
/// final fma/sum): |qs_c − α·qi_c| ≤ α·(1/2 + 127·2^-23) (rounding of qs·(127/max) to an
/// integer plus the rounding of that product), hence
///     |logit_vnni − logit_exact| ≤ Σ_chunks α_chunk · 0.50002 · Σ_{c∈chunk} code_tc
///                               ≤ 0.50002 · L · d · max_c|q_c s_c| / 127.
/// For 2-bit codes and d = 128 this is ≤ 1.5·max_c|q_c s_c|, i.e. a relative error of order
/// 1/254 of the largest folded query term per unit code, far below the 2-bit quantization error
/// itself (s/2 per element). tests/kernels/cpu/kivi_kernels_test.cpp checks exactly this bound.
/// Without VNNI the fp32 path of the AVX2 header is used.
///
/// Value accumulation: tokens in L1 tiles; for each 16-channel chunk the codes are widened
/// (`vpsrlvd` + mask + `vcvtdq2ps`), multiplied once by the token's group scale (shared by all
/// rows), and FMA'd into all rows' accumulators; Σ_t p_t·z_t is accumulated per group separately
/// and added once (metadata folded). Needs Gv % 16 == 0 (every 16-channel chunk in one group);
/// other Gv fall back to the AVX2 / scalar path.

#include <cstring>

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
#include "kvcompress/kernels/cpu/avx2/kivi.hpp"
#include "kvcompress/kernels/cpu/avx512/convert.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Channels sharing one int8 query scale in the VNNI key-logits path.
inline constexpr int kKiviQueryChunk = 256;

namespace detail {

/// Per-lane shift that puts lane l's code at bit 0 when the lane holds its P-KIVI word:
/// b·(l mod 32/b).
inline __m512i kivi_word_shifts(int bits) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i per_mask = _mm512_set1_epi32(32 / bits - 1);
  return _mm512_mullo_epi32(_mm512_and_si512(lane, per_mask), _mm512_set1_epi32(bits));
}

/// q = clamp(nearbyint((x − z)·inv), 0, L) as int32 lanes (the scalar rule, lane by lane).
inline __m512i kivi_codes(__m512 x, __m512 z, __m512 inv, __m512 levels) {
  const __m512 y = _mm512_mul_ps(_mm512_sub_ps(x, z), inv);
  __m512 r = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), levels);
  return _mm512_cvttps_epi32(r);
}

/// 1/s16 where s16 ≠ 0, else 0 (all codes 0).
inline __m512 kivi_inv(__m512 s16) {
  return _mm512_maskz_div_ps(_mm512_cmp_ps_mask(s16, _mm512_setzero_ps(), _CMP_NEQ_UQ), _mm512_set1_ps(1.0f), s16);
}

/// Scalar's "first element wins among equal values" for a min/max that came out as zero: picks
/// the sign of the first zero in x[0..n) (the only case a tree reduction can differ from the
/// sequential compare).
inline float kivi_first_zero(const float* x, int n) {
  for (int i = 0; i < n; ++i)
    if (x[i] == 0.0f) return x[i];
  return 0.0f;
}

}  // namespace detail

/// AVX-512 kivi_quantize_key_group: byte-identical to scalar.
inline void kivi_quantize_key_group(const float* k, std::size_t ldk, int G, int d, int bits,
                                    std::uint8_t* dst, isa::avx512) {
  const int levels = (1 << bits) - 1;
  const int cb = 32 / bits;  // channels per 64-byte block
  const int fields = 8 / bits;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  std::uint8_t* scales = dst + code_bytes;
  std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  const __m512 lv = _mm512_set1_ps(static_cast<float>(levels));
  // lane l of a 16-channel chunk: field (l mod CB)/4 → shift b·that.
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i shifts = _mm512_mullo_epi32(
      _mm512_srli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(cb - 1)), 2), _mm512_set1_epi32(bits));
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  for (int c0 = 0; c0 < d; c0 += 16) {
    const int width = d - c0 < 16 ? d - c0 : 16;
    const __mmask16 m = detail::tail_mask16(static_cast<std::size_t>(width)) | (width == 16 ? 0xffff : 0);
    __m512 lo = _mm512_maskz_loadu_ps(m, k + c0), hi = lo;
    for (int t = 1; t < G; ++t) {
      const __m512 x = _mm512_maskz_loadu_ps(m, k + static_cast<std::size_t>(t) * ldk + c0);
      lo = _mm512_min_ps(x, lo);  // x < lo ? x : lo, as scalar
      hi = _mm512_max_ps(x, hi);
    }
    const __m512 s = _mm512_div_ps(_mm512_sub_ps(hi, lo), lv);
    const __m256i s16 = _mm512_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i z16 = _mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(scales + 2 * c0, m, s16);
    _mm256_mask_storeu_epi16(mins + 2 * c0, m, z16);
    const __m512 zf = _mm512_cvtph_ps(z16);
    const __m512 inv = detail::kivi_inv(_mm512_cvtph_ps(s16));
    const int nblocks = width / cb;  // complete blocks in this chunk (d % CB == 0)
    for (int t = 0; t < G; ++t) {
      const __m512 x = _mm512_maskz_loadu_ps(m, k + static_cast<std::size_t>(t) * ldk + c0);
      const __m512i q = _mm512_sllv_epi32(detail::kivi_codes(x, zf, inv, lv), shifts);
      alignas(64) std::uint32_t lanes[16];
      _mm512_store_si512(lanes, q);
      const std::size_t tile_base = static_cast<std::size_t>(t / kKiviKeyTileTokens) * blocks_per_tile;
      for (int b = 0; b < nblocks; ++b) {
        std::uint32_t bytes4 = 0;  // 4 bytes (channel quad positions 0..3) of this token in block b
        for (int f = 0; f < fields; ++f)
          for (int j = 0; j < 4; ++j) bytes4 |= lanes[b * cb + 4 * f + j] << (8 * j);
        const std::size_t block = tile_base + static_cast<std::size_t>(c0 / cb + b);
        detail::kivi_store_u32(dst + block * 64 + 4 * (t % kKiviKeyTileTokens), bytes4);
      }
    }
  }
}

#if KVCOMPRESS_HAS_AVX512_VNNI
namespace detail {

/// VNNI key logits for R rows over one key group: logits[r·ldl + t], t in [0, G).
template <int R, int Bits>
inline void kivi_key_logits_group_vnni(const std::uint8_t* blob, int G, int d, const float* q,
                                       float* logits, std::size_t ldl) {
  constexpr int bits = Bits;
  constexpr int cb = 32 / bits;
  constexpr int fields = 8 / bits;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::uint8_t* scales = blob + code_bytes;
  const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  const __m512i code_mask = _mm512_set1_epi8(static_cast<char>((1 << bits) - 1));
  // q·z per row (fp32).
  float qz[R];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < d; c += 16) {
      const __mmask16 m = d - c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(d - c));
      const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, mins + 2 * c));
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + r * d + c), z, acc);
    }
    qz[r] = _mm512_reduce_add_ps(acc);
  }
  alignas(64) std::int8_t qi[R][kKiviQueryChunk];
  float alpha[R];
  for (int c0 = 0; c0 < d; c0 += kKiviQueryChunk) {
    const int dc = d - c0 < kKiviQueryChunk ? d - c0 : kKiviQueryChunk;
    // Fold the scales into the query and quantize it to int8 per row.
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      __m512 mx = _mm512_setzero_ps();
      for (int c = 0; c < dc; c += 16) {
        const __mmask16 m = dc - c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(dc - c));
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + 2 * (c0 + c)));
        const __m512 qs = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + r * d + c0 + c), s);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(qs));
      }
      const float maxabs = _mm512_reduce_max_ps(mx);
      const float inv = maxabs > 0.0f ? 127.0f / maxabs : 0.0f;
      alpha[r] = maxabs / 127.0f;
      const __m512 invv = _mm512_set1_ps(inv);
      for (int c = 0; c < dc; c += 16) {
        const __mmask16 m = dc - c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(dc - c));
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + 2 * (c0 + c)));
        const __m512 qs = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + r * d + c0 + c), s);
        const __m512i qi32 = _mm512_cvtps_epi32(_mm512_mul_ps(qs, invv));  // MXCSR nearest even
        _mm_mask_storeu_epi8(&qi[r][c], m, _mm512_cvtsepi32_epi8(qi32));
      }
    }
    const int blocks = dc / cb;
    for (int tile = 0; tile < G / kKiviKeyTileTokens; ++tile) {
      const std::uint8_t* bp = blob + (static_cast<std::size_t>(tile) * blocks_per_tile + c0 / cb) * 64;
      __m512i acc[R];
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
      for (int b = 0; b < blocks; ++b, bp += 64) {
        const __m512i raw = _mm512_loadu_si512(bp);
#pragma GCC unroll 8
        for (int f = 0; f < fields; ++f) {
          const __m512i codes = f == 0 ? _mm512_and_si512(raw, code_mask)
                                       : _mm512_and_si512(_mm512_srli_epi16(raw, bits * f), code_mask);
          const int quad = b * (cb / 4) + f;  // channels c0 + 4·quad .. +3
          #pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            std::int32_t q4;
            std::memcpy(&q4, &qi[r][4 * quad], 4);
            acc[r] = _mm512_dpbusd_epi32(acc[r], codes, _mm512_set1_epi32(q4));
          }
        }
      }
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        float* out = logits + static_cast<std::size_t>(r) * ldl + static_cast<std::size_t>(tile) * kKiviKeyTileTokens;
        const __m512 part = _mm512_cvtepi32_ps(acc[r]);
        const __m512 base = c0 == 0 ? _mm512_set1_ps(qz[r]) : _mm512_loadu_ps(out);
        _mm512_storeu_ps(out, _mm512_fmadd_ps(_mm512_set1_ps(alpha[r]), part, base));
      }
    }
  }
}

}  // namespace detail

/// AVX-512 VNNI kivi_key_logits (int8 query; error bound in the file comment).
inline void kivi_key_logits(const std::uint8_t* groups, std::size_t n_groups, int G, int d, int bits,
                            const float* q, int rows, float* logits, std::size_t ldl, isa::avx512) {
  const std::size_t gbytes = kivi_key_group_bytes(G, d, bits);
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::uint8_t* blob = groups + g * gbytes;
    float* lg = logits + g * static_cast<std::size_t>(G);
    detail::dispatch_rows<kKiviMaxRows>(rows, [&](auto r) {
      constexpr int R = decltype(r)::value;
      if (bits == 2) detail::kivi_key_logits_group_vnni<R, 2>(blob, G, d, q, lg, ldl);
      else if (bits == 4) detail::kivi_key_logits_group_vnni<R, 4>(blob, G, d, q, lg, ldl);
      else detail::kivi_key_logits_group_vnni<R, 8>(blob, G, d, q, lg, ldl);
    });
  }
}
#endif  // KVCOMPRESS_HAS_AVX512_VNNI

/// AVX-512 kivi_quantize_value_rows: byte-identical to scalar.
inline void kivi_quantize_value_rows(const float* v, std::size_t ldv, std::size_t n, int d, int Gv, int bits,
                                     std::uint8_t* dst, isa::avx512) {
  const int levels = (1 << bits) - 1;
  const int per = 32 / bits;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  const __m512 lv = _mm512_set1_ps(static_cast<float>(levels));
  const __m512i shifts = detail::kivi_word_shifts(bits);
  for (std::size_t t = 0; t < n; ++t) {
    const float* x = v + t * ldv;
    std::uint8_t* row = dst + t * row_bytes;
    std::uint8_t* scales = row + code_bytes;
    std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int g = 0; g < n_groups; ++g) {
      const float* xg = x + g * Gv;
      const __m512 first = _mm512_set1_ps(xg[0]);
      __m512 lo = first, hi = first;
      for (int c = 0; c < Gv; c += 16) {
        const __mmask16 m = Gv - c >= 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(static_cast<std::size_t>(Gv - c));
        const __m512 xv = _mm512_mask_loadu_ps(first, m, xg + c);
        lo = _mm512_min_ps(xv, lo);
        hi = _mm512_max_ps(xv, hi);
      }
      float lo_s = _mm512_reduce_min_ps(lo), hi_s = _mm512_reduce_max_ps(hi);
      if (lo_s == 0.0f) lo_s = detail::kivi_first_zero(xg, Gv);
      if (hi_s == 0.0f) hi_s = detail::kivi_first_zero(xg, Gv);
      const detail::KiviMeta meta = detail::kivi_meta(lo_s, hi_s, levels);
      detail::kivi_store_u16(scales + 2 * g, meta.s16);
      detail::kivi_store_u16(mins + 2 * g, meta.z16);
      const __m512 zf = _mm512_set1_ps(f16_bits_to_f32(meta.z16));
      const __m512 inv = _mm512_set1_ps(detail::kivi_inv_scale(f16_bits_to_f32(meta.s16)));
      for (int c = 0; c < Gv; c += 16) {
        const int width = Gv - c < 16 ? Gv - c : 16;  // a multiple of 32/b
        const __mmask16 m = width == 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(static_cast<std::size_t>(width));
        const __m512i q = _mm512_sllv_epi32(detail::kivi_codes(_mm512_maskz_loadu_ps(m, xg + c), zf, inv, lv), shifts);
        alignas(64) std::uint32_t lanes[16];
        _mm512_store_si512(lanes, q);
        for (int w = 0; w < width / per; ++w) {
          std::uint32_t word = 0;
          for (int j = 0; j < per; ++j) word |= lanes[w * per + j];
          detail::kivi_store_u32(row + 4 * static_cast<std::size_t>((g * Gv + c) / per + w), word);
        }
      }
    }
  }
}

namespace detail {

/// 16 codes of channels [c, c+16) of a value row as floats (c a multiple of 16).
template <int Bits>
inline __m512 kivi_value_codes16(const std::uint8_t* row, int c, __m512i shifts, __m512i mask) {
  __m512i words;
  if constexpr (Bits == 2) {
    words = _mm512_set1_epi32(static_cast<int>(kivi_load_u32(row + c / 4)));
  } else if constexpr (Bits == 4) {
    const std::uint8_t* p = row + c / 2;
    words = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(static_cast<int>(kivi_load_u32(p)))),
                               _mm256_set1_epi32(static_cast<int>(kivi_load_u32(p + 4))), 1);
  } else {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
  }
  return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(words, shifts), mask));
}

/// W chunks of 16 channels from c0, R rows, tokens [t0, t1): out += Σ_t p_rt · (s_tg · code_tc).
template <int R, int W, int Bits>
inline void kivi_value_slice_avx512(const std::uint8_t* rows_data, std::size_t row_bytes, std::size_t code_bytes,
                                    std::size_t t0, std::size_t t1, int d, int Gv, const float* p,
                                    std::size_t ldp, float* out, int c0, __m512i shifts, __m512i mask) {
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_loadu_ps(out + r * d + c0 + 16 * w);
  for (std::size_t t = t0; t < t1; ++t) {
    const std::uint8_t* row = rows_data + t * row_bytes;
    const std::uint8_t* scales = row + code_bytes;
    __m512 sc[W];
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) {
      const int c = c0 + 16 * w;
      const float s = _cvtsh_ss(kivi_load_u16(scales + 2 * (c / Gv)));
      sc[w] = _mm512_mul_ps(kivi_value_codes16<Bits>(row, c, shifts, mask), _mm512_set1_ps(s));
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 pr = _mm512_set1_ps(p[static_cast<std::size_t>(r) * ldp + t]);
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(pr, sc[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(out + r * d + c0 + 16 * w, acc[r][w]);
}

template <int R, int Bits>
inline void kivi_value_accumulate_avx512(const std::uint8_t* rows_data, std::size_t n, int d, int Gv,
                                         const float* p, std::size_t ldp, float* out) {
  constexpr int bits = Bits;
  constexpr int W = R <= 4 ? 4 : (R <= 8 ? 2 : 1);  // R·W ≤ 16 accumulators
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  const __m512i shifts = kivi_word_shifts(bits);
  const __m512i mask = _mm512_set1_epi32((1 << bits) - 1);
  const std::size_t tile = 64;  // 64 rows ≤ 64·(d + 4d/Gv) bytes: L1-resident for d ≤ 256
  for (std::size_t t0 = 0; t0 < n; t0 += tile) {
    const std::size_t t1 = t0 + tile < n ? t0 + tile : n;
    int c0 = 0;
    for (; c0 + 16 * W <= d; c0 += 16 * W)
      kivi_value_slice_avx512<R, W, Bits>(rows_data, row_bytes, code_bytes, t0, t1, d, Gv, p, ldp, out, c0, shifts, mask);
    for (; c0 < d; c0 += 16)  // d % 16 == 0 because Gv % 16 == 0
      kivi_value_slice_avx512<R, 1, Bits>(rows_data, row_bytes, code_bytes, t0, t1, d, Gv, p, ldp, out, c0, shifts, mask);
    // Mins: out[r][c] += Σ_t p_rt · z_tg, 16 groups at a time.
    for (int g0 = 0; g0 < n_groups; g0 += 16) {
      const __mmask16 m = n_groups - g0 >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(n_groups - g0));
      __m512 zacc[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) zacc[r] = _mm512_setzero_ps();
      for (std::size_t t = t0; t < t1; ++t) {
        const std::uint8_t* mins = rows_data + t * row_bytes + code_bytes + 2 * static_cast<std::size_t>(n_groups);
        const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, mins + 2 * g0));
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
          zacc[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[static_cast<std::size_t>(r) * ldp + t]), z, zacc[r]);
      }
      alignas(64) float zs[R][16];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) _mm512_store_ps(zs[r], zacc[r]);
      for (int r = 0; r < R; ++r)
        for (int g = g0; g < n_groups && g < g0 + 16; ++g) {
          const __m512 zv = _mm512_set1_ps(zs[r][g - g0]);
          for (int c = g * Gv; c < (g + 1) * Gv; c += 16)
            _mm512_storeu_ps(out + r * d + c, _mm512_add_ps(_mm512_loadu_ps(out + r * d + c), zv));
        }
    }
  }
}

}  // namespace detail

/// AVX-512 kivi_value_accumulate (fp32 FMAs, metadata folded). Gv % 16 != 0 falls back.
inline void kivi_value_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                  const float* p, std::size_t ldp, int rows, float* out, isa::avx512) {
  if (Gv % 16 != 0) {
    kivi_value_accumulate(rows_data, n, d, Gv, bits, p, ldp, rows, out, isa::avx2{});
    return;
  }
  detail::dispatch_rows<kKiviMaxRows>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (bits == 2) detail::kivi_value_accumulate_avx512<R, 2>(rows_data, n, d, Gv, p, ldp, out);
    else if (bits == 4) detail::kivi_value_accumulate_avx512<R, 4>(rows_data, n, d, Gv, p, ldp, out);
    else detail::kivi_value_accumulate_avx512<R, 8>(rows_data, n, d, Gv, p, ldp, out);
  });
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
