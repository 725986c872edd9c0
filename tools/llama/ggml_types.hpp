// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// ggml tensor element types that the engine reads from GGUF files, and their dequantization to
/// fp32. The block layouts and formulas are ggml's reference ones (`dequantize_row_*` in
/// ggml-quants.c), restated term for term so the engine needs no ggml: a weight dequantized here
/// equals ggml's, up to the compiler's FMA contraction of `q·d + m` (≤ 1 ulp).
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q6_K — the types that llama.cpp's
/// converters emit for small Llama models (SmolLM2-135M-Instruct.Q4_1 itself uses F32, Q4_1 and
/// Q8_0). Any other type id is rejected by name when the file is opened.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kvcompress/core/float16.hpp"

namespace kvllama {

/// ggml's type ids as stored in GGUF tensor infos (enum ggml_type).
enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ6_K = 14,
  kBF16 = 30,
};

/// Storage geometry of one type: `block_size` elements take `block_bytes` bytes.
struct TypeTraits {
  const char* name;
  std::int64_t block_size;
  std::int64_t block_bytes;
};

/// Traits of a supported type; throws std::runtime_error naming the id of any other.
inline TypeTraits type_traits(std::uint32_t type_id) {
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::kF32: return {"F32", 1, 4};
    case GgmlType::kF16: return {"F16", 1, 2};
    case GgmlType::kBF16: return {"BF16", 1, 2};
    case GgmlType::kQ4_0: return {"Q4_0", 32, 2 + 16};
    case GgmlType::kQ4_1: return {"Q4_1", 32, 2 + 2 + 16};
    case GgmlType::kQ5_0: return {"Q5_0", 32, 2 + 4 + 16};
    case GgmlType::kQ5_1: return {"Q5_1", 32, 2 + 2 + 4 + 16};
    case GgmlType::kQ8_0: return {"Q8_0", 32, 2 + 32};
    case GgmlType::kQ6_K: return {"Q6_K", 256, 128 + 64 + 16 + 2};
  }
  throw std::runtime_error("unsupported ggml tensor type id " + std::to_string(type_id) +
                           " (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_K)");
}

namespace detail {
inline float load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return kvcompress::f16_bits_to_f32(h);
}
inline std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One 32-element block each. Layouts (bytes, little endian):
//   Q4_0: d:f16, qs[16]            x[j] = (lo(qs[j]) - 8)·d,  x[j+16] = (hi(qs[j]) - 8)·d
//   Q4_1: d:f16, m:f16, qs[16]     x[j] = lo(qs[j])·d + m,    x[j+16] = hi(qs[j])·d + m
//   Q5_0: d:f16, qh:u32, qs[16]    5th bit of x[j] is qh bit j, of x[j+16] is qh bit j+16; q - 16
//   Q5_1: d:f16, m:f16, qh, qs     as Q5_0 without the -16, plus m
//   Q8_0: d:f16, qs:i8[32]         x[j] = qs[j]·d
inline void block_q4_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  const std::uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}
inline void block_q4_1(const std::uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const std::uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}
inline void block_q5_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  const std::uint32_t qh = load_u32(b + 2);
  const std::uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int x0 = static_cast<int>((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - 16;
    const int x1 = static_cast<int>((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
    y[j] = static_cast<float>(x0) * d;
    y[j + 16] = static_cast<float>(x1) * d;
  }
}
inline void block_q5_1(const std::uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const std::uint32_t qh = load_u32(b + 4);
  const std::uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int x0 = static_cast<int>((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10));
    const int x1 = static_cast<int>((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10));
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}
inline void block_q8_0(const std::uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
}
// Q6_K, 256 elements: ql[128] (low 4 bits), qh[64] (high 2 bits), scales:i8[16], d:f16. Each half
// of 128 elements uses 64 ql, 32 qh and 8 scales; q = (low | high << 4) - 32; x = d·scale·q with one
// scale per 16 elements.
inline void block_q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = static_cast<int>((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = static_cast<int>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = static_cast<int>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = static_cast<int>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}
}  // namespace detail

/// Dequantizes `n` elements (a multiple of the type's block size) stored at `src` into `dst`.
/// The caller guarantees that `src` holds n / block_size · block_bytes readable bytes.
inline void dequantize_row(std::uint32_t type_id, const std::uint8_t* src, float* dst,
                           std::int64_t n) {
  const TypeTraits t = type_traits(type_id);
  if (n % t.block_size != 0) {
    throw std::runtime_error(std::string("dequantize_row: ") + std::to_string(n) +
                             " elements is not a multiple of the " + t.name + " block size " +
                             std::to_string(t.block_size));
  }
  const std::int64_t blocks = n / t.block_size;
  using BlockFn = void (*)(const std::uint8_t*, float*);
  BlockFn fn = nullptr;
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<std::size_t>(n) * 4); return;
    case GgmlType::kF16:
      for (std::int64_t i = 0; i < n; ++i) dst[i] = detail::load_f16(src + 2 * i);
      return;
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
        std::memcpy(dst + i, &u, 4);
      }
      return;
    case GgmlType::kQ4_0: fn = detail::block_q4_0; break;
    case GgmlType::kQ4_1: fn = detail::block_q4_1; break;
    case GgmlType::kQ5_0: fn = detail::block_q5_0; break;
    case GgmlType::kQ5_1: fn = detail::block_q5_1; break;
    case GgmlType::kQ8_0: fn = detail::block_q8_0; break;
    case GgmlType::kQ6_K: fn = detail::block_q6_k; break;
  }
  for (std::int64_t i = 0; i < blocks; ++i) fn(src + i * t.block_bytes, dst + i * t.block_size);
}

}  // namespace kvllama
