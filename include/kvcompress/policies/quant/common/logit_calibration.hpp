// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Pre-softmax logit-range calibration of CalibQuant (methods/quantization.md §4, step 3): the
/// logits ℓ of one query row over a quantized segment are remapped affinely from [m, M] (their
/// min and max) onto [m + δ_min, M + δ_max]:
///   ℓ' = (ℓ − m)/(M − m + 1e−8)·((M + δ_max) − (m + δ_min)) + (m + δ_min).
/// With the defaults δ_max = −3, δ_min = 0 the row's maximum is lowered by 3 and its minimum kept,
/// which undoes the over-sharp attention that the 1-bit range-shrunk keys produce.
///
/// Guard (spec "Ambiguities", [rec]): when the target width (M + δ_max) − (m + δ_min) is ≤ 0 the
/// map would reverse the ranking, so it is skipped unless `always` is set (the reference applies
/// it unconditionally: compatibility flag `calib_always`).

#include <cstddef>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// The affine map of one row, ℓ' = (ℓ − m)·gain + base.
struct LogitRemap {
  float m = 0.0f;     ///< source minimum
  float gain = 1.0f;  ///< ((M + δ_max) − (m + δ_min)) / (M − m + 1e−8)
  float base = 0.0f;  ///< m + δ_min
  bool active = false;
  float operator()(float l) const { return active ? (l - m) * gain + base : l; }
};

/// The remap of a row whose segment logits span [m, M]; inactive when skipped by the guard.
inline LogitRemap logit_remap(float m, float M, float delta_min, float delta_max, bool always) {
  LogitRemap r;
  const float width = (M + delta_max) - (m + delta_min);
  r.active = always || width > 0.0f;
  r.m = m;
  r.gain = width / (M - m + 1e-8f);
  r.base = m + delta_min;
  return r;
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
