// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// A fixed number of fp16 key/value row pairs with a free list: the full-precision side storage of
/// stores that keep a few slots exact — a recent window of R slots (CQ's optional fp16 window,
/// AKVQ-VL's R = 128, BB-13) and protected tokens (AKVQ-VL pivots, BB-12). A slot refers to its
/// row by index, so physical compaction of the slot order never moves rows. Everything is
/// reserved at construction; acquire/release never allocate.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/float16.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// `rows` pairs of d-element fp16 rows (key, value).
class Fp16RowPool {
 public:
  Fp16RowPool() = default;
  Fp16RowPool(std::size_t rows, std::size_t d) : d_(d), k_(rows * d), v_(rows * d) {
    free_.reserve(rows);
    for (std::size_t i = rows; i-- > 0;) free_.push_back(static_cast<std::uint16_t>(i));
  }

  std::size_t capacity() const { return k_.size() / (d_ ? d_ : 1); }
  std::size_t num_free() const { return free_.size(); }
  std::size_t num_used() const { return capacity() - free_.size(); }

  /// Takes a free row (caller checked num_free() > 0).
  std::uint16_t acquire() {
    const std::uint16_t r = free_.back();
    free_.pop_back();
    return r;
  }
  void release(std::uint16_t r) { free_.push_back(r); }
  /// Returns every row to the free list.
  void reset() {
    free_.clear();
    for (std::size_t i = capacity(); i-- > 0;) free_.push_back(static_cast<std::uint16_t>(i));
  }

  half* key(std::size_t r) { return k_.data() + r * d_; }
  half* value(std::size_t r) { return v_.data() + r * d_; }
  const half* key(std::size_t r) const { return k_.data() + r * d_; }
  const half* value(std::size_t r) const { return v_.data() + r * d_; }

  /// Bytes held: the rows and the free list.
  std::size_t memory_bytes() const {
    return (k_.size() + v_.size()) * sizeof(half) + free_.capacity() * sizeof(std::uint16_t);
  }
  /// memory_bytes() of a pool of `rows` rows of dimension d.
  static std::size_t bytes_for(std::size_t rows, std::size_t d) {
    return 2 * rows * d * sizeof(half) + rows * sizeof(std::uint16_t);
  }

 private:
  std::size_t d_ = 0;
  std::vector<half> k_, v_;            // [rows][d] each
  std::vector<std::uint16_t> free_;    // free row indices (LIFO)
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
