// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-9 "FFT along channels" (VidKV, methods/quantization.md §6): the discrete Fourier transform
/// of a real vector of m channels, written as real "frequency channels", its inverse, and the
/// adjoint of the inverse (so fused kernels transform the query instead of the cache:
/// q·inverse(ŷ) = adjoint(q)·ŷ).
///
/// Convention (numpy): Y_k = Σ_c x_c·e^{−2πi·ck/m}; IDFT x_c = (1/m)·Σ_k Y_k·e^{+2πi·ck/m}.
/// Two layouts of the real frequency vector y:
/// * kComplexFull (the reference's `torch.fft.fft`, interleaved): y[2k] = Re Y_k, y[2k+1] = Im Y_k
///   for k < m — 2m reals; inverse = Re(IDFT) of the (possibly non-Hermitian) quantized spectrum.
/// * kCompact (the spec's rfft [rec]): y = [Y_0, Re Y_1, Im Y_1, …, Re Y_K, Im Y_K, (Y_{m/2} if m
///   even)], K = ⌊(m−1)/2⌋ — exactly m reals; inverse = IDFT of the Hermitian completion.
/// Both inverses are exact left inverses of forward (round trip = identity up to rounding).
/// m is small (≤ 256), so the transform is a direct O(m²) sum with a precomputed twiddle table
/// (the same linear map an FFT computes); tables are built once, at construction.

#include <cmath>
#include <cstddef>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Layout of the real frequency vector (file comment).
enum class DftLayout { kCompact, kComplexFull };

inline const char* to_string(DftLayout l) { return l == DftLayout::kCompact ? "compact" : "complex_full"; }

/// Real-input DFT over m channels.
class ChannelDft {
 public:
  ChannelDft() = default;
  /// Throws InvalidArgument for m < 1.
  ChannelDft(int m, DftLayout layout) : m_(m), layout_(layout), cos_(static_cast<std::size_t>(m)), sin_(cos_) {
    kvcompress::detail::require(m >= 1, "quant::common::ChannelDft", "m", m, ">= 1");
    const double two_pi = 6.283185307179586476925286766559;
    for (int j = 0; j < m; ++j) {
      cos_[static_cast<std::size_t>(j)] = static_cast<float>(std::cos(two_pi * j / m));
      sin_[static_cast<std::size_t>(j)] = static_cast<float>(std::sin(two_pi * j / m));
    }
  }

  int channels() const { return m_; }
  DftLayout layout() const { return layout_; }
  /// Real frequency channels: m (compact) or 2m (complex_full).
  int size() const { return layout_ == DftLayout::kCompact ? m_ : 2 * m_; }

  /// y = forward(x): x [m] → y [size()].
  void forward(const float* x, float* y) const {
    for (int k = 0; k < m_; ++k) {
      const int slot = out_slot(k);
      if (slot < 0) continue;
      double re = 0.0, im = 0.0;
      for (int c = 0; c < m_; ++c) {
        const std::size_t t = tw(c, k);
        re += static_cast<double>(x[c]) * cos_[t];
        im -= static_cast<double>(x[c]) * sin_[t];
      }
      y[slot] = static_cast<float>(re);
      if (has_imag(k)) y[slot + 1] = static_cast<float>(im);
    }
  }

  /// x = inverse(y): y [size()] → x [m].
  void inverse(const float* y, float* x) const {
    for (int c = 0; c < m_; ++c) {
      double acc = 0.0;
      for (int k = 0; k < m_; ++k) {
        const int slot = out_slot(k);
        if (slot < 0) continue;
        const std::size_t t = tw(c, k);
        double term = static_cast<double>(y[slot]) * cos_[t];
        if (has_imag(k)) term -= static_cast<double>(y[slot + 1]) * sin_[t];
        acc += weight(k) * term;
      }
      x[c] = static_cast<float>(acc / m_);
    }
  }

  /// w = Aᵀq for the linear map A = inverse: q·inverse(ŷ) = w·ŷ for every ŷ. q [m] → w [size()].
  /// Runs once per query row and flush block at decode time, so it accumulates in fp32 and
  /// walks the twiddle table incrementally (no modulo).
  void adjoint(const float* q, float* w) const {
    const std::size_t m = static_cast<std::size_t>(m_);
    for (int k = 0; k < m_; ++k) {
      const int slot = out_slot(k);
      if (slot < 0) continue;
      float re = 0.0f, im = 0.0f;
      std::size_t t = 0;
      for (std::size_t c = 0; c < m; ++c) {
        re += q[c] * cos_[t];
        im -= q[c] * sin_[t];
        t += static_cast<std::size_t>(k);
        if (t >= m) t -= m;
      }
      const float s = static_cast<float>(weight(k) / m_);
      w[slot] = s * re;
      if (has_imag(k)) w[slot + 1] = s * im;
    }
  }

 private:
  std::size_t tw(int c, int k) const { return static_cast<std::size_t>((c * k) % m_); }
  /// Index of frequency k in y, or −1 if the layout does not store it (compact: k > m/2).
  int out_slot(int k) const {
    if (layout_ == DftLayout::kComplexFull) return 2 * k;
    if (k == 0) return 0;
    const int K = (m_ - 1) / 2;
    if (k <= K) return 2 * k - 1;
    if (m_ % 2 == 0 && k == m_ / 2) return m_ - 1;
    return -1;
  }
  bool has_imag(int k) const {
    if (layout_ == DftLayout::kComplexFull) return true;
    return k >= 1 && k <= (m_ - 1) / 2;
  }
  /// Hermitian-completion weight of a stored frequency (compact: interior pairs count twice).
  double weight(int k) const {
    if (layout_ == DftLayout::kComplexFull) return 1.0;
    return has_imag(k) ? 2.0 : 1.0;
  }

  int m_ = 0;
  DftLayout layout_ = DftLayout::kCompact;
  std::vector<float> cos_, sin_;
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
