// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// 16-bit floating-point storage types (IEEE binary16 `half`, Google `bfloat16`) and their exact
/// scalar conversions. These are storage types only: arithmetic happens in fp32. Conversions from
/// fp32 round to nearest, ties to even; NaN stays NaN; overflow goes to ±inf. Bulk conversion with
/// SIMD lives in kernels/convert.hpp and must agree bit for bit with these functions.

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// IEEE 754 binary16 value, stored as its bit pattern.
struct half {
  std::uint16_t bits;
};

/// bfloat16 (the upper 16 bits of an IEEE binary32), stored as its bit pattern.
struct bfloat16 {
  std::uint16_t bits;
};

static_assert(sizeof(half) == 2 && sizeof(bfloat16) == 2, "16-bit storage types must be 2 bytes");

namespace detail {
KVCOMPRESS_HOST_DEVICE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
KVCOMPRESS_HOST_DEVICE float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

/// binary16 bits → fp32 (exact; subnormals, infinities and NaN payload preserved).
KVCOMPRESS_HOST_DEVICE float f16_bits_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return detail::bits_float(sign);  // ±0
  // Subnormal: value = mant · 2^-24, exactly representable in fp32.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

/// fp32 → binary16 bits, round to nearest even (the same result as F16C `vcvtps2ph` with
/// rounding mode 0).
KVCOMPRESS_HOST_DEVICE std::uint16_t f32_to_f16_bits(float f) {
  const std::uint32_t x = detail::float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN (keep NaN quiet and non-zero)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  }
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (ax < 0x38800000u) {
    // Result is subnormal or zero: scale so that the integer part is the binary16 mantissa.
    if (ax < 0x33000000u) return sign;  // below half the smallest subnormal: ±0
    const std::uint32_t e = ax >> 23;
    const std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14 + (113 - e) - 1 ... total right shift for 2^-24 units
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  // Normal: rebias exponent, round the 13 dropped mantissa bits to nearest even.
  std::uint32_t r = ((ax >> 13) - (112u << 10));
  const std::uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // may carry into the exponent: correct
  return static_cast<std::uint16_t>(sign | r);
}

/// bfloat16 bits → fp32 (exact).
KVCOMPRESS_HOST_DEVICE float bf16_bits_to_f32(std::uint16_t b) {
  return detail::bits_float(static_cast<std::uint32_t>(b) << 16);
}

/// fp32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
KVCOMPRESS_HOST_DEVICE std::uint16_t f32_to_bf16_bits(float f) {
  const std::uint32_t x = detail::float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

KVCOMPRESS_HOST_DEVICE float to_float(float v) { return v; }
KVCOMPRESS_HOST_DEVICE float to_float(half v) { return f16_bits_to_f32(v.bits); }
KVCOMPRESS_HOST_DEVICE float to_float(bfloat16 v) { return bf16_bits_to_f32(v.bits); }

/// Converts fp32 to the storage type T (float, half or bfloat16).
template <class T>
KVCOMPRESS_HOST_DEVICE T from_float(float v) {
  if constexpr (sizeof(T) == 4) {
    return v;
  } else if constexpr (std::is_same_v<T, half>) {
    return half{f32_to_f16_bits(v)};
  } else {
    return bfloat16{f32_to_bf16_bits(v)};
  }
}

/// Largest finite binary16 magnitude; fp16-backed stores reject inputs beyond it.
inline constexpr float kHalfMax = 65504.0f;

KVCOMPRESS_NAMESPACE_END
