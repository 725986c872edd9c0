// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Uncompressed storage: the baseline every compressed method is measured against in the same
/// run. `quant::None` keeps K and V in fp16 (what engines store); `quant::DenseF32` keeps fp32
/// (the reference of the real-model evaluation).
///
/// Block layout (core/token_row_store.hpp, 128 slots): [128][d] keys, then [128][d] values, each
/// 64-byte aligned, element type T. Eviction compacts physically (rows move down, whole free
/// blocks go back to the pool). 128 slots per block balances two costs: the decode kernels run once per
/// block (64-slot blocks measured ~20 % slower than 256-slot ones at 16384 tokens, d = 128), and
/// memory is held in whole blocks (256-slot blocks doubled the footprint of a 25 % eviction
/// budget at 512 tokens).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/core/token_row_store.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// Dense storage of element type T ∈ {float, half}.
template <class T>
struct Dense {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half>,
                "quant::Dense<T>: T must be float or half");
  static constexpr const char* kName = std::is_same_v<T, float> ? "dense_f32" : "dense_f16";
  /// Largest input magnitude the element type represents (fp16 overflows past 65504).
  static constexpr float kMaxAbsInput = std::is_same_v<T, half> ? kHalfMax : 3.0e38f;

  /// No knobs.
  struct Config {
    void validate(const CacheShape&) const {}
  };

  /// One (layer, KV head) stream: rows of T, converted from the fp32 inputs.
  class Store : public TokenRowStore<128> {
   public:
    static std::size_t block_bytes(int d, const Config&) { return block_bytes_for(row_bytes(d), row_bytes(d)); }
    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    static std::size_t max_blocks(std::size_t capacity, const Config&) { return max_blocks_for(capacity); }
    /// Per-worker fp32 scratch this store needs in append/read/compact/truncate.
    static std::size_t scratch_floats(int, const Config&) { return 0; }
    /// Per-stream bytes held outside the block pool.
    static std::size_t fixed_bytes(int, const Config&) { return 0; }

    Store(int d, const Config&, BlockTable table)
        : TokenRowStore(row_bytes(d), row_bytes(d), std::move(table)), d_(static_cast<std::size_t>(d)) {}

    /// Appends n slots; k and v are [n][ld] fp32 rows (d used).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float*) {
      const std::size_t first = begin_append(n);
      for (std::size_t t = 0; t < n; ++t) {
        kernels::convert(k + t * ld, keys(first + t), d_, best_isa{});
        kernels::convert(v + t * ld, values(first + t), d_, best_isa{});
      }
    }

    /// logits[r·ldl + j] = q_r · k_j for every slot j < size(); q is [rows][d], pre-scaled.
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::dense_logits(keys(j0), d_, nb, static_cast<int>(d_), q, rows, out + j0, ldl, best_isa{});
      });
    }

    /// out[r][c] += Σ_j p[r·ldp + j] · v_j[c] over every slot j < size().
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      for_each_block([&](std::size_t j0, std::size_t nb) {
        kernels::dense_accumulate(values(j0), d_, nb, static_cast<int>(d_), p + j0, ldp, rows, out, best_isa{});
      });
    }

    /// Writes slots [j0, j1) as fp32: slot j's key to k[(j−j0)·ld], value to v[(j−j0)·ld].
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) {
        kernels::convert(keys(j), k + (j - j0) * ld, d_, best_isa{});
        kernels::convert(values(j), v + (j - j0) * ld, d_, best_isa{});
      }
    }

   private:
    static std::size_t row_bytes(int d) { return static_cast<std::size_t>(d) * sizeof(T); }
    T* keys(std::size_t j) { return reinterpret_cast<T*>(key_row(j)); }
    T* values(std::size_t j) { return reinterpret_cast<T*>(value_row(j)); }
    const T* keys(std::size_t j) const { return reinterpret_cast<const T*>(key_row(j)); }
    const T* values(std::size_t j) const { return reinterpret_cast<const T*>(value_row(j)); }

    std::size_t d_;
  };
};

/// The dense fp16 baseline (`KVCache<Policy<>>`).
using None = Dense<half>;
/// Dense fp32: the reference of the real-model evaluation.
using DenseF32 = Dense<float>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
