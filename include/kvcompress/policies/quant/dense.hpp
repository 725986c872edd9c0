// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Uncompressed storage: the baseline every compressed method is measured against in the same
/// run. `quant::None` keeps K and V in fp16 (what engines store); `quant::DenseF32` keeps fp32
/// (the reference of the real-model evaluation).
///
/// Block layout (block_tokens = 128 slots): [128][d] keys, then [128][d] values, each 64-byte
/// aligned, element type T. Eviction compacts physically (rows move down, whole free blocks go
/// back to the pool). 128 slots per block balances two costs: the decode kernels run once per
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
#include "kvcompress/core/slot_rows.hpp"
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

  /// One (layer, KV head) stream.
  class Store {
   public:
    static constexpr std::size_t kBlockTokens = 128;

    static std::size_t block_bytes(int d, const Config&) { return geometry(d).second; }
    static std::size_t block_tokens(const Config&) { return kBlockTokens; }
    /// Blocks one stream needs to hold `capacity` slots.
    static std::size_t max_blocks(std::size_t capacity, const Config&) {
      return (capacity + kBlockTokens - 1) / kBlockTokens;
    }
    /// Per-worker fp32 scratch this store needs in append/read/compact/truncate.
    static std::size_t scratch_floats(int, const Config&) { return 0; }
    /// Per-stream bytes held outside the block pool.
    static std::size_t fixed_bytes(int, const Config&) { return 0; }

    Store(int d, const Config&, BlockTable table)
        : d_(d), rows_(geometry(d).first), table_(std::move(table)) {}

    std::size_t size() const { return n_; }

    /// Appends n slots; k and v are [n][ld] fp32 rows (d used).
    void append(const float* k, const float* v, std::size_t ld, std::size_t n, float*) {
      table_.grow_to(rows_.blocks_for(n_ + n));
      for (std::size_t t = 0; t < n; ++t, ++n_) {
        kernels::convert(k + t * ld, row(kKeys, n_), static_cast<std::size_t>(d_), best_isa{});
        kernels::convert(v + t * ld, row(kValues, n_), static_cast<std::size_t>(d_), best_isa{});
      }
    }

    /// logits[r·ldl + j] = q_r · k_j for every slot j < size(); q is [rows][d], pre-scaled.
    void logits(const float* q, int rows, float* out, std::size_t ldl) const {
      for (std::size_t b = 0; b * kBlockTokens < n_; ++b) {
        const std::size_t j0 = b * kBlockTokens, nb = std::min(kBlockTokens, n_ - j0);
        kernels::dense_logits(row(kKeys, j0), static_cast<std::size_t>(d_), nb, d_, q, rows,
                              out + j0, ldl, best_isa{});
      }
    }

    /// out[r][c] += Σ_j p[r·ldp + j] · v_j[c] over every slot j < size().
    void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
      for (std::size_t b = 0; b * kBlockTokens < n_; ++b) {
        const std::size_t j0 = b * kBlockTokens, nb = std::min(kBlockTokens, n_ - j0);
        kernels::dense_accumulate(row(kValues, j0), static_cast<std::size_t>(d_), nb, d_, p + j0,
                                  ldp, rows, out, best_isa{});
      }
    }

    /// Writes slots [j0, j1) as fp32: slot j's key to k[(j−j0)·ld], value to v[(j−j0)·ld].
    void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float*) const {
      for (std::size_t j = j0; j < j1; ++j) {
        kernels::convert(row(kKeys, j), k + (j - j0) * ld, static_cast<std::size_t>(d_), best_isa{});
        kernels::convert(row(kValues, j), v + (j - j0) * ld, static_cast<std::size_t>(d_),
                         best_isa{});
      }
    }

    /// Every slot can be removed physically: retained = keep. Returns the size after compact().
    std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
      std::copy(keep, keep + n_, retained);
      return static_cast<std::size_t>(
          std::count_if(keep, keep + n_, [](std::uint8_t x) { return x != 0; }));
    }

    /// Keeps exactly the slots with retained[j] != 0, in order; frees emptied blocks.
    void compact(const std::uint8_t* retained, float*) {
      rows_.compact(table_, kKeys, retained, n_);
      n_ = rows_.compact(table_, kValues, retained, n_);
      table_.shrink_to(rows_.blocks_for(n_));
    }

    /// Drops slots [n, size()).
    void truncate(std::size_t n, float*) {
      n_ = std::min(n, n_);
      table_.shrink_to(rows_.blocks_for(n_));
    }

    void clear() { truncate(0, nullptr); }

    /// Bytes this stream holds: its blocks (whole blocks, as allocated).
    std::size_t memory_bytes() const { return table_.size() * block_bytes_of(d_); }

   private:
    enum Region { kKeys = 0, kValues = 1 };
    static std::pair<SlotRows<2>, std::size_t> geometry(int d) {
      SlotRows<2> r;
      const std::size_t row = static_cast<std::size_t>(d) * sizeof(T);
      const std::size_t bytes = r.layout(kBlockTokens, {row, row});
      return {r, bytes};
    }
    static std::size_t block_bytes_of(int d) { return geometry(d).second; }
    T* row(Region r, std::size_t j) { return reinterpret_cast<T*>(rows_.row(table_, r, j)); }
    const T* row(Region r, std::size_t j) const {
      return reinterpret_cast<const T*>(rows_.row(table_, r, j));
    }

    int d_;
    SlotRows<2> rows_;
    BlockTable table_;
    std::size_t n_ = 0;
  };
};

/// The dense fp16 baseline (`KVCache<Policy<>>`).
using None = Dense<half>;
/// Dense fp32: the reference of the real-model evaluation.
using DenseF32 = Dense<float>;

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
