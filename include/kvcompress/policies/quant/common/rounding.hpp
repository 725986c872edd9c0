// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Rounding rules used to turn a scaled value into an integer code (methods/quantization.md
/// BB-1 "Rounding"). PyTorch's `round` (KIVI, KVQuant, GEAR, VidKV, CalibQuant references) rounds
/// half to even; C's `roundf` (ggml q8_0) rounds half away from zero; ggml q4_0/q4_1 truncate
/// after adding one half (`(int)(v + 0.5f)`). The generic quantizers default to half-to-even
/// (the spec's [rec]); a format that must be bit-compatible with ggml picks its rule explicitly.

#include <cmath>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// How a real value is rounded to an integer code.
enum class Rounding {
  kHalfEven,          ///< nearest, ties to even (`std::nearbyint` in the default FP mode; PyTorch)
  kHalfAwayFromZero,  ///< nearest, ties away from zero (`std::round`; ggml q8_0 `roundf`)
  kTruncAddHalf,      ///< `trunc(v + 0.5)` (ggml q4_0/q4_1 `(int)(v + 0.5f)`; = floor(v + 0.5) for v ≥ −0.5)
};

/// Stable name of a rounding rule, for test logs and error messages.
inline const char* to_string(Rounding r) {
  switch (r) {
    case Rounding::kHalfEven: return "half_even";
    case Rounding::kHalfAwayFromZero: return "half_away_from_zero";
    case Rounding::kTruncAddHalf: return "trunc_add_half";
  }
  return "unknown";
}

/// Rounds v with rule r, in fp32 (the result is an integer-valued float). kHalfEven relies on
/// the default round-to-nearest floating-point environment, as every caller in this library does.
KVCOMPRESS_HOST_DEVICE float round_with(float v, Rounding r) {
  switch (r) {
    case Rounding::kHalfAwayFromZero: return std::round(v);
    case Rounding::kTruncAddHalf: return std::trunc(v + 0.5f);
    case Rounding::kHalfEven: break;
  }
  return std::nearbyint(v);
}

/// Rounds v with rule r and clamps the result to [lo, hi] (clamping after rounding is the same as
/// rounding after clamping to [lo, hi] for integer bounds, which is what KIVI's code does).
KVCOMPRESS_HOST_DEVICE float round_clamp(float v, Rounding r, float lo, float hi) {
  float q = round_with(v, r);
  q = q > lo ? q : lo;  // also maps NaN to lo; callers reject NaN inputs before quantizing
  return q < hi ? q : hi;
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
