// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Portable random draws for the synthetic workloads (llm_kv.hpp, multimodal_workload.hpp).
///
/// Every draw is built from the raw output of std::mt19937_64, whose sequence the C++ standard
/// fixes, via calib::uniform01. std::normal_distribution & co. are avoided on purpose: their
/// algorithms are left to the standard library, so the same seed would give different data with
/// libstdc++ and libc++ (and the tools' tables would not be reproducible).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/calib/seeded_random.hpp"

namespace kvsynth {

/// A seeded generator with the draws the workloads need.
class Sampler {
 public:
  explicit Sampler(std::uint64_t seed) : rng_(seed) {}

  /// Uniform in [0, 1).
  double uniform() { return kvcompress::calib::uniform01(rng_); }

  /// Uniform integer in [0, n), n ≥ 1.
  std::size_t index(std::size_t n) {
    const std::size_t i = static_cast<std::size_t>(uniform() * static_cast<double>(n));
    return i < n ? i : n - 1;
  }

  /// Standard normal (Box–Muller, both outputs used).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

  /// Student-t with `dof` (integer ≥ 1) degrees of freedom: z / sqrt(χ²_dof / dof).
  double student_t(int dof) {
    const double z = normal();
    double chi2 = 0.0;
    for (int i = 0; i < dof; ++i) {
      const double g = normal();
      chi2 += g * g;
    }
    return z / std::sqrt(chi2 / static_cast<double>(dof));
  }

  /// Index drawn with probability ∝ w[i] (w non-negative, not all zero).
  std::size_t categorical(const std::vector<double>& w) {
    double total = 0.0;
    for (double x : w) total += x;
    double u = uniform() * total;
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (u < w[i]) return i;
      u -= w[i];
    }
    for (std::size_t i = w.size(); i-- > 0;)
      if (w[i] > 0.0) return i;
    return 0;
  }

  /// x[0..d) ← a unit vector uniform on the sphere.
  void unit_vector(float* x, std::size_t d) {
    double n2 = 0.0;
    std::vector<double> t(d);
    for (std::size_t c = 0; c < d; ++c) {
      t[c] = normal();
      n2 += t[c] * t[c];
    }
    const double inv = 1.0 / std::sqrt(n2);
    for (std::size_t c = 0; c < d; ++c) x[c] = static_cast<float>(t[c] * inv);
  }

 private:
  std::mt19937_64 rng_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// Seed of an independent sub-stream (layer, head, …) derived from a base seed (SplitMix64 step).
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace kvsynth
