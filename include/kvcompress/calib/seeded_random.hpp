// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The one source of randomness of the calibration helpers (k-means++ seeding, power-iteration
/// starts): std::mt19937_64 with a fixed documented seed, and uniform draws built from its raw
/// 64-bit output. std::uniform_real_distribution is avoided on purpose: its algorithm is left to
/// the standard library, so the same seed would give different codebooks with libstdc++ and
/// libc++. The mt19937_64 sequence itself is fixed by the standard, so results here are
/// reproducible everywhere.

#include <cstdint>
#include <random>

#include "kvcompress/config.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace calib {

/// Default seed of every calibration routine. KVQuant's reference fits its LUTs with
/// scikit-learn's `random_state=0`; we keep the number (not the sequence, which differs).
inline constexpr std::uint64_t kDefaultSeed = 0;

/// Uniform double in [0, 1) from the top 53 bits of one mt19937_64 draw.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1p-53;
}

}  // namespace calib
KVCOMPRESS_NAMESPACE_END
