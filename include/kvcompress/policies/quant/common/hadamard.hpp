// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-9 of methods/quantization.md: the normalized Walsh–Hadamard transform (WHT), in place, by
/// the O(n log n) butterfly. For n = 2^a it applies H_n = H_2^{⊗a}/√n (Sylvester, natural
/// order: H[i][j] = (−1)^popcount(i & j)/√n), which is orthogonal and symmetric, hence its own
/// inverse. AKVQ-VL (arXiv 2501.15021) rotates keys and queries with it so (Hq)·(Hk) = q·k.
///
/// Non-power-of-two even n ([rec], head_dim 80, 96, 112, …): the block-diagonal matrix
/// diag(H_{2^a1}, H_{2^a2}, …) of the binary decomposition of n, blocks in ascending channel
/// order, largest first (96 = 64 + 32, 80 = 64 + 16, 112 = 64 + 32 + 16). Every block is a
/// normalized Sylvester matrix, so the whole transform stays orthogonal and symmetric (its own
/// inverse) and every logit identity holds; outliers are only spread inside a block. A cache
/// records wht_block_sizes(n) as its layout. Odd n is rejected (the smallest block would be
/// H_1 = [1], which spreads nothing; the spec asks to reject it).

#include <cmath>
#include <cstddef>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Unnormalized in-place Sylvester butterfly on m = 2^a values, then scaled by 1/√m.
KVCOMPRESS_HOST_DEVICE void wht_power_of_two(float* x, std::size_t m) {
  for (std::size_t h = 1; h < m; h *= 2) {
    for (std::size_t i = 0; i < m; i += 2 * h) {
      for (std::size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m)));
  for (std::size_t i = 0; i < m; ++i) x[i] *= scale;
}

/// Block sizes of the WHT layout of n: the powers of two of n's binary decomposition, largest
/// first (ascending channel order). Throws InvalidArgument unless n is even and ≥ 2.
inline std::vector<std::size_t> wht_block_sizes(std::size_t n) {
  kvcompress::detail::require(n >= 2 && n % 2 == 0, "quant::common::wht_block_sizes", "n", n,
                              "an even length ≥ 2 (block-diagonal WHT, BB-9)");
  std::vector<std::size_t> blocks;
  for (std::size_t bit = std::size_t{1} << (8 * sizeof(std::size_t) - 1); bit != 0; bit >>= 1)
    if (n & bit) blocks.push_back(bit);
  return blocks;
}

/// Normalized WHT of x[0..n) in place (block-diagonal for non-powers of two). Applying it twice
/// restores x up to fp32 rounding. Throws InvalidArgument unless n is even and ≥ 2.
inline void walsh_hadamard_transform(float* x, std::size_t n) {
  std::size_t offset = 0;
  for (std::size_t m : wht_block_sizes(n)) {
    wht_power_of_two(x + offset, m);
    offset += m;
  }
}

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
