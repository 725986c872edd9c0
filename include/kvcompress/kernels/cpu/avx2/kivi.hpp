// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// AVX2 (+FMA, F16C) KIVI kernels (layouts and quantization rule: kernels/cpu/scalar/kivi.hpp).
///
/// Quantizers: byte-identical to scalar. Key groups: min/max over tokens per channel lane
/// (`vminps(x, lo)` is scalar's `x < lo ? x : lo`, so even ±0 and the order match), s = (max −
/// min)/L with `vdivps`, fp16 metadata with `vcvtps2ph` (nearest even, = f32_to_f16_bits), codes
/// `(x − z16)·inv` (explicit `vmulps`, no FMA) → `vroundps` nearest → max(·,0) → min(·,L) (the
/// scalar compare-selects, NaN → 0 as in scalar). Value rows: the group min/max is a tree
/// reduction, so a zero result takes the sign of the group's first zero (scalar's sequential
/// rule); the metadata is then rounded with scalar F16C (`vcvtps2ph`). Codes are shifted into place per
/// lane (`vpsllvd`) and OR-reduced per 4-lane half. A value row's code region is a little-endian
/// bit stream (channel c at bit b·c), so 8 channels are b bytes at byte b·c/8.
///
/// Key logits (fp32): per key group the folded query qs = q⊙s16 (scalar's fp32 product) and
/// Σ_c q_c·z16_c are computed once for all rows. A 64-byte block (16 tokens × CB channels) is
/// loaded as two 8-token vectors; channel (f, j) of a block is `(raw >> (8j + b·f)) & L` →
/// `vcvtdq2ps`, FMA'd with the broadcast qs of every row. Up to 4 rows: straight from the
/// registers (extra accumulator sets for 1–2 rows hide the FMA latency). 5–16 rows: the token
/// tile is unpacked once into an L1 buffer [d][16] of floats, then consumed by chunks of 4 rows,
/// so every code is read and unpacked once per call. Error: an fp32 sum of 2d products in a
/// different order than scalar (within the tests' float_sum_bound).
///
/// Value accumulation (fp32, Gv % 8 == 0): tiles of 64 tokens; the tile's fp16 scales/mins are
/// transposed to [group][token]; per group and row, w_t = p_t·s16_tg (scalar's product, 8 tokens
/// per vector) and Σ_t p_t·z16_tg (added to out once at the end). The codes of 8 channels
/// (`vpbroadcastd` + `vpsrlvd` + AND, or `vpmovzxbd` for 8-bit → `vcvtdq2ps`) are FMA'd with the
/// broadcast w_t of each row into register accumulators over the tile. Up to 4 rows directly;
/// 5–16 rows: 16-channel slices of the tile are unpacked once into an L1 buffer and consumed by
/// chunks of 4 rows. Gv % 8 ≠ 0 (only 8-bit with Gv ≡ 4 mod 8) and d > 256 use scalar.
///
/// Dequantizers: 8 channels per vector, x̂ = q·s16 + z16 (q·s16 is exact in fp32, so the FMA
/// equals scalar's mul-then-add bit for bit).

#include <cstring>

#include "kvcompress/kernels/cpu/rows_dispatch.hpp"
#include "kvcompress/kernels/cpu/scalar/kivi.hpp"

#if KVCOMPRESS_HAS_AVX2
#include "kvcompress/kernels/cpu/simd_include.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

/// Largest head dimension of the AVX2 key-logits / value-accumulation paths (stack buffers);
/// larger d use scalar.
inline constexpr int kKiviAvx2MaxD = 256;
/// Tokens per tile of the AVX2 value-accumulation path.
inline constexpr int kKiviAvx2ValueTile = 64;

/// 8 floats from p, or 4 (lanes 4–7 zero) when n == 4.
inline __m256 kivi_loadf(const float* p, int n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_insertf128_ps(_mm256_setzero_ps(), _mm_loadu_ps(p), 0);
}
/// 8 fp16 → fp32, or 4 (lanes 4–7 zero) when n == 4.
inline __m256 kivi_loadh(const std::uint8_t* p, int n) {
  return _mm256_cvtph_ps(n >= 8 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
/// Stores 8 floats, or the low 4 when n == 4.
inline void kivi_storef(float* p, __m256 v, int n) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm_storeu_ps(p, _mm256_castps256_ps128(v));
}
/// The first n ≤ 8 floats of p, zeros above (never reads past p + n).
inline __m256 kivi_load_tail(const float* p, int n) {
  if (n >= 8) return _mm256_loadu_ps(p);
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(p, m);
}

inline float kivi_hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
inline float kivi_hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}
inline float kivi_hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/// OR of the four 32-bit lanes of each 128-bit half: {lanes 0–3, lanes 4–7}.
inline void kivi_or_halves(__m256i v, std::uint32_t* lo, std::uint32_t* hi) {
  v = _mm256_or_si256(v, _mm256_shuffle_epi32(v, 0x4e));
  v = _mm256_or_si256(v, _mm256_shuffle_epi32(v, 0xb1));
  *lo = static_cast<std::uint32_t>(_mm256_cvtsi256_si32(v));
  *hi = static_cast<std::uint32_t>(_mm256_extract_epi32(v, 4));
}

/// q = clamp(nearbyint((x − z)·inv), 0, L) as int32 lanes (the scalar rule, lane by lane).
inline __m256i kivi_codes8(__m256 x, __m256 z, __m256 inv, __m256 levels) {
  const __m256 y = _mm256_mul_ps(_mm256_sub_ps(x, z), inv);  // explicit product: no FMA
  __m256 r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_max_ps(r, _mm256_setzero_ps());  // r > 0 ? r : 0   (NaN → 0)
  r = _mm256_min_ps(r, levels);               // r < L ? r : L
  return _mm256_cvttps_epi32(r);
}

/// 1/s16 where s16 ≠ 0 (NaN included, as scalar's `s != 0`), else 0.
inline __m256 kivi_inv8(__m256 s16) {
  return _mm256_and_ps(_mm256_cmp_ps(s16, _mm256_setzero_ps(), _CMP_NEQ_UQ), _mm256_div_ps(_mm256_set1_ps(1.0f), s16));
}

/// Code `i` (= 4·field + byte) of the 8 tokens of one half of a key block, as floats.
template <int Bits>
inline __m256 kivi_key_field(__m256i raw, int i) {
  const int sh = 8 * (i % 4) + Bits * (i / 4);
  const __m256i v = sh ? _mm256_srli_epi32(raw, sh) : raw;
  return _mm256_cvtepi32_ps(sh + Bits < 32 ? _mm256_and_si256(v, _mm256_set1_epi32((1 << Bits) - 1)) : v);
}

/// Key logits of one 16-token tile for R ≤ 4 rows straight from the codes.
/// bp: block 0 of the tile; qs: [R][ldq] folded query; out: logits of row 0, token 0 of the tile.
template <int R, int Bits>
inline void kivi_key_tile_direct(const std::uint8_t* bp, int nblocks, const float* qs, int ldq,
                                 const float* qz, float* out, std::size_t ldl) {
  constexpr int cb = 32 / Bits;
  constexpr int A = R == 1 ? 4 : (R == 2 ? 2 : 1);  // accumulator sets (FMA latency)
  __m256 acc[A][R][2];
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[a][r][0] = acc[a][r][1] = _mm256_setzero_ps();
  for (int b = 0; b < nblocks; ++b, bp += 64) {
    const __m256i raw0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i raw1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
    const float* qb = qs + b * cb;
#pragma GCC unroll 16
    for (int i = 0; i < cb; ++i) {
      const __m256 k0 = kivi_key_field<Bits>(raw0, i), k1 = kivi_key_field<Bits>(raw1, i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 qv = _mm256_broadcast_ss(qb + r * ldq + i);
        acc[i % A][r][0] = _mm256_fmadd_ps(qv, k0, acc[i % A][r][0]);
        acc[i % A][r][1] = _mm256_fmadd_ps(qv, k1, acc[i % A][r][1]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    __m256 s0 = acc[0][r][0], s1 = acc[0][r][1];
#pragma GCC unroll 4
    for (int a = 1; a < A; ++a) {
      s0 = _mm256_add_ps(s0, acc[a][r][0]);
      s1 = _mm256_add_ps(s1, acc[a][r][1]);
    }
    const __m256 z = _mm256_set1_ps(qz[r]);
    _mm256_storeu_ps(out + static_cast<std::size_t>(r) * ldl, _mm256_add_ps(s0, z));
    _mm256_storeu_ps(out + static_cast<std::size_t>(r) * ldl + 8, _mm256_add_ps(s1, z));
  }
}

/// Unpacks one 16-token tile of a key group into buf [d][16] floats (channel order).
template <int Bits>
inline void kivi_key_tile_unpack(const std::uint8_t* bp, int nblocks, float* buf) {
  constexpr int cb = 32 / Bits;
  for (int b = 0; b < nblocks; ++b, bp += 64) {
    const __m256i raw0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i raw1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
    float* o = buf + 16 * b * cb;
#pragma GCC unroll 16
    for (int i = 0; i < cb; ++i) {
      _mm256_store_ps(o + 16 * i, kivi_key_field<Bits>(raw0, i));
      _mm256_store_ps(o + 16 * i + 8, kivi_key_field<Bits>(raw1, i));
    }
  }
}

/// Key logits of one 16-token tile for R ≤ 4 rows from an unpacked tile buffer.
template <int R>
inline void kivi_key_tile_buffered(const float* buf, int d, const float* qs, int ldq, const float* qz,
                                   float* out, std::size_t ldl) {
  constexpr int A = R == 1 ? 4 : (R == 2 ? 2 : 1);
  __m256 acc[A][R][2];
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[a][r][0] = acc[a][r][1] = _mm256_setzero_ps();
  for (int c = 0; c < d; c += 4) {  // d % 4 == 0
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256 k0 = _mm256_load_ps(buf + 16 * (c + i)), k1 = _mm256_load_ps(buf + 16 * (c + i) + 8);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 qv = _mm256_broadcast_ss(qs + r * ldq + c + i);
        acc[i % A][r][0] = _mm256_fmadd_ps(qv, k0, acc[i % A][r][0]);
        acc[i % A][r][1] = _mm256_fmadd_ps(qv, k1, acc[i % A][r][1]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    __m256 s0 = acc[0][r][0], s1 = acc[0][r][1];
#pragma GCC unroll 4
    for (int a = 1; a < A; ++a) {
      s0 = _mm256_add_ps(s0, acc[a][r][0]);
      s1 = _mm256_add_ps(s1, acc[a][r][1]);
    }
    const __m256 z = _mm256_set1_ps(qz[r]);
    _mm256_storeu_ps(out + static_cast<std::size_t>(r) * ldl, _mm256_add_ps(s0, z));
    _mm256_storeu_ps(out + static_cast<std::size_t>(r) * ldl + 8, _mm256_add_ps(s1, z));
  }
}

template <int Bits>
inline void kivi_key_logits_avx2(const std::uint8_t* groups, std::size_t n_groups, int G, int d, const float* q,
                                 int rows, float* logits, std::size_t ldl) {
  constexpr int cb = 32 / Bits;
  const std::size_t gbytes = kivi_key_group_bytes(G, d, Bits);
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * Bits / 8;
  const int nblocks = d / cb;
  const int ldq = (d + 7) & ~7;
  alignas(32) float qs[kKiviMaxRows * kKiviAvx2MaxD];
  alignas(32) float buf[kKiviAvx2MaxD * kKiviKeyTileTokens];  // rows > 4 only
  float qz[kKiviMaxRows];
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::uint8_t* blob = groups + g * gbytes;
    const std::uint8_t* scales = blob + code_bytes;
    const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
    // qs = q ⊙ s16 (fp32 products as scalar), qz = Σ_c q·z16; metadata widened once per 8 channels.
    __m256 zacc[kKiviMaxRows];
    for (int r = 0; r < rows; ++r) zacc[r] = _mm256_setzero_ps();
    for (int c = 0; c < d; c += 8) {
      const int w = d - c < 8 ? d - c : 8;  // 8 or 4
      const __m256 s = kivi_loadh(scales + 2 * c, w), z = kivi_loadh(mins + 2 * c, w);
      for (int r = 0; r < rows; ++r) {
        const __m256 qv = kivi_loadf(q + static_cast<std::size_t>(r) * d + c, w);
        _mm256_store_ps(qs + r * ldq + c, _mm256_mul_ps(qv, s));
        zacc[r] = _mm256_fmadd_ps(qv, z, zacc[r]);
      }
    }
    for (int r = 0; r < rows; ++r) qz[r] = kivi_hsum(zacc[r]);
    for (int tile = 0; tile < G / kKiviKeyTileTokens; ++tile) {
      const std::uint8_t* bp = blob + static_cast<std::size_t>(tile) * nblocks * 64;
      float* out = logits + g * static_cast<std::size_t>(G) + static_cast<std::size_t>(tile) * kKiviKeyTileTokens;
      if (rows <= 4) {
        dispatch_rows<4>(rows, [&](auto rr) {
          kivi_key_tile_direct<decltype(rr)::value, Bits>(bp, nblocks, qs, ldq, qz, out, ldl);
        });
      } else {
        kivi_key_tile_unpack<Bits>(bp, nblocks, buf);
        for (int r0 = 0; r0 < rows; r0 += 4) {
          dispatch_rows<4>(rows - r0 < 4 ? rows - r0 : 4, [&](auto rr) {
            kivi_key_tile_buffered<decltype(rr)::value>(buf, d, qs + r0 * ldq, ldq, qz + r0,
                                                        out + static_cast<std::size_t>(r0) * ldl, ldl);
          });
        }
      }
    }
  }
}

/// The codes of value-row channels [c, c + 8) (c % 8 == 0) as floats. The row's code region is a
/// little-endian bit stream, so they are the b bytes at b·c/8. For 2-bit the 4-byte read extends
/// 2 bytes past them, staying inside the row blob (≥ 4 metadata bytes follow the codes).
template <int Bits>
inline __m256 kivi_value_codes(const std::uint8_t* row, int c) {
  if constexpr (Bits == 8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c))));
  } else {
    const __m256i w = _mm256_set1_epi32(static_cast<int>(kivi_load_u32(row + Bits * c / 8)));
    const __m256i sh = _mm256_setr_epi32(0, Bits, 2 * Bits, 3 * Bits, 4 * Bits, 5 * Bits, 6 * Bits, 7 * Bits);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, sh), _mm256_set1_epi32((1 << Bits) - 1)));
  }
}

/// out[r][c .. c + 8W) += Σ_{t<nt} wg[r][t] · code_t, R ≤ 4 rows, codes straight from the rows.
template <int R, int W, int Bits>
inline void kivi_value_slice_direct(const std::uint8_t* tile, std::size_t rb, int nt, int c, const float* wg,
                                    float* out, int d) {
  __m256 acc[R][W];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(out + r * d + c + 8 * w);
  const std::uint8_t* row = tile;
  for (int t = 0; t < nt; ++t, row += rb) {
    __m256 k[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) k[w] = kivi_value_codes<Bits>(row, c + 8 * w);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_broadcast_ss(wg + r * kKiviAvx2ValueTile + t);
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(wv, k[w], acc[r][w]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(out + r * d + c + 8 * w, acc[r][w]);
}

/// Unpacks channels [c, c + 8W) of nt rows into buf [t][8W].
template <int W, int Bits>
inline void kivi_value_slice_unpack(const std::uint8_t* tile, std::size_t rb, int nt, int c, float* buf) {
  const std::uint8_t* row = tile;
  for (int t = 0; t < nt; ++t, row += rb)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm256_store_ps(buf + (t * W + w) * 8, kivi_value_codes<Bits>(row, c + 8 * w));
}

/// As kivi_value_slice_direct, codes from an unpacked slice buffer.
template <int R, int W>
inline void kivi_value_slice_buffered(const float* buf, int nt, int c, const float* wg, float* out, int d) {
  __m256 acc[R][W];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(out + r * d + c + 8 * w);
  for (int t = 0; t < nt; ++t) {
    __m256 k[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) k[w] = _mm256_load_ps(buf + (t * W + w) * 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_broadcast_ss(wg + r * kKiviAvx2ValueTile + t);
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(wv, k[w], acc[r][w]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(out + r * d + c + 8 * w, acc[r][w]);
}

/// Σ over one group's channels [c0, c1) of a token tile for all rows (weights wg [rows][T]).
template <int Bits>
inline void kivi_value_group_avx2(const std::uint8_t* tile, std::size_t rb, int nt, int c0, int c1,
                                  const float* wg, int rows, float* out, int d, float* buf) {
  if (rows <= 4) {
    dispatch_rows<4>(rows, [&](auto rr) {
      constexpr int R = decltype(rr)::value;
      constexpr int W = R <= 2 ? 4 : 2;  // R·W ≤ 8 accumulators
      int c = c0;
      for (; c + 8 * W <= c1; c += 8 * W) kivi_value_slice_direct<R, W, Bits>(tile, rb, nt, c, wg, out, d);
      if (W == 4 && c + 16 <= c1) {
        kivi_value_slice_direct<R, 2, Bits>(tile, rb, nt, c, wg, out, d);
        c += 16;
      }
      if (c < c1) kivi_value_slice_direct<R, 1, Bits>(tile, rb, nt, c, wg, out, d);
    });
    return;
  }
  for (int c = c0; c < c1;) {
    const int W = c + 16 <= c1 ? 2 : 1;
    if (W == 2) kivi_value_slice_unpack<2, Bits>(tile, rb, nt, c, buf);
    else kivi_value_slice_unpack<1, Bits>(tile, rb, nt, c, buf);
    for (int r0 = 0; r0 < rows; r0 += 4) {
      dispatch_rows<4>(rows - r0 < 4 ? rows - r0 : 4, [&](auto rr) {
        constexpr int R = decltype(rr)::value;
        const float* w = wg + r0 * kKiviAvx2ValueTile;
        float* o = out + static_cast<std::size_t>(r0) * d;
        if (W == 2) kivi_value_slice_buffered<R, 2>(buf, nt, c, w, o, d);
        else kivi_value_slice_buffered<R, 1>(buf, nt, c, w, o, d);
      });
    }
    c += 8 * W;
  }
}

template <int Bits>
inline void kivi_value_accumulate_avx2(const std::uint8_t* rows_data, std::size_t n, int d, int Gv,
                                       const float* p, std::size_t ldp, int rows, float* out) {
  constexpr int T = kKiviAvx2ValueTile;
  constexpr int kMaxGroups = kKiviAvx2MaxD / 8;
  const std::size_t rb = kivi_value_row_bytes(d, Gv, Bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * Bits / 8;
  const int ng = d / Gv;
  alignas(32) std::uint16_t sh[kMaxGroups][T], zh[kMaxGroups][T];  // fp16 metadata [group][token]
  alignas(32) float wg[kKiviMaxRows * T];                         // p·s16 of one group [row][token]
  alignas(32) float buf[T * 16];                                  // unpacked slice, rows > 4
  float zsum[kKiviMaxRows][kMaxGroups];
  for (int r = 0; r < rows; ++r)
    for (int g = 0; g < ng; ++g) zsum[r][g] = 0.0f;
  for (std::size_t t0 = 0; t0 < n; t0 += T) {
    const int nt = n - t0 < static_cast<std::size_t>(T) ? static_cast<int>(n - t0) : T;
    const int ntp = (nt + 7) & ~7;
    const std::uint8_t* tile = rows_data + t0 * rb;
    for (int t = 0; t < nt; ++t) {
      const std::uint8_t* meta = tile + t * rb + code_bytes;
      for (int g = 0; g < ng; ++g) {
        sh[g][t] = kivi_load_u16(meta + 2 * g);
        zh[g][t] = kivi_load_u16(meta + 2 * (ng + g));
      }
    }
    for (int t = nt; t < ntp; ++t)
      for (int g = 0; g < ng; ++g) sh[g][t] = zh[g][t] = 0;  // padding: finite, weight 0
    for (int g = 0; g < ng; ++g) {
      for (int r = 0; r < rows; ++r) {
        const float* pr = p + static_cast<std::size_t>(r) * ldp + t0;
        __m256 za = _mm256_setzero_ps();
        for (int t = 0; t < ntp; t += 8) {
          const __m256 pv = kivi_load_tail(pr + t, nt - t);
          const __m256 s = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(&sh[g][t])));
          const __m256 z = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(&zh[g][t])));
          _mm256_store_ps(wg + r * T + t, _mm256_mul_ps(pv, s));  // w = p·s16, scalar's product
          za = _mm256_fmadd_ps(pv, z, za);
        }
        zsum[r][g] += kivi_hsum(za);
      }
      kivi_value_group_avx2<Bits>(tile, rb, nt, g * Gv, (g + 1) * Gv, wg, rows, out, d, buf);
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int g = 0; g < ng; ++g) {
      const __m256 z = _mm256_set1_ps(zsum[r][g]);
      float* o = out + static_cast<std::size_t>(r) * d + g * Gv;
      for (int c = 0; c < Gv; c += 8) _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_loadu_ps(o + c), z));
    }
}

}  // namespace detail

/// AVX2 kivi_quantize_key_group: byte-identical to scalar.
inline void kivi_quantize_key_group(const float* k, std::size_t ldk, int G, int d, int bits,
                                    std::uint8_t* dst, isa::avx2) {
  assert((bits == 2 || bits == 4 || bits == 8) && G % kKiviKeyTileTokens == 0 && d % (32 / bits) == 0);
  const int levels = (1 << bits) - 1;
  const int cb = 32 / bits;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  std::uint8_t* scales = dst + code_bytes;
  std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  if (bits == 2) std::memset(dst, 0, code_bytes);  // two 8-channel chunks share each block
  const __m256 lv = _mm256_set1_ps(static_cast<float>(levels));
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Lane l = channel c0 + l: byte l mod 4, field ((c0 + l) mod CB)/4 (8-bit: lanes 4–7 are the
  // next block, field 0).
  const __m256i byte_shift = _mm256_slli_epi32(_mm256_and_si256(lane, _mm256_set1_epi32(3)), 3);
  for (int c0 = 0; c0 < d; c0 += 8) {
    const int w = d - c0 < 8 ? d - c0 : 8;  // 8, or 4 (8-bit only)
    const int f0 = (c0 % cb) / 4;
    const __m256i field = bits == 8 ? _mm256_setzero_si256()
                                    : _mm256_add_epi32(_mm256_set1_epi32(f0), _mm256_srli_epi32(lane, 2));
    const __m256i shifts = _mm256_add_epi32(byte_shift, _mm256_mullo_epi32(field, _mm256_set1_epi32(bits)));
    __m256 lo = detail::kivi_loadf(k + c0, w), hi = lo;
    for (int t = 1; t < G; ++t) {
      const __m256 x = detail::kivi_loadf(k + static_cast<std::size_t>(t) * ldk + c0, w);
      lo = _mm256_min_ps(x, lo);  // x < lo ? x : lo, as scalar
      hi = _mm256_max_ps(x, hi);  // x > hi ? x : hi
    }
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), lv);
    const __m128i s16 = _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i z16 = _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (w == 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(scales + 2 * c0), s16);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(mins + 2 * c0), z16);
    } else {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(scales + 2 * c0), s16);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(mins + 2 * c0), z16);
    }
    const __m256 zf = _mm256_cvtph_ps(z16);
    const __m256 inv = detail::kivi_inv8(_mm256_cvtph_ps(s16));
    for (int t = 0; t < G; ++t) {
      const __m256 x = detail::kivi_loadf(k + static_cast<std::size_t>(t) * ldk + c0, w);
      const __m256i q = _mm256_sllv_epi32(detail::kivi_codes8(x, zf, inv, lv), shifts);
      std::uint32_t q_lo, q_hi;
      detail::kivi_or_halves(q, &q_lo, &q_hi);
      std::uint8_t* base = dst + (static_cast<std::size_t>(t / kKiviKeyTileTokens) * blocks_per_tile +
                                  static_cast<std::size_t>(c0 / cb)) * 64 +
                           4 * static_cast<std::size_t>(t % kKiviKeyTileTokens);
      if (bits == 2) {
        detail::kivi_store_u32(base, detail::kivi_load_u32(base) | q_lo | q_hi);
      } else if (bits == 4) {
        detail::kivi_store_u32(base, q_lo | q_hi);
      } else {
        detail::kivi_store_u32(base, q_lo);
        if (w == 8) detail::kivi_store_u32(base + 64, q_hi);
      }
    }
  }
}

/// AVX2 kivi_dequantize_key_group: bit-identical to scalar.
inline void kivi_dequantize_key_group(const std::uint8_t* src, int G, int d, int bits, float* dst,
                                      std::size_t ld, isa::avx2) {
  const int cb = 32 / bits;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::uint8_t* scales = src + code_bytes;
  const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  const std::size_t blocks_per_tile = static_cast<std::size_t>(d / cb);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i byte_shift = _mm256_slli_epi32(_mm256_and_si256(lane, _mm256_set1_epi32(3)), 3);
  const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
  for (int c0 = 0; c0 < d; c0 += 8) {
    const int w = d - c0 < 8 ? d - c0 : 8;
    const int f0 = (c0 % cb) / 4;
    const __m256i field = bits == 8 ? _mm256_setzero_si256()
                                    : _mm256_add_epi32(_mm256_set1_epi32(f0), _mm256_srli_epi32(lane, 2));
    const __m256i shifts = _mm256_add_epi32(byte_shift, _mm256_mullo_epi32(field, _mm256_set1_epi32(bits)));
    const __m256 s = detail::kivi_loadh(scales + 2 * c0, w), z = detail::kivi_loadh(mins + 2 * c0, w);
    for (int t = 0; t < G; ++t) {
      const std::uint8_t* base = src + (static_cast<std::size_t>(t / kKiviKeyTileTokens) * blocks_per_tile +
                                        static_cast<std::size_t>(c0 / cb)) * 64 +
                                 4 * static_cast<std::size_t>(t % kKiviKeyTileTokens);
      const int w0 = static_cast<int>(detail::kivi_load_u32(base));
      // 8-bit: lanes 4–7 are the next block (not read for a 4-channel tail).
      const int w1 = bits != 8 ? w0 : (w == 8 ? static_cast<int>(detail::kivi_load_u32(base + 64)) : 0);
      const __m256i words = _mm256_set_m128i(_mm_set1_epi32(w1), _mm_set1_epi32(w0));
      const __m256 code = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(words, shifts), mask));
      detail::kivi_storef(dst + static_cast<std::size_t>(t) * ld + c0, _mm256_fmadd_ps(code, s, z), w);
    }
  }
}

/// AVX2 kivi_key_logits (fp32; see the file comment).
inline void kivi_key_logits(const std::uint8_t* groups, std::size_t n_groups, int G, int d, int bits,
                            const float* q, int rows, float* logits, std::size_t ldl, isa::avx2) {
  assert(rows >= 1 && rows <= kKiviMaxRows);
  if (d > detail::kKiviAvx2MaxD) {  // stack buffers are sized for d ≤ 256
    kivi_key_logits(groups, n_groups, G, d, bits, q, rows, logits, ldl, isa::scalar{});
    return;
  }
  if (bits == 2) detail::kivi_key_logits_avx2<2>(groups, n_groups, G, d, q, rows, logits, ldl);
  else if (bits == 4) detail::kivi_key_logits_avx2<4>(groups, n_groups, G, d, q, rows, logits, ldl);
  else detail::kivi_key_logits_avx2<8>(groups, n_groups, G, d, q, rows, logits, ldl);
}

/// AVX2 kivi_quantize_value_rows: byte-identical to scalar.
inline void kivi_quantize_value_rows(const float* v, std::size_t ldv, std::size_t n, int d, int Gv, int bits,
                                     std::uint8_t* dst, isa::avx2) {
  assert((bits == 2 || bits == 4 || bits == 8) && Gv % (32 / bits) == 0 && d % Gv == 0);
  const int levels = (1 << bits) - 1;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  const __m256 lv = _mm256_set1_ps(static_cast<float>(levels));
  // Lane l of a 4-lane half → bits b·l of that half's 4b-bit piece.
  const __m256i shifts = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3), _mm256_set1_epi32(bits));
  for (std::size_t t = 0; t < n; ++t) {
    const float* x = v + t * ldv;
    std::uint8_t* row = dst + t * row_bytes;
    std::uint8_t* scales = row + code_bytes;
    std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int g = 0; g < n_groups; ++g) {
      const float* xg = x + g * Gv;
      const __m256 first = _mm256_set1_ps(xg[0]);
      __m256 lo = first, hi = first;
      for (int c = 0; c < Gv; c += 8) {
        // A 4-channel tail (Gv % 8 == 4) leaves lanes 4–7 at xg[0].
        const __m256 xv = Gv - c >= 8 ? _mm256_loadu_ps(xg + c) : _mm256_insertf128_ps(first, _mm_loadu_ps(xg + c), 0);
        lo = _mm256_min_ps(xv, lo);
        hi = _mm256_max_ps(xv, hi);
      }
      float lo_s = detail::kivi_hmin(lo), hi_s = detail::kivi_hmax(hi);
      // Equal values can only differ in the sign of zero: scalar keeps the first zero.
      if (lo_s == 0.0f || hi_s == 0.0f) {
        float first_zero = 0.0f;
        for (int c = 0; c < Gv; ++c)
          if (xg[c] == 0.0f) {
            first_zero = xg[c];
            break;
          }
        if (lo_s == 0.0f) lo_s = first_zero;
        if (hi_s == 0.0f) hi_s = first_zero;
      }
      // kivi_meta with F16C: vcvtps2ph (nearest even) = f32_to_f16_bits; the results are never
      // signalling NaNs, so vcvtph2ps = f16_bits_to_f32 on them.
      const std::uint16_t s16 = _cvtss_sh((hi_s - lo_s) / static_cast<float>(levels), _MM_FROUND_TO_NEAREST_INT);
      const std::uint16_t z16 = _cvtss_sh(lo_s, _MM_FROUND_TO_NEAREST_INT);
      detail::kivi_store_u16(scales + 2 * g, s16);
      detail::kivi_store_u16(mins + 2 * g, z16);
      const __m256 zf = _mm256_set1_ps(_cvtsh_ss(z16));
      const __m256 inv = _mm256_set1_ps(detail::kivi_inv_scale(_cvtsh_ss(s16)));
      for (int c = 0; c < Gv; c += 8) {
        const int w = Gv - c < 8 ? Gv - c : 8;  // 8, or 4 (8-bit only)
        const __m256i q = _mm256_sllv_epi32(detail::kivi_codes8(detail::kivi_loadf(xg + c, w), zf, inv, lv), shifts);
        std::uint32_t q_lo, q_hi;
        detail::kivi_or_halves(q, &q_lo, &q_hi);
        // Channels g·Gv + c … + w − 1 are the b·w bits at bit b·(g·Gv + c) (a byte boundary).
        const std::uint64_t piece = q_lo | (static_cast<std::uint64_t>(q_hi) << (4 * bits));
        std::memcpy(row + static_cast<std::size_t>(bits) * (g * Gv + c) / 8, &piece, static_cast<std::size_t>(bits * w / 8));
      }
    }
  }
}

/// AVX2 kivi_dequantize_value_rows: bit-identical to scalar.
inline void kivi_dequantize_value_rows(const std::uint8_t* src, std::size_t n, int d, int Gv, int bits,
                                       float* dst, std::size_t ld, isa::avx2) {
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  const __m256i sh = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(bits));
  const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = src + t * row_bytes;
    const std::uint8_t* scales = row + code_bytes;
    const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int c = 0; c < d; c += 8) {
      const int w = d - c < 8 ? d - c : 8;  // 8, or 4 (8-bit only)
      __m256i codes;
      if (bits == 8) {
        codes = _mm256_cvtepu8_epi32(w == 8 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c))
                                            : _mm_cvtsi32_si128(static_cast<int>(detail::kivi_load_u32(row + c))));
      } else {
        // 2-bit: the 4-byte read may extend 2 bytes past the codes, inside the row blob.
        const __m256i word = _mm256_set1_epi32(static_cast<int>(detail::kivi_load_u32(row + bits * c / 8)));
        codes = _mm256_and_si256(_mm256_srlv_epi32(word, sh), mask);
      }
      const int g0 = c / Gv, g1 = (c + 4) / Gv;  // groups of lanes 0–3 and 4–7
      const float s0 = f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * g0));
      const float z0 = f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * g0));
      __m256 s = _mm256_set1_ps(s0), z = _mm256_set1_ps(z0);
      if (w == 8 && g1 != g0) {
        s = _mm256_insertf128_ps(s, _mm_set1_ps(f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * g1))), 1);
        z = _mm256_insertf128_ps(z, _mm_set1_ps(f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * g1))), 1);
      }
      detail::kivi_storef(dst + t * ld + c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(codes), s, z), w);
    }
  }
}

/// AVX2 kivi_value_accumulate (fp32; see the file comment).
inline void kivi_value_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                  const float* p, std::size_t ldp, int rows, float* out, isa::avx2) {
  assert(rows >= 1 && rows <= kKiviMaxRows);
  if (Gv % 8 != 0 || d > detail::kKiviAvx2MaxD) {
    // 8-bit groups of 4·odd channels put two groups in one 8-lane vector, and d > 256 exceeds the
    // stack buffers: rare shapes, left to the scalar reference.
    kivi_value_accumulate(rows_data, n, d, Gv, bits, p, ldp, rows, out, isa::scalar{});
    return;
  }
  if (n == 0) return;
  if (bits == 2) detail::kivi_value_accumulate_avx2<2>(rows_data, n, d, Gv, p, ldp, rows, out);
  else if (bits == 4) detail::kivi_value_accumulate_avx2<4>(rows_data, n, d, Gv, p, ldp, rows, out);
  else detail::kivi_value_accumulate_avx2<8>(rows_data, n, d, Gv, p, ldp, rows, out);
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END

#endif  // KVCOMPRESS_HAS_AVX2
