// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// llama.cpp / ggml KV-cache block formats q8_0, q4_0 and q4_1 (methods/quantization.md §10,
/// BB-2, BB-4 P-GGML): the packed block structs, byte-identical to ggml's `block_q8_0`,
/// `block_q4_0` and `block_q4_1`, and the reference row quantizers/dequantizers, byte-identical to
/// ggml's `quantize_row_*_ref` / `dequantize_row_*` (ggml-quants.c).
///
/// Block = QK = 32 consecutive elements of a row; a row of k elements (k % 32 == 0) is k/32
/// consecutive blocks, no padding. All fields little-endian, fp16 = IEEE binary16 bit patterns,
/// fp32 → fp16 rounds to nearest even (GGML_FP32_TO_FP16).
///
/// | struct       | bytes | layout                                   | bits/element |
/// |--------------|-------|------------------------------------------|--------------|
/// | block_q8_0   | 34    | [0,2) fp16 d; [2,34) int8 qs[32]         | 8.5          |
/// | block_q4_0   | 18    | [0,2) fp16 d; [2,18) uint8 qs[16]        | 4.5          |
/// | block_q4_1   | 20    | [0,2) fp16 d; [2,4) fp16 m; [4,20) qs[16]| 5.0          |
/// q4 nibbles (P-GGML): qs[j] = code[j] | code[j + 16] << 4, j = 0..15.
///
/// Quantization (x = the 32 fp32 inputs of a block; all arithmetic fp32, as ggml):
///  * q8_0: amax = max|x_i|; d = amax / 127; id = d ? 1/d : 0; q_i = roundf(x_i·id) (nearest,
///    ties AWAY from zero; |x_i·id| ≤ 127.5 never happens so no clamp is active);
///    stored fp16(d). Dequant x̂ = q·fp16(d).
///  * q4_0: max = the signed x_i with the largest |x_i| (first one on ties: `amax < |v|`);
///    d = max / −8; id = d ? 1/d : 0; q_i = min(15, (int8)(x_i·id + 8.5)) — the product rounded
///    to fp32, then + 8.5 rounded to fp32, then truncation toward zero; stored fp16(d).
///    Dequant x̂ = (q − 8)·fp16(d). The extreme maps to code 0 (16 asymmetric levels).
///  * q4_1: min, max over x (ggml starts from ±FLT_MAX); d = (max − min)/15; id = d ? 1/d : 0;
///    q_i = min(15, (int8)((x_i − min)·id + 0.5)) — difference, product and sum each rounded to
///    fp32, then truncation; stored fp16(d), fp16(min). Dequant x̂ = q·fp16(d) + fp16(m).
/// Codes are computed with the fp32 d (and min), while the block stores them rounded to fp16 —
/// ggml's rule, not the library's fp16-first [rec]. The product and the following + 8.5 / + 0.5
/// are evaluated as two roundings (the C source under ISO FP_CONTRACT OFF); this header blocks
/// the compiler's FMA contraction explicitly (ggml_no_contract), since GNU-mode builds contract
/// by default. A ggml build compiled with contraction can differ from this in rare near-tie
/// codes; the tests pin the uncontracted rule.
///
/// Reuse: q8_0 codes are quant::common::symmetric_code (8 bits, kHalfAwayFromZero — bitwise
/// ggml's roundf for |x·id| ≤ 127.5); q4 nibbles are packed with quant::common::pack_ggml_q4 and
/// read with ggml_q4_get. The q4 code rules are written here: common's Rounding::kTruncAddHalf
/// adds 0.5 to an already rounded value, which differs from ggml's single `+ 8.5`.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/policies/quant/common/bit_packing.hpp"
#include "kvcompress/policies/quant/common/rounding.hpp"
#include "kvcompress/policies/quant/common/symmetric_quant.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace formats {

/// Elements per ggml block (QK8_0 = QK4_0 = QK4_1 = 32).
inline constexpr int kGgmlQK = 32;

/// ggml's block_q8_0: fp16 scale + 32 signed 8-bit codes.
struct block_q8_0 {
  std::uint16_t d;      ///< fp16 bits of the scale
  std::int8_t qs[32];   ///< codes, x̂ = qs·d
};
/// ggml's block_q4_0: fp16 scale + 32 4-bit codes (P-GGML nibbles).
struct block_q4_0 {
  std::uint16_t d;      ///< fp16 bits of the scale (d = max/−8)
  std::uint8_t qs[16];  ///< qs[j] = q[j] | q[j+16] << 4, x̂ = (q − 8)·d
};
/// ggml's block_q4_1: fp16 scale + fp16 min + 32 4-bit codes (P-GGML nibbles).
struct block_q4_1 {
  std::uint16_t d;      ///< fp16 bits of the scale (max − min)/15
  std::uint16_t m;      ///< fp16 bits of the minimum
  std::uint8_t qs[16];  ///< qs[j] = q[j] | q[j+16] << 4, x̂ = q·d + m
};

static_assert(sizeof(block_q8_0) == 34 && alignof(block_q8_0) == 2, "block_q8_0 must be ggml's 34 bytes");
static_assert(sizeof(block_q4_0) == 18 && alignof(block_q4_0) == 2, "block_q4_0 must be ggml's 18 bytes");
static_assert(sizeof(block_q4_1) == 20 && alignof(block_q4_1) == 2, "block_q4_1 must be ggml's 20 bytes");
static_assert(offsetof(block_q8_0, qs) == 2 && offsetof(block_q4_0, qs) == 2 &&
                  offsetof(block_q4_1, m) == 2 && offsetof(block_q4_1, qs) == 4,
              "ggml block field offsets");
static_assert(std::is_trivially_copyable_v<block_q8_0> && std::is_trivially_copyable_v<block_q4_0> &&
                  std::is_trivially_copyable_v<block_q4_1>,
              "ggml blocks are raw bytes");

/// Returns v after forcing it into a register, so `v + c` cannot be contracted with the product
/// that produced v into one FMA (ggml's reference rounds twice).
inline float ggml_no_contract(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

/// ggml's `(int8_t)(v)` of an in-range float, then MIN(15, ·).
inline std::uint8_t ggml_q4_clamp(float v) {
  const int i = static_cast<int>(static_cast<std::int8_t>(static_cast<int>(v)));
  return static_cast<std::uint8_t>(i < 15 ? i : 15);
}

/// quantize_row_q8_0_ref: k (multiple of 32) floats → k/32 blocks.
inline void quantize_row_q8_0(const float* x, block_q8_0* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float* xb = x + b * kGgmlQK;
    float amax = 0.0f;
    for (int j = 0; j < kGgmlQK; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16_bits(d);
    for (int j = 0; j < kGgmlQK; ++j)
      y[b].qs[j] = common::symmetric_code(xb[j], id, 8, common::Rounding::kHalfAwayFromZero);
  }
}

/// quantize_row_q4_0_ref: k (multiple of 32) floats → k/32 blocks.
inline void quantize_row_q4_0(const float* x, block_q4_0* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float* xb = x + b * kGgmlQK;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kGgmlQK; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16_bits(d);
    std::uint8_t q[kGgmlQK];
    for (int j = 0; j < kGgmlQK; ++j) q[j] = ggml_q4_clamp(ggml_no_contract(xb[j] * id) + 8.5f);
    common::pack_ggml_q4(q, kGgmlQK, y[b].qs);
  }
}

/// quantize_row_q4_1_ref: k (multiple of 32) floats → k/32 blocks.
inline void quantize_row_q4_1(const float* x, block_q4_1* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float* xb = x + b * kGgmlQK;
    float min = 3.402823466e+38f, max = -3.402823466e+38f;
    for (int j = 0; j < kGgmlQK; ++j) {
      if (xb[j] < min) min = xb[j];
      if (xb[j] > max) max = xb[j];
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16_bits(d);
    y[b].m = f32_to_f16_bits(min);
    std::uint8_t q[kGgmlQK];
    for (int j = 0; j < kGgmlQK; ++j) q[j] = ggml_q4_clamp(ggml_no_contract((xb[j] - min) * id) + 0.5f);
    common::pack_ggml_q4(q, kGgmlQK, y[b].qs);
  }
}

/// dequantize_row_q8_0: x̂ = q·d.
inline void dequantize_row_q8_0(const block_q8_0* x, float* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float d = f16_bits_to_f32(x[b].d);
    for (int j = 0; j < kGgmlQK; ++j) y[b * kGgmlQK + j] = static_cast<float>(x[b].qs[j]) * d;
  }
}

/// dequantize_row_q4_0: x̂ = (q − 8)·d.
inline void dequantize_row_q4_0(const block_q4_0* x, float* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float d = f16_bits_to_f32(x[b].d);
    for (int j = 0; j < kGgmlQK; ++j)
      y[b * kGgmlQK + j] = static_cast<float>(static_cast<int>(common::ggml_q4_get(x[b].qs, j)) - 8) * d;
  }
}

/// dequantize_row_q4_1: x̂ = q·d + m (one rounding: q·d is exact in fp32).
inline void dequantize_row_q4_1(const block_q4_1* x, float* y, std::size_t k) {
  for (std::size_t b = 0; b < k / kGgmlQK; ++b) {
    const float d = f16_bits_to_f32(x[b].d), m = f16_bits_to_f32(x[b].m);
    for (int j = 0; j < kGgmlQK; ++j)
      y[b * kGgmlQK + j] = static_cast<float>(common::ggml_q4_get(x[b].qs, j)) * d + m;
  }
}

/// Runtime format id (kernels take it as a parameter, like KIVI's bit width).
enum class GgmlType : int { kQ8_0 = 0, kQ4_0 = 1, kQ4_1 = 2 };

/// Bytes of one block of a format.
constexpr std::size_t ggml_block_bytes(GgmlType t) {
  return t == GgmlType::kQ8_0 ? sizeof(block_q8_0) : t == GgmlType::kQ4_0 ? sizeof(block_q4_0) : sizeof(block_q4_1);
}
/// Bytes of one row of d elements (d % 32 == 0).
constexpr std::size_t ggml_row_bytes(GgmlType t, int d) {
  return static_cast<std::size_t>(d / kGgmlQK) * ggml_block_bytes(t);
}
/// ggml's type name.
constexpr const char* ggml_type_name(GgmlType t) {
  return t == GgmlType::kQ8_0 ? "q8_0" : t == GgmlType::kQ4_0 ? "q4_0" : "q4_1";
}

/// Quantizes one row of d floats (d % 32 == 0) into ggml_row_bytes(t, d) bytes.
inline void ggml_quantize_row(GgmlType t, const float* x, int d, std::uint8_t* dst) {
  const std::size_t k = static_cast<std::size_t>(d);
  switch (t) {
    case GgmlType::kQ8_0: {
      block_q8_0 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        quantize_row_q8_0(x + i * kGgmlQK, b, kGgmlQK);
        std::memcpy(dst + i * sizeof b, b, sizeof b);
      }
      break;
    }
    case GgmlType::kQ4_0: {
      block_q4_0 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        quantize_row_q4_0(x + i * kGgmlQK, b, kGgmlQK);
        std::memcpy(dst + i * sizeof b, b, sizeof b);
      }
      break;
    }
    case GgmlType::kQ4_1: {
      block_q4_1 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        quantize_row_q4_1(x + i * kGgmlQK, b, kGgmlQK);
        std::memcpy(dst + i * sizeof b, b, sizeof b);
      }
      break;
    }
  }
}

/// Dequantizes one row (ggml_row_bytes(t, d) bytes, no alignment needed) into d floats.
inline void ggml_dequantize_row(GgmlType t, const std::uint8_t* src, int d, float* y) {
  const std::size_t k = static_cast<std::size_t>(d);
  switch (t) {
    case GgmlType::kQ8_0: {
      block_q8_0 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        std::memcpy(b, src + i * sizeof b, sizeof b);
        dequantize_row_q8_0(b, y + i * kGgmlQK, kGgmlQK);
      }
      break;
    }
    case GgmlType::kQ4_0: {
      block_q4_0 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        std::memcpy(b, src + i * sizeof b, sizeof b);
        dequantize_row_q4_0(b, y + i * kGgmlQK, kGgmlQK);
      }
      break;
    }
    case GgmlType::kQ4_1: {
      block_q4_1 b[1];
      for (std::size_t i = 0; i < k / kGgmlQK; ++i) {
        std::memcpy(b, src + i * sizeof b, sizeof b);
        dequantize_row_q4_1(b, y + i * kGgmlQK, kGgmlQK);
      }
      break;
    }
  }
}

/// Compile-time format tags for quant::Ggml<KFormat, VFormat, Rotation>.
struct Q8_0 {
  using block = block_q8_0;
  static constexpr GgmlType kType = GgmlType::kQ8_0;
  static constexpr const char* kName = "q8_0";
};
struct Q4_0 {
  using block = block_q4_0;
  static constexpr GgmlType kType = GgmlType::kQ4_0;
  static constexpr const char* kName = "q4_0";
};
struct Q4_1 {
  using block = block_q4_1;
  static constexpr GgmlType kType = GgmlType::kQ4_1;
  static constexpr const char* kName = "q4_1";
};

}  // namespace formats
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
