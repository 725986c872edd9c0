// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Independent oracle for KIVI (methods/quantization.md §1, BB-1, BB-4) and for the packed key /
/// value layouts documented in kernels/cpu/scalar/kivi.hpp. Written from the spec text; never
/// calls library code. Metadata and codes follow the spec's float expression exactly (the spec
/// fixes the arithmetic: s = fp16((hi − lo)/L) in fp32, q = nearbyint((x − z16)·(1/s16))), so
/// codes can be compared byte for byte; products and sums are then evaluated in double.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "reference/float16_reference.hpp"

namespace kvref {

/// Metadata of one group as values (s16, z16 exactly representable in binary16).
struct KiviGroupMeta {
  double s16 = 0.0;
  double z16 = 0.0;
};

inline KiviGroupMeta kivi_meta(const float* x, std::size_t n, std::size_t stride, int bits) {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 1; i < n; ++i) {
    lo = std::fmin(lo, x[i * stride]);
    hi = std::fmax(hi, x[i * stride]);
  }
  const float levels = static_cast<float>((1 << bits) - 1);
  const float s = (hi - lo) / levels;  // spec: fp32 division, then fp16 rounding
  return {round_to_f16(s), round_to_f16(lo)};
}

inline int kivi_code(float x, const KiviGroupMeta& m, int bits) {
  if (m.s16 == 0.0) return 0;
  const float inv = 1.0f / static_cast<float>(m.s16);
  const float diff = x - static_cast<float>(m.z16);
  const float y = diff * inv;
  const double r = std::nearbyint(static_cast<double>(y));
  const int levels = (1 << bits) - 1;
  return r < 0 ? 0 : (r > levels ? levels : static_cast<int>(r));
}

/// Reference key group: codes [G][d], metadata per channel.
struct KiviKeyGroup {
  int G = 0, d = 0, bits = 0;
  std::vector<int> codes;          // [G][d]
  std::vector<KiviGroupMeta> meta;  // [d]
  double dequant(int t, int c) const { return codes[t * d + c] * meta[c].s16 + meta[c].z16; }
};

inline KiviKeyGroup kivi_quantize_keys(const float* k, std::size_t ldk, int G, int d, int bits) {
  KiviKeyGroup out;
  out.G = G;
  out.d = d;
  out.bits = bits;
  out.codes.resize(static_cast<std::size_t>(G) * d);
  out.meta.resize(d);
  for (int c = 0; c < d; ++c) {
    out.meta[c] = kivi_meta(k + c, G, ldk, bits);
    for (int t = 0; t < G; ++t) out.codes[t * d + c] = kivi_code(k[t * ldk + c], out.meta[c], bits);
  }
  return out;
}

/// Byte offset and shift of code (t, c) in the documented key layout: 64-byte blocks of 16 tokens
/// × 32/b channels, tile-major; byte 4·(t%16) + c%4; field (c % (32/b))/4.
inline std::size_t key_code_byte(int d, int bits, int t, int c, int* shift) {
  const int cb = 32 / bits;
  *shift = bits * ((c % cb) / 4);
  return (static_cast<std::size_t>(t / 16) * (d / cb) + c / cb) * 64 + 4 * (t % 16) + c % 4;
}

inline int blob_key_code(const std::uint8_t* blob, int d, int bits, int t, int c) {
  int shift = 0;
  const std::size_t off = key_code_byte(d, bits, t, c, &shift);
  return (blob[off] >> shift) & ((1 << bits) - 1);
}

inline std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/// Scale / min of channel c read from a key blob (as values).
inline double blob_key_scale(const std::uint8_t* blob, int G, int d, int bits, int c) {
  return f16_value(load_u16(blob + static_cast<std::size_t>(G) * d * bits / 8 + 2 * c));
}
inline double blob_key_min(const std::uint8_t* blob, int G, int d, int bits, int c) {
  return f16_value(load_u16(blob + static_cast<std::size_t>(G) * d * bits / 8 + 2 * d + 2 * c));
}

/// Reference value rows: codes [n][d], metadata [n][d/Gv].
struct KiviValueRows {
  int d = 0, Gv = 0, bits = 0;
  std::vector<int> codes;
  std::vector<KiviGroupMeta> meta;
  double dequant(std::size_t t, int c) const {
    const KiviGroupMeta& m = meta[t * (d / Gv) + c / Gv];
    return codes[t * d + c] * m.s16 + m.z16;
  }
};

inline KiviValueRows kivi_quantize_values(const float* v, std::size_t ldv, std::size_t n, int d, int Gv, int bits) {
  KiviValueRows out;
  out.d = d;
  out.Gv = Gv;
  out.bits = bits;
  out.codes.resize(n * d);
  out.meta.resize(n * (d / Gv));
  for (std::size_t t = 0; t < n; ++t)
    for (int g = 0; g < d / Gv; ++g) {
      const KiviGroupMeta m = kivi_meta(v + t * ldv + g * Gv, Gv, 1, bits);
      out.meta[t * (d / Gv) + g] = m;
      for (int c = g * Gv; c < (g + 1) * Gv; ++c) out.codes[t * d + c] = kivi_code(v[t * ldv + c], m, bits);
    }
  return out;
}

/// Code of channel c in a value row blob (P-KIVI along channels, little-endian words).
inline int blob_value_code(const std::uint8_t* row, int bits, int c) {
  const int per = 32 / bits;
  std::uint32_t w;
  std::memcpy(&w, row + 4 * (c / per), 4);
  return static_cast<int>((w >> (bits * (c % per))) & ((1u << bits) - 1u));
}

}  // namespace kvref
