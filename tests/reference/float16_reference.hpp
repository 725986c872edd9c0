// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Independent double-precision oracles for binary16 and bfloat16 rounding and decoding, written
/// from the IEEE 754 definitions (value arithmetic, not bit tricks). Never calls library code.

#include <cmath>
#include <cstdint>
#include <limits>

namespace kvref {

/// Value of binary16 bit pattern h (NaN for NaN patterns).
inline double f16_value(std::uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0x1f) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exp == 0) v = std::ldexp(static_cast<double>(mant), -24);
  else v = std::ldexp(1024.0 + mant, exp - 25);
  return sign ? -v : v;
}

/// x rounded to the nearest binary16 value, ties to even, overflow to ±inf (x finite).
inline double round_to_f16(double x) {
  if (std::isnan(x) || std::isinf(x)) return x;
  const double ax = std::fabs(x);
  double r;
  if (ax < 0x1p-14) {
    r = std::nearbyint(ax * 0x1p24) * 0x1p-24;  // subnormal quantum 2^-24
  } else {
    int e;
    std::frexp(ax, &e);  // ax = m·2^e, m in [0.5, 1): 11 significant bits → quantum 2^(e−11)
    const double quantum = std::ldexp(1.0, e - 11);
    r = std::nearbyint(ax / quantum) * quantum;
    if (r > 65504.0) r = std::numeric_limits<double>::infinity();
  }
  return std::signbit(x) ? -r : r;
}

/// Value of bfloat16 bit pattern b.
inline double bf16_value(std::uint16_t b) {
  const int sign = (b >> 15) & 1;
  const int exp = (b >> 7) & 0xff;
  const int mant = b & 0x7f;
  double v;
  if (exp == 0xff) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exp == 0) v = std::ldexp(static_cast<double>(mant), -133);
  else v = std::ldexp(128.0 + mant, exp - 134);
  return sign ? -v : v;
}

/// x rounded to the nearest bfloat16 value, ties to even, overflow to ±inf (x finite).
inline double round_to_bf16(double x) {
  if (std::isnan(x) || std::isinf(x)) return x;
  const double ax = std::fabs(x);
  double r;
  if (ax < 0x1p-126) {
    r = std::nearbyint(ax * 0x1p133) * 0x1p-133;
  } else {
    int e;
    std::frexp(ax, &e);  // 8 significant bits → quantum 2^(e−8)
    const double quantum = std::ldexp(1.0, e - 8);
    r = std::nearbyint(ax / quantum) * quantum;
    if (r >= 0x1p128) r = std::numeric_limits<double>::infinity();
  }
  return std::signbit(x) ? -r : r;
}

}  // namespace kvref
