// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Test support for the CPU kernel tests: the list of ISA tags compiled into this build (typed
/// test suites run over it) and a runtime check that the running CPU supports a tag, so a binary
/// built for a wider ISA skips instead of crashing. Also float-reduction bounds shared by the
/// kernel tests.

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kvcompress/kernels/isa.hpp"

namespace kvtest {

namespace isa = kvcompress::isa;

/// Every ISA tag compiled in: scalar always, AVX2 / AVX-512 where config.hpp enables them.
using IsaTags = ::testing::Types<isa::scalar
#if KVCOMPRESS_HAS_AVX2
                                 , isa::avx2
#endif
#if KVCOMPRESS_HAS_AVX512
                                 , isa::avx512
#endif
                                 >;

/// Names typed tests after the tag ("scalar", "avx2", "avx512").
struct IsaName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

inline constexpr bool kNeedVnni = KVCOMPRESS_HAS_AVX512_VNNI != 0;
inline constexpr bool kNeedBf16 = KVCOMPRESS_HAS_AVX512_BF16 != 0;
inline constexpr bool kNeedVbmi = KVCOMPRESS_HAS_AVX512_VBMI != 0;

inline bool cpu_has(isa::scalar) { return true; }
inline bool cpu_has(isa::avx2) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
inline bool cpu_has(isa::avx512) {
  return cpu_has(isa::avx2{}) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         (!kNeedVnni || __builtin_cpu_supports("avx512vnni")) &&
         (!kNeedBf16 || __builtin_cpu_supports("avx512bf16")) &&
         (!kNeedVbmi || __builtin_cpu_supports("avx512vbmi"));
}

/// Skips the current test when the CPU cannot run tag `Tag`.
#define KVTEST_REQUIRE_ISA(Tag)                                                   \
  do {                                                                            \
    if (!::kvtest::cpu_has(Tag{})) GTEST_SKIP() << "CPU lacks " << Tag::kName;    \
  } while (0)

/// Unit roundoff of fp32.
inline constexpr double kU32 = 0x1p-24;

/// Bound on |a − b| when a and b are two fp32 evaluations (any order, with or without FMA) of a
/// sum of `terms` products whose magnitudes sum to `abs_sum`: each is within (terms+1)·u·abs_sum
/// of the exact value (Higham's γ_n bound, first order), so their difference is within twice that.
inline double float_sum_bound(std::size_t terms, double abs_sum) {
  return 2.0 * static_cast<double>(terms + 2) * kU32 * abs_sum + 1e-30;
}

/// Deterministic random vector in [lo, hi).
inline std::vector<float> random_floats(std::size_t n, float lo, float hi, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace kvtest
