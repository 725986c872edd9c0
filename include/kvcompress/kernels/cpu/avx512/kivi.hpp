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
/// A 64-byte code block is split into its 8/b fields with one AND each, the code staying in place
/// (value q·2^(b·f) ≤ 240, a u8); `vpdpbusd` with the broadcast 4 query bytes of that channel quad
/// accumulates 16 token dot products exactly in int32, one accumulator per (row, field); the field
/// sums are exact multiples of 2^(b·f) and are shifted back exactly (|sum| ≤ 255·127·256 < 2^24,
/// so the int→float conversion is exact). Rows are processed 4 at a time (4·4 accumulators), the
/// scales/mins are widened once per group for all rows, and the next group is prefetched.
/// The logit is Σ_chunks α·Σ_c qi_c·code_tc + Σ_c q_c·z_c.
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
/// Value accumulation, 2/4-bit codes with VNNI + VBMI (KVCOMPRESS_HAS_AVX512_VNNI/_VBMI, d/Gv ≤ 16,
/// d·b/8 ≤ 128): an integer dot product over tokens, the row layout unchanged.
///  - Weights: per token t and group g, w_tg = p_t·s16_tg in fp32 (scalar's product), computed
///    16/ngp tokens per vector (ngp = d/Gv rounded up to a power of two). Per query row
///    and block B of kKiviValueWeightBlock = 32 tokens (blocks start at the first token of the
///    call): M = max_{t∈B, g} |w_tg|, δ = M/127, wi_tg = nearbyint(w_tg·(127/M)) ∈ [−127, 127]
///    (int8; 0 when M = 0).
///  - Codes: 4 consecutive rows, one 16-byte slice of each, are transposed with one `vpermb` so
///    that 32-bit lane l holds byte l of the 4 tokens; field f of that byte (one AND, code kept in
///    place, ≤ 240) is channel (16·slice + l)·(8/b) + f. `vpdpbusd` with the lanes' int8 weights
///    (the 4 tokens' wi of the lane's group: a broadcast when a slice lies in one group, else one
///    `vpermd`) sums the 4 tokens in int32 — exact (≤ 32·240·127 < 2^24 per block).
///  - Per block the int32 sums are scaled by δ·2^(−b·f) (exact power-of-two factor) into fp32
///    accumulators kept in the transposed order; Σ_t p_t·z16_tg is accumulated separately in
///    fp32 per group; both are added to out once per call. Rows are processed 4 at a time.
/// Error bound. With y = fl(fl(w·fl(127/M))): |y − w·127/M| ≤ 127·(2u + u²) ≤ 2^-16
/// (u = 2^-24), |wi − y| ≤ 1/2, hence |w − δ·wi| ≤ δ·(1/2 + 2^-16) per token and group, and for
/// every output element (row r, channel c)
///     |out_vnni − out_exact| ≤ Σ_B δ_rB·(1/2 + 2^-16)·Σ_{t∈B} code_tc   (+ fp32 sum rounding)
///                           ≤ 0.50002 · L · Σ_B max_{t∈B,g} |p_rt s16_tg| · |B| / 127.
/// For a block of uniform weights p = 1/n this is ≤ L·s/254 per block fraction, i.e. ≤ 0.012·s
/// (2-bit) or 0.06·s (4-bit) in total, against KIVI's own value error of up to s/2 per element
/// (Σ_t p_t·s_t/2); for one dominant token (p ≈ 1) the worst case (every rounding error of the
/// block with the same sign) is 3·32/254·s ≈ 0.38·s for 2-bit; the errors are independent and
/// centred, so the typical error is ≈ √32 times smaller.
/// tests/kernels/cpu/kivi_kernels_test.cpp checks this bound against scalar, plus the total error
/// of the attention output against the unquantized values. 8-bit codes keep the exact fp32
/// path: there the quantization error is s/2 with s = range/255, and int8 weights would add up to
/// L·max(w)/254 ≈ range·max(p)/254 — as large as KIVI-8's own error — so they would double it.
/// Other shapes use the fp32 path below (Gv % 16 == 0) or the AVX2/scalar path.
///
/// fp32 value path: tokens in L1 tiles; for each 16-channel chunk the codes are widened
/// (`vpsrlvd` + mask + `vcvtdq2ps`), multiplied once by the token's group scale (shared by all
/// rows), and FMA'd into all rows' accumulators; Σ_t p_t·z_t is accumulated per group separately
/// and added once (metadata folded).
///
/// Dequantizers: 16 channels per vector (codes expanded with `vpermd`, per-lane shifts); the
/// results equal scalar's bit for bit (q·s16 is exact in fp32).

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

#if KVCOMPRESS_HAS_AVX512_VNNI
namespace detail {

/// Rows of one pass of the VNNI key-logits kernel: R·(8/b) int32 accumulators (≤ 16) stay in
/// registers; more rows are processed in passes of this many rows.
inline constexpr int kKiviKeyRowsPerPass = 4;

/// VNNI key logits for R ≤ 4 rows over one key group: logits[r·ldl + t], t in [0, G).
/// Per (row, 256-channel chunk) the folded query qs = q⊙s is quantized to int8 once for the
/// group (the fp16 scales/mins are widened once per 16 channels and shared by all rows). The
/// codes stay in place in their byte: field f of a block is `raw & (L << b·f)`, i.e. the code
/// times 2^(b·f) (≤ 240, still a u8); every field has its own int32 accumulator per row, and
/// since each such sum is an exact multiple of 2^(b·f) an arithmetic shift brings it back
/// exactly before the fields are added. This replaces a shift+AND per field by one AND and
/// gives 4·R independent `vpdpbusd` chains (latency hidden).
template <int R, int Bits>
inline void kivi_key_logits_group_vnni(const std::uint8_t* blob, int G, int d, const float* q,
                                       float* logits, std::size_t ldl, const std::uint8_t* next,
                                       std::size_t next_bytes) {
  constexpr int bits = Bits;
  constexpr int cb = 32 / bits;
  constexpr int fields = 8 / bits;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::uint8_t* scales = blob + code_bytes;
  const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  // Prefetch the next group (streams from DRAM while this one is computed).
  for (std::size_t off = 0; off < next_bytes; off += 64) _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T0);
  // q·z per row (fp32); the mins are widened once for all rows.
  __m512 qzacc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) qzacc[r] = _mm512_setzero_ps();
  for (int c = 0; c < d; c += 16) {
    const __mmask16 m = d - c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(d - c));
    const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, mins + 2 * c));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) qzacc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + r * d + c), z, qzacc[r]);
  }
  float qz[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) qz[r] = _mm512_reduce_add_ps(qzacc[r]);
  alignas(64) float qs[R][kKiviQueryChunk];
  alignas(64) std::int8_t qi[R][kKiviQueryChunk];
  float alpha[R];
  for (int c0 = 0; c0 < d; c0 += kKiviQueryChunk) {
    const int dc = d - c0 < kKiviQueryChunk ? d - c0 : kKiviQueryChunk;
    // Fold the scales into the query (fp32 product, as scalar) and find max |qs| per row.
    __m512 mx[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) mx[r] = _mm512_setzero_ps();
    for (int c = 0; c < dc; c += 16) {
      const __mmask16 m = dc - c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(dc - c));
      const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + 2 * (c0 + c)));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + r * d + c0 + c), s);
        _mm512_store_ps(&qs[r][c], v);
        mx[r] = _mm512_max_ps(mx[r], _mm512_abs_ps(v));
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float maxabs = _mm512_reduce_max_ps(mx[r]);
      const __m512 invv = _mm512_set1_ps(maxabs > 0.0f ? 127.0f / maxabs : 0.0f);
      alpha[r] = maxabs / 127.0f;
      for (int c = 0; c < dc; c += 16) {
        const __m512i qi32 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(&qs[r][c]), invv));  // nearest even
        _mm_store_si128(reinterpret_cast<__m128i*>(&qi[r][c]), _mm512_cvtsepi32_epi8(qi32));  // lanes ≥ dc: 0
      }
    }
    const int blocks = dc / cb;
    for (int tile = 0; tile < G / kKiviKeyTileTokens; ++tile) {
      const std::uint8_t* bp = blob + (static_cast<std::size_t>(tile) * blocks_per_tile + c0 / cb) * 64;
      __m512i acc[R][fields];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int f = 0; f < fields; ++f) acc[r][f] = _mm512_setzero_si512();
      for (int b = 0; b < blocks; ++b, bp += 64) {
        const __m512i raw = _mm512_loadu_si512(bp);
#pragma GCC unroll 4
        for (int f = 0; f < fields; ++f) {
          const __m512i codes =
              fields == 1 ? raw : _mm512_and_si512(raw, _mm512_set1_epi8(static_cast<char>(((1 << bits) - 1) << (bits * f))));
          const int quad = b * (cb / 4) + f;  // channels c0 + 4·quad .. +3
#pragma GCC unroll 4
          for (int r = 0; r < R; ++r) {
            std::int32_t q4;
            std::memcpy(&q4, &qi[r][4 * quad], 4);
            acc[r][f] = _mm512_dpbusd_epi32(acc[r][f], codes, _mm512_set1_epi32(q4));
          }
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m512i tot = acc[r][0];
#pragma GCC unroll 4
        for (int f = 1; f < fields; ++f) tot = _mm512_add_epi32(tot, _mm512_srai_epi32(acc[r][f], bits * f));  // exact
        float* out = logits + static_cast<std::size_t>(r) * ldl + static_cast<std::size_t>(tile) * kKiviKeyTileTokens;
        const __m512 base = c0 == 0 ? _mm512_set1_ps(qz[r]) : _mm512_loadu_ps(out);
        _mm512_storeu_ps(out, _mm512_fmadd_ps(_mm512_set1_ps(alpha[r]), _mm512_cvtepi32_ps(tot), base));
      }
    }
  }
}

}  // namespace detail

/// AVX-512 VNNI kivi_key_logits (int8 query; error bound in the file comment). Rows are processed
/// in passes of up to 4 (the codes of a group are re-read from L1 by later passes).
inline void kivi_key_logits(const std::uint8_t* groups, std::size_t n_groups, int G, int d, int bits,
                            const float* q, int rows, float* logits, std::size_t ldl, isa::avx512) {
  const std::size_t gbytes = kivi_key_group_bytes(G, d, bits);
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::uint8_t* blob = groups + g * gbytes;
    const std::uint8_t* next = blob + gbytes;
    const std::size_t next_bytes = g + 1 < n_groups ? gbytes : 0;
    for (int r0 = 0; r0 < rows; r0 += detail::kKiviKeyRowsPerPass) {
      const int rr = rows - r0 < detail::kKiviKeyRowsPerPass ? rows - r0 : detail::kKiviKeyRowsPerPass;
      float* lg = logits + static_cast<std::size_t>(r0) * ldl + g * static_cast<std::size_t>(G);
      const float* qr = q + static_cast<std::size_t>(r0) * d;
      const std::size_t nb = r0 == 0 ? next_bytes : 0;
      detail::dispatch_rows<detail::kKiviKeyRowsPerPass>(rr, [&](auto r) {
        constexpr int R = decltype(r)::value;
        if (bits == 2) detail::kivi_key_logits_group_vnni<R, 2>(blob, G, d, qr, lg, ldl, next, nb);
        else if (bits == 4) detail::kivi_key_logits_group_vnni<R, 4>(blob, G, d, qr, lg, ldl, next, nb);
        else detail::kivi_key_logits_group_vnni<R, 8>(blob, G, d, qr, lg, ldl, next, nb);
      });
    }
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

#if KVCOMPRESS_HAS_AVX512_VNNI && KVCOMPRESS_HAS_AVX512_VBMI
/// Tokens sharing one int8 weight scale δ (per query row) in the VNNI value path.
inline constexpr int kKiviValueWeightBlock = 32;

namespace detail {

/// ⌊x / den⌋ per lane for 0 ≤ x < 2^12, 1 ≤ den < 2^12: (x + 1/2)/den in fp32 lies strictly
/// inside (q, q + 1) with a margin of 1/(2·den) ≫ the rounding error, so truncation is exact.
inline __m512i kivi_div_small(__m512i x, int den) {
  const __m512 y = _mm512_div_ps(_mm512_add_ps(_mm512_cvtepi32_ps(x), _mm512_set1_ps(0.5f)), _mm512_set1_ps(static_cast<float>(den)));
  return _mm512_cvttps_epi32(y);
}

/// Largest code bytes per value row (d·b/8) of the VNNI value path; larger rows use fp32 FMAs.
inline constexpr int kKiviVnniMaxCodeBytes = 128;

/// VNNI value accumulation for R ≤ 4 rows and 2/4-bit codes (layout and error bound in the file
/// comment). Needs d/Gv ≤ 16 and d·b/8 ≤ kKiviVnniMaxCodeBytes.
template <int R, int Bits, bool Uniform>
inline void kivi_value_accumulate_vnni(const std::uint8_t* rows_data, std::size_t n, int d, int Gv,
                                       const float* p, std::size_t ldp, float* out) {
  constexpr int F = 8 / Bits;  // code fields per byte
  constexpr int T = kKiviValueWeightBlock;
  constexpr int TQ = T / 4;
  const int cbytes = d * Bits / 8;
  const int ng = d / Gv;
  const int gb = Gv * Bits / 8;  // code bytes per group (a multiple of 4)
  const int S = (cbytes + 15) / 16;
  const std::size_t rb = kivi_value_row_bytes(d, Gv, Bits);
  const __mmask16 gm = ng >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(ng));
  // Output byte 4·l + i of the 4-token transpose = input byte 16·i + l.
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i tr = _mm512_add_epi8(_mm512_set1_epi32(0x30201000), _mm512_mullo_epi32(lane, _mm512_set1_epi32(0x01010101)));
  // Group of every byte lane of each slice (lanes past the codes: the last byte's group).
  __m512i gidx[kKiviVnniMaxCodeBytes / 16];
  for (int s = 0; s < S; ++s) {
    const int nbytes = cbytes - 16 * s < 16 ? cbytes - 16 * s : 16;
    const __m512i byte = _mm512_add_epi32(_mm512_min_epi32(lane, _mm512_set1_epi32(nbytes - 1)), _mm512_set1_epi32(16 * s));
    gidx[s] = detail::kivi_div_small(byte, gb);
  }
  alignas(64) float accT[R][4 * kKiviVnniMaxCodeBytes];  // [s·F + f][lane]: S·F·16 ≤ 8·4·16
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < S * F * 16; ++i) accT[r][i] = 0.0f;
  alignas(64) float wf[R][T * 16];        // [token][group] (ngp lanes per token)
  alignas(64) std::int8_t wb[R][T * 16];  // the same, int8
  alignas(64) std::int32_t wt[R][TQ][16];  // [row][quad][group]: int8 weights of the quad's 4 tokens
  int ngp = 1;  // ng rounded up to a power of two; P tokens per weight vector
  while (ngp < ng) ngp *= 2;
  const int P = 16 / ngp;
  int lg = 0;
  while ((1 << lg) < ngp) ++lg;
  const __m512i pidx = _mm512_srli_epi32(lane, lg);
  // wt byte 4·g + i = wb byte i·ngp + g (i < 4, g < ngp).
  const __m512i widx = _mm512_add_epi32(
      _mm512_mullo_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(ngp - 1)), _mm512_set1_epi32(0x01010101)),
      _mm512_set1_epi32(static_cast<int>(0x03020100u * static_cast<unsigned>(ngp))));
  const __mmask64 qm = 4 * ngp >= 64 ? ~__mmask64{0} : ((__mmask64{1} << (4 * ngp)) - 1);
  __m512 zacc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) zacc[r] = _mm512_setzero_ps();
  for (std::size_t t0 = 0; t0 < n; t0 += T) {
    const int nt = n - t0 < static_cast<std::size_t>(T) ? static_cast<int>(n - t0) : T;
    const int nq = (nt + 3) / 4;
    const std::uint8_t* tile = rows_data + t0 * rb;
    // Prefetch the next tile's rows.
    if (t0 + T < n) {
      const std::size_t nb = (n - t0 - T < static_cast<std::size_t>(T) ? n - t0 - T : T) * rb;
      for (std::size_t off = 0; off < nb; off += 64) _mm_prefetch(reinterpret_cast<const char*>(tile + T * rb + off), _MM_HINT_T0);
    }
    // Weights w = p·s16 (fp32, as scalar), their max |w| per row, and Σ p·z16 per group; P tokens
    // per vector, lane j = (token j / ngp, group j mod ngp).
    __m512 mx[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) mx[r] = _mm512_setzero_ps();
    const int npk = (4 * nq + P - 1) / P;
    for (int pk = 0; pk < npk; ++pk) {
      __m256i sv = _mm256_setzero_si256(), zv = _mm256_setzero_si256();
      const int tp = pk * P;
      for (int i = 0; i < P && tp + i < nt; ++i) {
        // Lanes [i·ngp, i·ngp + ng) from this token's metadata (the pointer stays inside the
        // blob array: rb ≥ 4·ng ≥ 2·ngp).
        const std::uint8_t* meta = tile + static_cast<std::size_t>(tp + i) * rb + cbytes - 2 * i * ngp;
        const __mmask16 mi = static_cast<__mmask16>(gm << (i * ngp));
        sv = _mm256_mask_loadu_epi16(sv, mi, meta);
        zv = _mm256_mask_loadu_epi16(zv, mi, meta + 2 * ng);
      }
      const __m512 s = _mm512_cvtph_ps(sv), z = _mm512_cvtph_ps(zv);
      const int live = nt - tp < 0 ? 0 : (nt - tp < P ? nt - tp : P);
      const __mmask16 pm = tail_mask16(static_cast<std::size_t>(live)) | (live == 16 ? 0xffff : 0);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 pv = _mm512_permutexvar_ps(pidx, _mm512_maskz_loadu_ps(pm, p + static_cast<std::size_t>(r) * ldp + t0 + tp));
        const __m512 w = _mm512_mul_ps(pv, s);
        _mm512_store_ps(&wf[r][16 * pk], w);
        mx[r] = _mm512_max_ps(mx[r], _mm512_abs_ps(w));
        zacc[r] = _mm512_fmadd_ps(pv, z, zacc[r]);
      }
    }
    float delta[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float maxabs = _mm512_reduce_max_ps(mx[r]);
      const __m512 inv = _mm512_set1_ps(maxabs > 0.0f ? 127.0f / maxabs : 0.0f);
      delta[r] = maxabs / 127.0f;
      for (int pk = 0; pk < npk; ++pk)
        _mm_store_si128(reinterpret_cast<__m128i*>(&wb[r][16 * pk]),
                        _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(&wf[r][16 * pk]), inv))));
      for (int qd = 0; qd < nq; ++qd)  // dword g of wt = the quad's 4 tokens of group g
        _mm512_store_si512(wt[r][qd], _mm512_permutexvar_epi8(widx, _mm512_maskz_loadu_epi8(qm, &wb[r][4 * ngp * qd])));
    }
    // Codes: per 16-byte slice, 4 tokens at a time transposed so that lane l holds byte l of the
    // 4 tokens; field f of the lane is channel (16·s + l)·F + f of those tokens.
    for (int s = 0; s < S; ++s) {
      const int nbytes = cbytes - 16 * s < 16 ? cbytes - 16 * s : 16;
      const __mmask16 bm = nbytes == 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(nbytes));
      const int g_s = 16 * s / gb;  // the slice's group when Uniform
      __m512i acc[R][F];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int f = 0; f < F; ++f) acc[r][f] = _mm512_setzero_si512();
      const std::uint8_t* base = tile + 16 * s;
      for (int qd = 0; qd < nq; ++qd) {
        const std::uint8_t* r0 = base + static_cast<std::size_t>(4 * qd) * rb;
        const int live = nt - 4 * qd;  // tokens of this quad present (≥ 1)
        __m512i x = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(bm, r0));
        if (live >= 4) {
          x = _mm512_inserti32x4(x, _mm_maskz_loadu_epi8(bm, r0 + rb), 1);
          x = _mm512_inserti32x4(x, _mm_maskz_loadu_epi8(bm, r0 + 2 * rb), 2);
          x = _mm512_inserti32x4(x, _mm_maskz_loadu_epi8(bm, r0 + 3 * rb), 3);
        } else {
          if (live > 1) x = _mm512_inserti32x4(x, _mm_maskz_loadu_epi8(bm, r0 + rb), 1);
          if (live > 2) x = _mm512_inserti32x4(x, _mm_maskz_loadu_epi8(bm, r0 + 2 * rb), 2);
        }
        const __m512i c = _mm512_permutexvar_epi8(tr, x);
        __m512i cf[F];
#pragma GCC unroll 4
        for (int f = 0; f < F; ++f)
          cf[f] = _mm512_and_si512(c, _mm512_set1_epi8(static_cast<char>(((1 << Bits) - 1) << (Bits * f))));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m512i w = Uniform ? _mm512_set1_epi32(wt[r][qd][g_s]) : _mm512_permutexvar_epi32(gidx[s], _mm512_load_si512(wt[r][qd]));
#pragma GCC unroll 4
          for (int f = 0; f < F; ++f) acc[r][f] = _mm512_dpbusd_epi32(acc[r][f], cf[f], w);
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int f = 0; f < F; ++f) {
          float* a = &accT[r][(s * F + f) * 16];
          const __m512 sc = _mm512_set1_ps(delta[r] * (1.0f / static_cast<float>(1 << (Bits * f))));  // exact 2^-bf
          _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][f]), sc, _mm512_load_ps(a)));
        }
    }
  }
  // Fold the (token, group) lanes of Σ p·z to lanes g.
  __m512 zfold[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    zfold[r] = zacc[r];
    for (int w = 8; w >= ngp; w /= 2)
      zfold[r] = _mm512_add_ps(zfold[r], _mm512_permutexvar_ps(_mm512_and_si512(_mm512_add_epi32(lane, _mm512_set1_epi32(w)), _mm512_set1_epi32(15)), zfold[r]));
  }
  // out[r][c] += Σ_t w·code (transposed order: channel c = byte·F + f) + Σ_t p·z of c's group.
  for (int c0 = 0; c0 < d; c0 += 16) {
    const __mmask16 m = d - c0 >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask16(static_cast<std::size_t>(d - c0));
    const __m512i c = _mm512_add_epi32(lane, _mm512_set1_epi32(c0));
    const __m512i k = _mm512_srli_epi32(c, Bits == 2 ? 2 : 1);
    const __m512i f = _mm512_and_si512(c, _mm512_set1_epi32(F - 1));
    const __m512i idx = _mm512_add_epi32(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(k, 4), _mm512_set1_epi32(F)), f), 4),
        _mm512_and_si512(k, _mm512_set1_epi32(15)));
    const __m512i g = detail::kivi_div_small(_mm512_min_epi32(c, _mm512_set1_epi32(d - 1)), Gv);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      float* o = out + static_cast<std::size_t>(r) * d + c0;
      const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, accT[r], 4);
      const __m512 z = _mm512_permutexvar_ps(g, zfold[r]);
      _mm512_mask_storeu_ps(o, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), _mm512_add_ps(v, z)));
    }
  }
}

}  // namespace detail

/// Whether kivi_value_accumulate(…, isa::avx512) uses int8 weights (VNNI) for this shape;
/// otherwise it is the fp32 path. The test bounds follow from it.
inline bool kivi_value_int8_weights(int d, int Gv, int bits, isa::avx512) {
  return (bits == 2 || bits == 4) && d / Gv <= 16 && d * bits / 8 <= detail::kKiviVnniMaxCodeBytes;
}
#else
inline bool kivi_value_int8_weights(int, int, int, isa::avx512) { return false; }
#endif  // KVCOMPRESS_HAS_AVX512_VNNI && KVCOMPRESS_HAS_AVX512_VBMI

/// AVX-512 kivi_value_accumulate: int8-weight VNNI path for 2/4-bit codes where available (error
/// bound in the file comment), fp32 FMAs otherwise (8-bit, Gv % 16 == 0); the rest falls back.
inline void kivi_value_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                  const float* p, std::size_t ldp, int rows, float* out, isa::avx512) {
#if KVCOMPRESS_HAS_AVX512_VNNI && KVCOMPRESS_HAS_AVX512_VBMI
  if (kivi_value_int8_weights(d, Gv, bits, isa::avx512{})) {
    const bool uniform = (Gv * bits / 8) % 16 == 0;
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int rr = rows - r0 < 4 ? rows - r0 : 4;
      const float* pr = p + static_cast<std::size_t>(r0) * ldp;
      float* o = out + static_cast<std::size_t>(r0) * d;
      detail::dispatch_rows<4>(rr, [&](auto r) {
        constexpr int R = decltype(r)::value;
        if (bits == 2) {
          if (uniform) detail::kivi_value_accumulate_vnni<R, 2, true>(rows_data, n, d, Gv, pr, ldp, o);
          else detail::kivi_value_accumulate_vnni<R, 2, false>(rows_data, n, d, Gv, pr, ldp, o);
        } else {
          if (uniform) detail::kivi_value_accumulate_vnni<R, 4, true>(rows_data, n, d, Gv, pr, ldp, o);
          else detail::kivi_value_accumulate_vnni<R, 4, false>(rows_data, n, d, Gv, pr, ldp, o);
        }
      });
    }
    return;
  }
#endif
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
