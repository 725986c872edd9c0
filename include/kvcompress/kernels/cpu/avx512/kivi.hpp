// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX-512 KIVI kernels (layouts and quantization rule: kernels/cpu/scalar/kivi.hpp).
///
/// Quantizers: min/max, fp16 metadata (`vcvtps2ph`, nearest even) and codes
/// (`(x − z16)·inv` → `vrndscaleps` nearest even → clamp) are the scalar float operations lane by
/// lane, so the packed blobs are byte-identical to scalar (min/max keep scalar's first-zero
/// rule for ±0). Dequantizers: 16 channels per vector (codes expanded with `vpermd`, per-lane
/// shifts); the results equal scalar's bit for bit (q·s16 is exact in fp32).
///
/// The fused decode kernels (kivi_key_logits, kivi_value_accumulate) have no AVX-512 overload:
/// calls with isa::avx512 resolve to the AVX2 fp32 kernels through the tag chain. Measured on the
/// machines we build and benchmark on (AMD Zen 4, where a 512-bit FMA issues as two 256-bit
/// halves; d = 128, 4 query rows, 1024 tokens in L2, thread CPU time), the AVX2 kernels were the
/// fastest exact option: keys 14.0 µs vs 20.5 µs for the AVX-512 VNNI path and values 14.6 µs vs
/// 15.3 µs (fp32 zmm) / 18.3 µs (VNNI) at 2-bit. A VNNI path with the folded query quantized to a
/// single int8 level per group was faster but off by ≈ 2 % of the largest logit (0.4 at logits of
/// ±20), which a reference library cannot accept; splitting into three int8 levels restores
/// ≈ 1e-6 relative accuracy but triples the dot products. (That code is in the history at commit
/// 7b1c102 and its successor, for machines with two 512-bit FMA ports.)
#include <cstring>

#include "kvcompress/kernels/cpu/scalar/kivi.hpp"
#include "kvcompress/kernels/cpu/avx2/kivi.hpp"
#include "kvcompress/kernels/cpu/avx512/convert.hpp"

#if KVCOMPRESS_HAS_AVX512
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

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

/// AVX-512 kivi_dequantize_key_group: per 16-channel chunk the token's code dwords of the (1, 2 or
/// 4) blocks it spans are expanded to lanes (`vpermd`), shifted per lane, masked, converted and
/// scaled: x̂ = q·s16 + z16 (the product q·s16 has ≤ 8 + 11 significant bits, so it is exact and
/// mul-then-add equals an FMA: bit-identical to scalar whether or not the compiler contracts it).
inline void kivi_dequantize_key_group(const std::uint8_t* src, int G, int d, int bits, float* dst,
                                      std::size_t ld, isa::avx512) {
  const int cb = 32 / bits;
  const int k = 16 / cb;  // blocks per 16 channels (1, 2, 4)
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::uint8_t* scales = src + code_bytes;
  const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i expand = _mm512_srli_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32(k)), 4);  // l·k/16
  const __m512i shifts = _mm512_add_epi32(
      _mm512_slli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(3)), 3),
      _mm512_mullo_epi32(_mm512_srli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(cb - 1)), 2), _mm512_set1_epi32(bits)));
  const __m512i mask = _mm512_set1_epi32((1 << bits) - 1);
  for (int c0 = 0; c0 < d; c0 += 16) {
    const int width = d - c0 < 16 ? d - c0 : 16;  // a multiple of 4
    const __mmask16 m = width == 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(static_cast<std::size_t>(width));
    const int nblk = (width + cb - 1) / cb;
    const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + 2 * c0));
    const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, mins + 2 * c0));
    for (int t = 0; t < G; ++t) {
      const std::uint8_t* bp = src + (static_cast<std::size_t>(t / kKiviKeyTileTokens) * blocks_per_tile + c0 / cb) * 64 +
                               4 * (t % kKiviKeyTileTokens);
      std::uint32_t w4[4] = {0, 0, 0, 0};
      for (int b = 0; b < nblk; ++b) w4[b] = detail::kivi_load_u32(bp + 64 * b);
      const __m512i words = _mm512_permutexvar_epi32(expand, _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w4))));
      const __m512 code = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(words, shifts), mask));
      _mm512_mask_storeu_ps(dst + static_cast<std::size_t>(t) * ld + c0, m, _mm512_add_ps(_mm512_mul_ps(code, s), z));
    }
  }
}

/// AVX-512 kivi_dequantize_value_rows: 16 channels at a time; P-KIVI words expanded to lanes
/// (`vpermd`), per-lane shift and mask, group scale/min per lane (`vpermps` over the row's
/// widened metadata, up to 16 groups per chunk window).
inline void kivi_dequantize_value_rows(const std::uint8_t* src, std::size_t n, int d, int Gv, int bits,
                                       float* dst, std::size_t ld, isa::avx512) {
  const int per = 32 / bits;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i mask = _mm512_set1_epi32((1 << bits) - 1);
  for (int c0 = 0; c0 < d; c0 += 16) {
    const int width = d - c0 < 16 ? d - c0 : 16;
    const __mmask16 m = width == 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(static_cast<std::size_t>(width));
    const __m512i ch = _mm512_add_epi32(lane, _mm512_set1_epi32(c0));
    // word index relative to c0/per, shift b·(c mod per); bits | 32 so per is a power of two.
    const __m512i widx = _mm512_sub_epi32(_mm512_srli_epi32(ch, bits == 2 ? 4 : bits == 4 ? 3 : 2), _mm512_set1_epi32(c0 / per));
    const __m512i shifts = _mm512_mullo_epi32(_mm512_and_si512(ch, _mm512_set1_epi32(per - 1)), _mm512_set1_epi32(bits));
    const int w0 = c0 / per, nw = (c0 + width - 1) / per - w0 + 1;  // ≤ 4 words
    const int g0 = c0 / Gv, ngw = (c0 + width - 1) / Gv - g0 + 1;   // ≤ 16 groups
    alignas(64) std::int32_t gi[16];
    for (int l = 0; l < 16; ++l) gi[l] = (c0 + (l < width ? l : width - 1)) / Gv - g0;
    const __m512i gidx = _mm512_load_si512(gi);
    const __mmask16 wm = detail::tail_mask16(static_cast<std::size_t>(nw));
    const __mmask16 gmask = ngw >= 16 ? static_cast<__mmask16>(0xffff) : detail::tail_mask16(static_cast<std::size_t>(ngw));
    for (std::size_t t = 0; t < n; ++t) {
      const std::uint8_t* row = src + t * row_bytes;
      const std::uint8_t* scales = row + code_bytes;
      const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
      const __m512i words = _mm512_permutexvar_epi32(widx, _mm512_castsi128_si512(_mm_maskz_loadu_epi32(wm, row + 4 * w0)));
      const __m512 code = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(words, shifts), mask));
      const __m512 s = _mm512_permutexvar_ps(gidx, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, scales + 2 * g0)));
      const __m512 z = _mm512_permutexvar_ps(gidx, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, mins + 2 * g0)));
      _mm512_mask_storeu_ps(dst + t * ld + c0, m, _mm512_add_ps(_mm512_mul_ps(code, s), z));
    }
  }
}



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

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX512
