// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-10 of methods/quantization.md, storage half: `TokenSparse`, the append-friendly sparse
/// outlier store of one (layer, KV head). One row per token, so it is CSR over tokens for values
/// and CSC over the token columns of Kᵀ for keys (KVQuant App. R; GEAR's sparse matrix S).
///
/// Layout ([rec] of BB-10, chosen so the pointer cost does not dominate a per-head store):
///   counts        [T]            uint8 per token (uint16 when head_dim > 255): outliers of token t
///   block_offsets [⌈T/B⌉]        uint32: index of the first entry of token block b (B tokens each)
///   idx           [nnz]          uint16 channel index within the head's d-vector, ascending per token
///   val           [nnz]          fp16 value
/// Token t's entries start at block_offsets[t/B] + Σ counts of the earlier tokens of its block.
/// memory_bytes() = T·count_bytes + 4·⌈T/B⌉ + 4·nnz exactly, i.e. 8/d + 32/(B·d) + 32·nnz/(T·d)
/// bits per cached element at uint8 counts (KVQuant's whole-hidden accounting, 16-bit value +
/// 16-bit index + a 32-bit pointer per token, is a different layout; compare bpe against this).
///
/// Reconstruction contract [rec]: at an outlier position the dense code is ignored and the stored
/// value is used verbatim (scatter()), so fp16 inputs are reproduced bit for bit.
/// Removing a token (eviction, BB-16 rule 2) is a cold O(T + nnz) path.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>  // float16.hpp uses std::is_same_v
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/float16.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Sparse fp16 outliers of one (layer, KV head), one row per token (layout in the file comment).
class TokenSparse {
 public:
  /// \param head_dim         d ∈ [1, 65535]: channel indices are < d.
  /// \param tokens_per_block B ≥ 1: tokens sharing one uint32 offset (the cache's token block).
  TokenSparse(std::size_t head_dim, std::size_t tokens_per_block)
      : head_dim_(head_dim), tokens_per_block_(tokens_per_block), count_bytes_(head_dim > 255 ? 2 : 1) {
    constexpr const char* where = "quant::common::TokenSparse";
    kvcompress::detail::require(head_dim >= 1 && head_dim <= 65535, where, "head_dim", head_dim,
                                "a head dimension in [1, 65535] (uint16 indices)");
    kvcompress::detail::require(tokens_per_block >= 1, where, "tokens_per_block", tokens_per_block, "≥ 1");
  }

  std::size_t head_dim() const { return head_dim_; }
  std::size_t tokens_per_block() const { return tokens_per_block_; }
  /// Bytes of one per-token count: 1 (uint8) for head_dim ≤ 255, else 2 (uint16).
  std::size_t count_bytes() const { return count_bytes_; }
  /// Number of token rows.
  std::size_t tokens() const { return counts_.size() / count_bytes_; }
  /// Number of stored outliers.
  std::size_t nnz() const { return idx_.size(); }

  /// Appends token row T with `count` outliers at ascending channel indices idx[0..count),
  /// storing fp16(row[idx[k]]). Throws InvalidArgument (store unchanged) for count > head_dim,
  /// an index ≥ head_dim or not strictly ascending, a non-finite or beyond-fp16 value, or more
  /// than 2^32 − 1 entries.
  /// \param row the token's dense d-vector (only the outlier positions are read).
  void append_token(const float* row, const std::uint16_t* idx, std::size_t count) {
    constexpr const char* where = "quant::common::TokenSparse::append_token";
    kvcompress::detail::require(count <= head_dim_, where, "count", count,
                                "≤ head_dim = " + std::to_string(head_dim_));
    kvcompress::detail::require(nnz() + count <= std::numeric_limits<std::uint32_t>::max(), where, "count",
                                count, "a total below 2^32 entries (uint32 offsets)");
    for (std::size_t k = 0; k < count; ++k) {
      const std::string name = "idx[" + std::to_string(k) + "]";
      kvcompress::detail::require(idx[k] < head_dim_, where, name.c_str(), idx[k],
                                  "< head_dim = " + std::to_string(head_dim_));
      kvcompress::detail::require(k == 0 || idx[k] > idx[k - 1], where, name.c_str(), idx[k],
                                  "strictly ascending indices");
      const float v = row[idx[k]];
      kvcompress::detail::require(std::isfinite(v) && std::fabs(v) <= kHalfMax, where, "row[idx]", v,
                                  "a finite value with |v| ≤ 65504 (fp16 storage)");
    }
    if (tokens() % tokens_per_block_ == 0) block_offsets_.push_back(static_cast<std::uint32_t>(nnz()));
    push_count(count);
    for (std::size_t k = 0; k < count; ++k) {
      idx_.push_back(idx[k]);
      val_.push_back(half{f32_to_f16_bits(row[idx[k]])});
    }
  }

  /// Number of outliers of token t.
  std::size_t token_count(std::size_t t) const {
    check_token("quant::common::TokenSparse::token_count", t);
    return count_at(t);
  }

  /// Index (into index()/value()) of token t's first outlier.
  std::size_t token_begin(std::size_t t) const {
    check_token("quant::common::TokenSparse::token_begin", t);
    std::size_t begin = block_offsets_[t / tokens_per_block_];
    for (std::size_t u = t - t % tokens_per_block_; u < t; ++u) begin += count_at(u);
    return begin;
  }

  /// Channel index of entry k.
  std::uint16_t index(std::size_t k) const { return idx_[k]; }
  /// Value of entry k (the stored fp16, widened exactly).
  float value(std::size_t k) const { return to_float(val_[k]); }

  /// Overwrites row[c] with the stored value at each of token t's outlier channels c (the dense
  /// reconstruction there is ignored).
  void scatter(std::size_t t, float* row) const {
    const std::size_t begin = token_begin(t), end = begin + count_at(t);
    for (std::size_t k = begin; k < end; ++k) row[idx_[k]] = to_float(val_[k]);
  }

  /// Removes token row t; later rows move down by one (slot compaction after eviction).
  void erase_token(std::size_t t) {
    const std::size_t begin = token_begin(t), count = count_at(t);
    idx_.erase(idx_.begin() + static_cast<std::ptrdiff_t>(begin),
               idx_.begin() + static_cast<std::ptrdiff_t>(begin + count));
    val_.erase(val_.begin() + static_cast<std::ptrdiff_t>(begin),
               val_.begin() + static_cast<std::ptrdiff_t>(begin + count));
    counts_.erase(counts_.begin() + static_cast<std::ptrdiff_t>(t * count_bytes_),
                  counts_.begin() + static_cast<std::ptrdiff_t>((t + 1) * count_bytes_));
    rebuild_offsets();
  }

  /// Removes every row.
  void clear() {
    counts_.clear();
    block_offsets_.clear();
    idx_.clear();
    val_.clear();
  }

  /// Bytes of the layout as stored (sizes, not allocator capacity):
  /// T·count_bytes + 4·⌈T/B⌉ + (2 + 2)·nnz.
  std::size_t memory_bytes() const {
    return counts_.size() + block_offsets_.size() * sizeof(std::uint32_t) +
           idx_.size() * sizeof(std::uint16_t) + val_.size() * sizeof(half);
  }

 private:
  void check_token(const char* where, std::size_t t) const {
    kvcompress::detail::require(t < tokens(), where, "t", t, "a token row < " + std::to_string(tokens()));
  }

  std::size_t count_at(std::size_t t) const {
    if (count_bytes_ == 1) return counts_[t];
    std::uint16_t c;
    std::memcpy(&c, &counts_[2 * t], sizeof c);
    return c;
  }

  void push_count(std::size_t count) {
    if (count_bytes_ == 1) {
      counts_.push_back(static_cast<std::uint8_t>(count));
      return;
    }
    const std::uint16_t c = static_cast<std::uint16_t>(count);
    std::uint8_t bytes[2];
    std::memcpy(bytes, &c, sizeof c);
    counts_.insert(counts_.end(), bytes, bytes + 2);
  }

  void rebuild_offsets() {
    block_offsets_.clear();
    std::uint32_t running = 0;
    for (std::size_t t = 0; t < tokens(); ++t) {
      if (t % tokens_per_block_ == 0) block_offsets_.push_back(running);
      running += static_cast<std::uint32_t>(count_at(t));
    }
  }

  std::size_t head_dim_;
  std::size_t tokens_per_block_;
  std::size_t count_bytes_;
  std::vector<std::uint8_t> counts_;          // [T·count_bytes_] little-endian counts
  std::vector<std::uint32_t> block_offsets_;  // [⌈T/B⌉] first entry of each token block
  std::vector<std::uint16_t> idx_;            // [nnz] channel indices
  std::vector<half> val_;                     // [nnz] fp16 values
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
