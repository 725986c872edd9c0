// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Scalar reference kernels of KIVI (arXiv 2402.02750; methods/quantization.md §1 and BB-1/BB-4):
/// asymmetric min–max quantization with 2, 4 or 8 bits, keys per channel in groups of G tokens,
/// values per token in groups of Gv channels, plus the fused decode kernels that consume the packed
/// form directly (key logits, value accumulation) with the affine metadata folded into the other
/// operand.
///
/// Quantization rule (identical on every ISA, byte for byte), for a group x with L = 2^b − 1:
///   s16 = fp16((max − min) / L),  z16 = fp16(min)        (metadata rounded to fp16 FIRST)
///   q   = clamp(nearbyint((x − z16) · (1 / s16)), 0, L)   (product computed explicitly, no FMA)
///   if s16 == 0 (zero range or underflow): q = 0 and x̂ = z16 exactly
///   x̂   = q · s16 + z16
///
/// ## Key group blob (G tokens × d channels, G % 16 == 0, d % (32/b) == 0)
///   [codes: G·d·b/8 bytes][scales: d × fp16, channel order][mins: d × fp16, channel order]
/// The code region is a sequence of 64-byte blocks. With CB = 32/b channels per block
/// (16 for 2-bit, 8 for 4-bit, 4 for 8-bit) the block for token tile τ = t/16 and channel block
/// β = c/CB sits at byte 64·(τ·(d/CB) + β) (tile-major, channel blocks in order). Inside a block:
///   byte i = 4·(t mod 16) + (c mod 4),  field k = (c mod CB)/4 at bits [b·k, b·k + b).
/// So a 32-bit lane of a block holds 4 adjacent channels of one token (what VNNI `vpdpbusd` sums)
/// and field k of every byte is channel quad k of the block: one shift + one mask per quad turns
/// a block into 64 code bytes [16 tokens][4 channels]. The scales start on a 64-byte boundary of
/// the blob. kivi_key_group_to_pkivi converts to the paper's P-KIVI packing.
///
/// ## Value row blob (one token, d channels, groups of Gv channels, Gv % (32/b) == 0, d % Gv == 0)
///   [codes: d·b/32 little-endian uint32 words, P-KIVI along channels: element j of word w is
///    channel w·(32/b) + j at bits [b·j, b·j + b)][scales: d/Gv × fp16][mins: d/Gv × fp16]
///
/// All multi-byte fields are little-endian (the host order on x86-64 and AArch64); blobs need no
/// alignment (fields are read with memcpy).

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/isa.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace kernels {

/// Tokens per key tile of the packed key layout (the G of a key group is a multiple of it).
inline constexpr int kKiviKeyTileTokens = 16;
/// Largest number of query rows one call of the KIVI decode kernels handles.
inline constexpr int kKiviMaxRows = 16;

/// Bytes of one key group blob: G·d·b/8 code bytes + d fp16 scales + d fp16 mins.
constexpr std::size_t kivi_key_group_bytes(int G, int d, int bits) {
  return static_cast<std::size_t>(G) * static_cast<std::size_t>(d) * static_cast<std::size_t>(bits) / 8 +
         4 * static_cast<std::size_t>(d);
}

/// Bytes of one value row blob: d·b/8 code bytes + (d/Gv) fp16 scales + (d/Gv) fp16 mins.
constexpr std::size_t kivi_value_row_bytes(int d, int Gv, int bits) {
  return static_cast<std::size_t>(d) * static_cast<std::size_t>(bits) / 8 +
         4 * static_cast<std::size_t>(d / Gv);
}

/// Byte offset and bit shift of the code of (token t, channel c) inside a key group's code
/// region (layout in the file comment).
inline std::size_t kivi_key_code_offset(int d, int bits, int t, int c, int* shift) {
  const int cb = 32 / bits;
  const std::size_t block =
      static_cast<std::size_t>(t / kKiviKeyTileTokens) * static_cast<std::size_t>(d / cb) +
      static_cast<std::size_t>(c / cb);
  *shift = bits * ((c % cb) / 4);
  return block * 64 + static_cast<std::size_t>(4 * (t % kKiviKeyTileTokens) + (c % 4));
}

/// The code of (token t, channel c) of a key group blob.
inline int kivi_key_code(const std::uint8_t* group, int d, int bits, int t, int c) {
  int shift = 0;
  const std::size_t off = kivi_key_code_offset(d, bits, t, c, &shift);
  return (group[off] >> shift) & ((1 << bits) - 1);
}

/// Packs n codes (n a multiple of 32/b) into P-KIVI words: element j of word w is code
/// w·(32/b) + j at bits [b·j, b·j + b) (LSB first). [1,0,3,2] with b = 2 → 0x000000B1.
inline void kivi_pack_pkivi(const std::uint8_t* codes, std::size_t n, int bits, std::uint32_t* words) {
  const std::size_t per = static_cast<std::size_t>(32 / bits);
  for (std::size_t w = 0; w * per < n; ++w) {
    std::uint32_t word = 0;
    for (std::size_t j = 0; j < per && w * per + j < n; ++j)
      word |= static_cast<std::uint32_t>(codes[w * per + j]) << (bits * static_cast<int>(j));
    words[w] = word;
  }
}

/// Inverse of kivi_pack_pkivi.
inline void kivi_unpack_pkivi(const std::uint32_t* words, std::size_t n, int bits, std::uint8_t* codes) {
  const std::size_t per = static_cast<std::size_t>(32 / bits);
  const std::uint32_t mask = (1u << bits) - 1u;
  for (std::size_t i = 0; i < n; ++i)
    codes[i] = static_cast<std::uint8_t>((words[i / per] >> (bits * static_cast<int>(i % per))) & mask);
}

namespace detail {

inline std::uint16_t kivi_load_u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void kivi_store_u16(std::uint8_t* p, std::uint16_t v) { std::memcpy(p, &v, sizeof v); }
inline std::uint32_t kivi_load_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void kivi_store_u32(std::uint8_t* p, std::uint32_t v) { std::memcpy(p, &v, sizeof v); }

/// Rounded metadata of one group: s16, z16 bit patterns from the group's min and max.
struct KiviMeta {
  std::uint16_t s16;
  std::uint16_t z16;
};
inline KiviMeta kivi_meta(float lo, float hi, int levels) {
  const float s = (hi - lo) / static_cast<float>(levels);
  return {f32_to_f16_bits(s), f32_to_f16_bits(lo)};
}

/// 1/s16 as used by the quantizer, 0 for a zero scale (then every code is 0).
inline float kivi_inv_scale(float s16) { return s16 != 0.0f ? 1.0f / s16 : 0.0f; }

/// q = clamp(nearbyint((x − z16) · inv), 0, L): the one code rule of every ISA.
inline std::uint8_t kivi_code(float x, float z16, float inv, int levels) {
  const float diff = x - z16;
  const float y = diff * inv;
  float r = std::nearbyint(y);
  r = r > 0.0f ? r : 0.0f;
  r = r < static_cast<float>(levels) ? r : static_cast<float>(levels);
  return static_cast<std::uint8_t>(r);
}

}  // namespace detail

/// Quantizes one key group (per channel over G tokens) into a key group blob.
/// \param k   [G][ldk] token-major keys (d used elements per row).
/// \param dst kivi_key_group_bytes(G, d, bits) bytes.
inline void kivi_quantize_key_group(const float* k, std::size_t ldk, int G, int d, int bits,
                                    std::uint8_t* dst, isa::scalar) {
  assert((bits == 2 || bits == 4 || bits == 8) && G % kKiviKeyTileTokens == 0 && d % (32 / bits) == 0);
  const int levels = (1 << bits) - 1;
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  std::uint8_t* scales = dst + code_bytes;  // [d] fp16
  std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);  // [d] fp16
  std::memset(dst, 0, code_bytes);
  for (int c = 0; c < d; ++c) {
    float lo = k[c], hi = k[c];
    for (int t = 1; t < G; ++t) {
      const float x = k[static_cast<std::size_t>(t) * ldk + c];
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
    }
    const detail::KiviMeta meta = detail::kivi_meta(lo, hi, levels);
    detail::kivi_store_u16(scales + 2 * c, meta.s16);
    detail::kivi_store_u16(mins + 2 * c, meta.z16);
    const float z = f16_bits_to_f32(meta.z16);
    const float inv = detail::kivi_inv_scale(f16_bits_to_f32(meta.s16));
    for (int t = 0; t < G; ++t) {
      const std::uint8_t q = detail::kivi_code(k[static_cast<std::size_t>(t) * ldk + c], z, inv, levels);
      int shift = 0;
      const std::size_t off = kivi_key_code_offset(d, bits, t, c, &shift);
      dst[off] = static_cast<std::uint8_t>(dst[off] | (q << shift));
    }
  }
}

/// Dequantizes one key group blob into dst [G][ld] (x̂ = q·s16 + z16).
inline void kivi_dequantize_key_group(const std::uint8_t* src, int G, int d, int bits, float* dst,
                                      std::size_t ld, isa::scalar) {
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  const std::uint8_t* scales = src + code_bytes;
  const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
  for (int c = 0; c < d; ++c) {
    const float s = f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * c));
    const float z = f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * c));
    for (int t = 0; t < G; ++t)
      dst[static_cast<std::size_t>(t) * ld + c] = static_cast<float>(kivi_key_code(src, d, bits, t, c)) * s + z;
  }
}

/// logits[r·ldl + t] = q_r · dequant(k_t) for the n_groups·G tokens of consecutive key groups.
/// Metadata folded into the query: Σ_c (q_r[c]·s_c)·code[t][c] + Σ_c q_r[c]·z_c, in fp32.
/// \param groups n_groups blobs at stride kivi_key_group_bytes(G, d, bits).
/// \param q      [rows][d] pre-scaled queries; rows in 1..16.
/// \param logits [rows][ldl], columns [0, n_groups·G) overwritten.
inline void kivi_key_logits(const std::uint8_t* groups, std::size_t n_groups, int G, int d, int bits,
                            const float* q, int rows, float* logits, std::size_t ldl, isa::scalar) {
  assert(rows >= 1 && rows <= kKiviMaxRows);
  const std::size_t gbytes = kivi_key_group_bytes(G, d, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(G) * d * bits / 8;
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::uint8_t* blob = groups + g * gbytes;
    const std::uint8_t* scales = blob + code_bytes;
    const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(d);
    float qz[kKiviMaxRows];
    for (int r = 0; r < rows; ++r) {
      qz[r] = 0.0f;
      for (int c = 0; c < d; ++c) qz[r] += q[r * d + c] * f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * c));
    }
    for (int t = 0; t < G; ++t) {
      float acc[kKiviMaxRows] = {};
      for (int c = 0; c < d; ++c) {
        const float code = static_cast<float>(kivi_key_code(blob, d, bits, t, c));
        const float s = f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * c));
        for (int r = 0; r < rows; ++r) acc[r] += (q[r * d + c] * s) * code;
      }
      for (int r = 0; r < rows; ++r)
        logits[static_cast<std::size_t>(r) * ldl + g * static_cast<std::size_t>(G) + t] = acc[r] + qz[r];
    }
  }
}

/// Quantizes n value rows (per token, groups of Gv channels) into value row blobs.
/// \param v   [n][ldv] values. \param dst n blobs at stride kivi_value_row_bytes(d, Gv, bits).
inline void kivi_quantize_value_rows(const float* v, std::size_t ldv, std::size_t n, int d, int Gv,
                                     int bits, std::uint8_t* dst, isa::scalar) {
  assert((bits == 2 || bits == 4 || bits == 8) && Gv % (32 / bits) == 0 && d % Gv == 0);
  const int levels = (1 << bits) - 1;
  const int per = 32 / bits;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  for (std::size_t t = 0; t < n; ++t) {
    const float* x = v + t * ldv;
    std::uint8_t* row = dst + t * row_bytes;
    std::uint8_t* scales = row + code_bytes;
    std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int g = 0; g < n_groups; ++g) {
      const float* xg = x + g * Gv;
      float lo = xg[0], hi = xg[0];
      for (int c = 1; c < Gv; ++c) {
        lo = xg[c] < lo ? xg[c] : lo;
        hi = xg[c] > hi ? xg[c] : hi;
      }
      const detail::KiviMeta meta = detail::kivi_meta(lo, hi, levels);
      detail::kivi_store_u16(scales + 2 * g, meta.s16);
      detail::kivi_store_u16(mins + 2 * g, meta.z16);
      const float z = f16_bits_to_f32(meta.z16);
      const float inv = detail::kivi_inv_scale(f16_bits_to_f32(meta.s16));
      for (int w = 0; w < Gv / per; ++w) {
        std::uint32_t word = 0;
        for (int j = 0; j < per; ++j)
          word |= static_cast<std::uint32_t>(detail::kivi_code(xg[w * per + j], z, inv, levels)) << (bits * j);
        detail::kivi_store_u32(row + 4 * static_cast<std::size_t>(g * Gv / per + w), word);
      }
    }
  }
}

/// Dequantizes n value row blobs into dst [n][ld].
inline void kivi_dequantize_value_rows(const std::uint8_t* src, std::size_t n, int d, int Gv, int bits,
                                       float* dst, std::size_t ld, isa::scalar) {
  const int per = 32 / bits;
  const std::uint32_t mask = (1u << bits) - 1u;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = src + t * row_bytes;
    const std::uint8_t* scales = row + code_bytes;
    const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int c = 0; c < d; ++c) {
      const std::uint32_t word = detail::kivi_load_u32(row + 4 * static_cast<std::size_t>(c / per));
      const float code = static_cast<float>((word >> (bits * (c % per))) & mask);
      const float s = f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * (c / Gv)));
      const float z = f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * (c / Gv)));
      dst[t * ld + c] = code * s + z;
    }
  }
}

/// out[r][c] += Σ_t p[r·ldp + t] · v̂[t][c] over n value row blobs, metadata folded into the
/// weights: per token and group, w = p·s16 and u = p·z16, then out += w·code + u.
/// \param p [rows][ldp] weights; \param out [rows][d] accumulator; rows in 1..16.
inline void kivi_value_accumulate(const std::uint8_t* rows_data, std::size_t n, int d, int Gv, int bits,
                                  const float* p, std::size_t ldp, int rows, float* out, isa::scalar) {
  assert(rows >= 1 && rows <= kKiviMaxRows);
  const int per = 32 / bits;
  const std::uint32_t mask = (1u << bits) - 1u;
  const std::size_t row_bytes = kivi_value_row_bytes(d, Gv, bits);
  const std::size_t code_bytes = static_cast<std::size_t>(d) * bits / 8;
  const int n_groups = d / Gv;
  for (std::size_t t = 0; t < n; ++t) {
    const std::uint8_t* row = rows_data + t * row_bytes;
    const std::uint8_t* scales = row + code_bytes;
    const std::uint8_t* mins = scales + 2 * static_cast<std::size_t>(n_groups);
    for (int g = 0; g < n_groups; ++g) {
      const float s = f16_bits_to_f32(detail::kivi_load_u16(scales + 2 * g));
      const float z = f16_bits_to_f32(detail::kivi_load_u16(mins + 2 * g));
      float w[kKiviMaxRows], u[kKiviMaxRows];
      for (int r = 0; r < rows; ++r) {
        const float pr = p[static_cast<std::size_t>(r) * ldp + t];
        w[r] = pr * s;
        u[r] = pr * z;
      }
      for (int c = g * Gv; c < (g + 1) * Gv; ++c) {
        const std::uint32_t word = detail::kivi_load_u32(row + 4 * static_cast<std::size_t>(c / per));
        const float code = static_cast<float>((word >> (bits * (c % per))) & mask);
        for (int r = 0; r < rows; ++r) out[r * d + c] += w[r] * code + u[r];
      }
    }
  }
}

/// Converts a key group blob's codes to the paper's P-KIVI packing along tokens:
/// words [d][G·b/32]; channel c's G codes fill words c·(G·b/32) + t/(32/b), element t mod (32/b)
/// at bits [b·(t mod 32/b), …). Metadata is not converted (it is already plain [d] fp16 arrays).
inline void kivi_key_group_to_pkivi(const std::uint8_t* src, int G, int d, int bits, std::uint32_t* words) {
  const int per = 32 / bits;
  const int wpc = G / per;  // words per channel
  for (int c = 0; c < d; ++c) {
    for (int w = 0; w < wpc; ++w) {
      std::uint32_t word = 0;
      for (int j = 0; j < per; ++j)
        word |= static_cast<std::uint32_t>(kivi_key_code(src, d, bits, w * per + j, c)) << (bits * j);
      words[static_cast<std::size_t>(c) * wpc + w] = word;
    }
  }
}

}  // namespace kernels
KVCOMPRESS_NAMESPACE_END
