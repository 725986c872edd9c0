// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Storage shared by the Quant stores that keep one key row and one value row per slot, each row
/// self-contained (dense fp16/fp32, ggml blocks): rows live in blocks of BlockTokens slots
/// ([BlockTokens] key rows, then [BlockTokens] value rows, each region 64-byte aligned). This
/// base supplies every member of the Quant Store contract (core/policy_traits.hpp) that does not
/// depend on how a row is encoded — size, physical compaction, truncation, clear and whole-block
/// memory accounting — so derived stores only add append, logits, accumulate and read.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/slot_rows.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Per-slot key/value rows in blocks of BlockTokens slots.
template <std::size_t BlockTokens>
class TokenRowStore {
 public:
  static constexpr std::size_t kBlockTokens = BlockTokens;

  /// Bytes of one block for rows of the given sizes.
  static std::size_t block_bytes_for(std::size_t key_row_bytes, std::size_t value_row_bytes) {
    SlotRows<2> r;
    return r.layout(BlockTokens, {key_row_bytes, value_row_bytes});
  }
  /// Blocks one stream needs to hold `capacity` slots.
  static std::size_t max_blocks_for(std::size_t capacity) { return (capacity + BlockTokens - 1) / BlockTokens; }

  /// Physical slots.
  std::size_t size() const { return n_; }

  /// Every slot can be removed physically: retained = keep. Returns the size after compact().
  std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
    std::copy(keep, keep + n_, retained);
    return static_cast<std::size_t>(std::count_if(keep, keep + n_, [](std::uint8_t x) { return x != 0; }));
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
  std::size_t memory_bytes() const { return table_.size() * block_bytes_; }

 protected:
  TokenRowStore(std::size_t key_row_bytes, std::size_t value_row_bytes, BlockTable table)
      : table_(std::move(table)) {
    block_bytes_ = rows_.layout(BlockTokens, {key_row_bytes, value_row_bytes});
  }

  /// Grows the block table for n more slots and counts them; returns the first new slot index.
  std::size_t begin_append(std::size_t n) {
    table_.grow_to(rows_.blocks_for(n_ + n));
    const std::size_t first = n_;
    n_ += n;
    return first;
  }

  std::byte* key_row(std::size_t j) { return rows_.row(table_, kKeys, j); }
  std::byte* value_row(std::size_t j) { return rows_.row(table_, kValues, j); }
  const std::byte* key_row(std::size_t j) const { return rows_.row(table_, kKeys, j); }
  const std::byte* value_row(std::size_t j) const { return rows_.row(table_, kValues, j); }
  std::size_t key_row_bytes() const { return rows_.row_bytes[kKeys]; }
  std::size_t value_row_bytes() const { return rows_.row_bytes[kValues]; }

  /// Calls f(first_slot, count) for the slots of each block in order: rows of one block are
  /// contiguous, so kernels run once per block.
  template <class F>
  void for_each_block(F&& f) const {
    for (std::size_t j0 = 0; j0 < n_; j0 += BlockTokens) f(j0, std::min(BlockTokens, n_ - j0));
  }

 private:
  enum Region { kKeys = 0, kValues = 1 };
  SlotRows<2> rows_;
  BlockTable table_;
  std::size_t n_ = 0;
  std::size_t block_bytes_ = 0;
};

KVCOMPRESS_NAMESPACE_END
