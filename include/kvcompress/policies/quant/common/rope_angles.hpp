// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Precomputed RoPE frequencies for pre-RoPE stores that rotate many keys per decode step (BB-14):
/// the per-pair θ_i (and the scaled base / position divisor) of common/rope.hpp are computed once
/// at construction, so rotating one key costs d/2 sin/cos instead of d/2 pow + sin + cos. The
/// arithmetic is the expression of rope.hpp (θ_i = base'^(−2i/d) in double, angle = pos'·θ_i in
/// double, cos/sin rounded to fp32 once, rotation in fp32), so `rotate` is bit-identical to
/// `rope_apply`. No allocation after construction.
///
/// For many keys at ascending positions (a block of a pre-RoPE store) `RopeCursor` avoids the
/// trigonometry: it evaluates cos/sin exactly at its first position and advances to position
/// p + 1 by one complex multiplication per pair with the precomputed unit-step rotation (double),
/// falling back to exact evaluation for any other step. After k unit steps the angle error is
/// ≈ k·1e-16 (relative), far below the fp32 rounding of the result; it is not bit-identical to
/// rope_apply (use `rotate` where bit parity matters).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/policies/quant/common/rope.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// θ_i of one RopeParams, ready to rotate rows.
class RopeAngles {
 public:
  RopeAngles() = default;
  /// Throws InvalidArgument for bad params (rope.hpp rules).
  explicit RopeAngles(const RopeParams& p) : p_(p) {
    detail::check_rope("quant::common::RopeAngles", p);
    const double d = static_cast<double>(p.head_dim);
    const double base = p.scaling == RopeScaling::kNtk ? p.base * std::pow(p.factor, d / (d - 2.0)) : p.base;
    theta_.resize(p.head_dim / 2);
    step_.resize(p.head_dim);
    const double unit = p.scaling == RopeScaling::kLinear ? 1.0 / p.factor : 1.0;
    for (std::size_t i = 0; i < theta_.size(); ++i) {
      theta_[i] = std::pow(base, -2.0 * static_cast<double>(i) / d);
      step_[2 * i] = std::cos(unit * theta_[i]);
      step_[2 * i + 1] = std::sin(unit * theta_[i]);
    }
  }

  const RopeParams& params() const { return p_; }

  /// Rotates x[0..d) by position pos (negative: inverse), bit-identical to rope_apply/unapply.
  void rotate(float* x, double position) const {
    const std::size_t half = p_.head_dim / 2;
    const double pos = p_.scaling == RopeScaling::kLinear ? position / p_.factor : position;
    const bool rh = p_.layout == RopeLayout::kRotateHalf;
    for (std::size_t i = 0; i < half; ++i) {
      const float c = static_cast<float>(std::cos(pos * theta_[i]));
      const float s = static_cast<float>(std::sin(pos * theta_[i]));
      const std::size_t a = rh ? i : 2 * i;
      const std::size_t b = rh ? i + half : 2 * i + 1;
      const float xa = x[a], xb = x[b];
      x[a] = xa * c - xb * s;
      x[b] = xa * s + xb * c;
    }
  }

  /// Rotates x[0..d) with precomputed cos/sin pairs cs[2i], cs[2i+1] (a RopeCursor's).
  void rotate_with(float* x, const double* cs) const {
    const std::size_t half = p_.head_dim / 2;
    const bool rh = p_.layout == RopeLayout::kRotateHalf;
    for (std::size_t i = 0; i < half; ++i) {
      const float c = static_cast<float>(cs[2 * i]);
      const float s = static_cast<float>(cs[2 * i + 1]);
      const std::size_t a = rh ? i : 2 * i;
      const std::size_t b = rh ? i + half : 2 * i + 1;
      const float xa = x[a], xb = x[b];
      x[a] = xa * c - xb * s;
      x[b] = xa * s + xb * c;
    }
  }

  /// cs[2i], cs[2i+1] = cos, sin of the angle of pair i at `position` (exact, double).
  void angles(double position, double* cs) const {
    const double pos = p_.scaling == RopeScaling::kLinear ? position / p_.factor : position;
    for (std::size_t i = 0; i < theta_.size(); ++i) {
      cs[2 * i] = std::cos(pos * theta_[i]);
      cs[2 * i + 1] = std::sin(pos * theta_[i]);
    }
  }
  /// Advances cs from position p to p + 1 (one complex multiplication per pair).
  void step(double* cs) const {
    for (std::size_t i = 0; i < theta_.size(); ++i) {
      const double c = cs[2 * i], s = cs[2 * i + 1];
      cs[2 * i] = c * step_[2 * i] - s * step_[2 * i + 1];
      cs[2 * i + 1] = s * step_[2 * i] + c * step_[2 * i + 1];
    }
  }

  /// Bytes held (θ and the unit-step rotation).
  std::size_t memory_bytes() const { return (theta_.capacity() + step_.capacity()) * sizeof(double); }

 private:
  RopeParams p_;
  std::vector<double> theta_;  // [d/2]
  std::vector<double> step_;   // [d/2][2] cos, sin of the unit step
};

/// Walks ascending positions (see the file comment). Holds [d] doubles; no allocation.
template <std::size_t MaxHeadDim = 256>
class RopeCursor {
 public:
  explicit RopeCursor(const RopeAngles& a) : a_(a) {}
  /// Rotates x[0..d) for `position`; positions passed in ascending order since the last reset().
  void rotate(float* x, std::int64_t position) {
    if (valid_ && position == pos_ + 1) a_.step(cs_);
    else if (!valid_ || position != pos_) a_.angles(static_cast<double>(position), cs_);
    valid_ = true;
    pos_ = position;
    a_.rotate_with(x, cs_);
  }
  /// Forces exact evaluation at the next rotate (e.g. at every block start, bounding the drift).
  void reset() { valid_ = false; }

 private:
  const RopeAngles& a_;
  double cs_[MaxHeadDim];
  std::int64_t pos_ = 0;
  bool valid_ = false;
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
