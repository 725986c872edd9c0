// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Addressing of per-slot rows inside a stream's blocks. A block of `block_tokens` slots is split
/// into regions (e.g. keys then values); region r holds one fixed-size row per slot. Stores use
/// this for reading, writing and compacting (moving a slot's rows to a lower slot index).

#include <cstddef>
#include <cstring>

#include "kvcompress/core/block_pool.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Geometry of row regions in a block: region r starts at offset[r] and has rows of
/// row_bytes[r] bytes, one per slot.
template <int kRegions>
struct SlotRows {
  std::size_t block_tokens = 0;
  std::size_t row_bytes[kRegions] = {};
  std::size_t offset[kRegions] = {};

  /// Lays regions out back to back, each 64-byte aligned. Returns the block size.
  std::size_t layout(std::size_t tokens, const std::size_t (&bytes)[kRegions]) {
    block_tokens = tokens;
    std::size_t at = 0;
    for (int r = 0; r < kRegions; ++r) {
      row_bytes[r] = bytes[r];
      offset[r] = at;
      at = align_up(at + tokens * bytes[r]);
    }
    return at;
  }

  std::byte* row(BlockTable& t, int region, std::size_t slot) const {
    return t.block(slot / block_tokens) + offset[region] + (slot % block_tokens) * row_bytes[region];
  }
  const std::byte* row(const BlockTable& t, int region, std::size_t slot) const {
    return t.block(slot / block_tokens) + offset[region] + (slot % block_tokens) * row_bytes[region];
  }
  /// Blocks needed for n slots.
  std::size_t blocks_for(std::size_t n) const { return (n + block_tokens - 1) / block_tokens; }

  /// Moves the kept slots (keep[j] != 0, j < n) to the front in order; returns the new count.
  /// Safe in place because every destination index is ≤ its source index.
  std::size_t compact(BlockTable& t, int region, const unsigned char* keep, std::size_t n) const {
    std::size_t dst = 0;
    for (std::size_t j = 0; j < n; ++j) {
      if (!keep[j]) continue;
      if (dst != j) std::memcpy(row(t, region, dst), row(t, region, j), row_bytes[region]);
      ++dst;
    }
    return dst;
  }
};

KVCOMPRESS_NAMESPACE_END
