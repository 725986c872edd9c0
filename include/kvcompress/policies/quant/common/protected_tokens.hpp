// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-12 of methods/quantization.md, "protected fp16 token sets": a small fixed-capacity table of
/// tokens whose K and V are kept in fp16 although their slot lies inside a quantized token group
/// (OTT §8 outlier and extra pools, SubKV §9 attention sinks). The slot in the group is a
/// placeholder (quantized from a mean-replaced copy); attention and reads use the table's copy.
///
/// Entries are kept sorted by slot so the fused kernels can split quantized runs around them.
/// Each entry: slot (uint32), category (uint8, meaning chosen by the method) and the index
/// (uint16) of its key/value row pair in an Fp16RowPool (fp16_row_pool.hpp), so reordering moves
/// indices, not rows. Storage is allocated once at construction (bytes(): the pool's rows and
/// free list plus 7 bytes of entry fields per capacity entry); no operation allocates afterwards.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/policies/quant/common/fp16_row_pool.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Fixed-capacity, slot-sorted table of fp16 (K, V) copies of protected tokens.
class ProtectedTokens {
 public:
  /// \param capacity ≤ 65536 (uint16 row indices).
  ProtectedTokens(std::size_t capacity, int d)
      : cap_(capacity), d_(static_cast<std::size_t>(d)), slot_(capacity), cat_(capacity), row_(capacity),
        rows_(capacity, d_) {}

  /// Bytes held (the whole capacity): the row pool (2·d fp16 + a uint16 free-list entry per row)
  /// plus per entry a uint32 slot, a uint8 category and a uint16 row index.
  static std::size_t bytes(std::size_t capacity, int d) {
    return Fp16RowPool::bytes_for(capacity, static_cast<std::size_t>(d)) +
           capacity * (sizeof(std::uint32_t) + 1 + sizeof(std::uint16_t));
  }

  std::size_t size() const { return n_; }
  std::size_t capacity() const { return cap_; }
  std::size_t slot(std::size_t i) const { return slot_[i]; }
  std::uint8_t category(std::size_t i) const { return cat_[i]; }
  void set_category(std::size_t i, std::uint8_t c) { cat_[i] = c; }
  const half* key(std::size_t i) const { return rows_.key(row_[i]); }
  const half* value(std::size_t i) const { return rows_.value(row_[i]); }
  std::size_t count(std::uint8_t c) const {
    std::size_t x = 0;
    for (std::size_t i = 0; i < n_; ++i) x += cat_[i] == c;
    return x;
  }
  /// Index of the entry for `slot`, or size().
  std::size_t find(std::size_t slot) const {
    const auto it = std::lower_bound(slot_.begin(), slot_.begin() + static_cast<std::ptrdiff_t>(n_),
                                     static_cast<std::uint32_t>(slot));
    const std::size_t i = static_cast<std::size_t>(it - slot_.begin());
    return i < n_ && slot_[i] == slot ? i : n_;
  }

  /// Inserts (slot, category, fp16(k), fp16(v)); the caller guarantees size() < capacity() and
  /// that slot is not present.
  void insert(std::size_t slot, std::uint8_t category, const float* k, const float* v) {
    std::size_t i = n_;
    while (i > 0 && slot_[i - 1] > slot) {
      move(i - 1, i);
      --i;
    }
    slot_[i] = static_cast<std::uint32_t>(slot);
    cat_[i] = category;
    row_[i] = rows_.acquire();
    kernels::convert(k, rows_.key(row_[i]), d_, best_isa{});
    kernels::convert(v, rows_.value(row_[i]), d_, best_isa{});
    ++n_;
  }

  /// Drops entries with slot ≥ m.
  void truncate(std::size_t m) {
    while (n_ > 0 && slot_[n_ - 1] >= m) rows_.release(row_[--n_]);
  }

  /// After a compaction with retained flags r[]: entries of dropped slots go, the others get
  /// their new slot index (number of retained slots before them).
  void compact(const std::uint8_t* retained, std::size_t n_slots) {
    std::size_t o = 0, kept_before = 0, e = 0;
    for (std::size_t j = 0; j < n_slots && e < n_; ++j) {
      if (slot_[e] == j) {
        if (retained[j]) {
          if (o != e) move(e, o);
          slot_[o++] = static_cast<std::uint32_t>(kept_before);
        } else {
          rows_.release(row_[e]);
        }
        ++e;
      }
      kept_before += retained[j] ? 1 : 0;
    }
    n_ = o;
  }

  void clear() {
    n_ = 0;
    rows_.reset();
  }

 private:
  void move(std::size_t from, std::size_t to) {
    slot_[to] = slot_[from];
    cat_[to] = cat_[from];
    row_[to] = row_[from];
  }

  std::size_t cap_, d_, n_ = 0;
  std::vector<std::uint32_t> slot_;
  std::vector<std::uint8_t> cat_;
  std::vector<std::uint16_t> row_;
  Fp16RowPool rows_;
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
