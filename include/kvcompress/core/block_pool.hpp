// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Fixed-size block storage. A BlockPool carves one contiguous arena (its own, or memory the
/// engine hands in) into equal blocks and keeps a free list; a BlockTable is one stream's ordered
/// list of blocks. Both reserve everything up front, so acquiring and releasing blocks on the
/// decode path never touches the heap. Eviction returns whole blocks to the pool.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Alignment of every block (one cache line; also what AVX-512 aligned loads want).
inline constexpr std::size_t kBlockAlignment = 64;

/// Rounds `n` up to a multiple of kBlockAlignment.
constexpr std::size_t align_up(std::size_t n) {
  return (n + kBlockAlignment - 1) / kBlockAlignment * kBlockAlignment;
}

/// A pool of `num_blocks` blocks of `block_bytes` bytes each (block_bytes rounded up to 64).
class BlockPool {
 public:
  BlockPool() = default;
  // Movable (the cache assigns its pool after sizing it); the mutex is not moved: a pool is only
  // moved before any stream uses it.
  BlockPool(BlockPool&& o) noexcept { *this = std::move(o); }
  BlockPool& operator=(BlockPool&& o) noexcept {
    block_bytes_ = o.block_bytes_;
    num_blocks_ = o.num_blocks_;
    owned_ = std::move(o.owned_);
    base_ = o.base_;
    free_ = std::move(o.free_);
    o.base_ = nullptr;
    o.num_blocks_ = 0;
    return *this;
  }

  /// Owns its arena: allocates num_blocks·block_bytes bytes, 64-byte aligned.
  BlockPool(std::size_t block_bytes, std::size_t num_blocks)
      : block_bytes_(align_up(block_bytes)), num_blocks_(num_blocks) {
    if (num_blocks_ > 0) {
      owned_.reset(static_cast<std::byte*>(
          ::operator new(block_bytes_ * num_blocks_, std::align_val_t{kBlockAlignment})));
      base_ = owned_.get();
    }
    init_free_list();
  }

  /// Uses engine-provided memory: `arena` must be 64-byte aligned and hold at least
  /// required_bytes(block_bytes, num_blocks) bytes; it must outlive the pool.
  BlockPool(std::size_t block_bytes, std::size_t num_blocks, void* arena, std::size_t arena_bytes)
      : block_bytes_(align_up(block_bytes)), num_blocks_(num_blocks) {
    detail::require(arena != nullptr, "BlockPool", "arena", "nullptr", "a non-null pointer");
    detail::require(reinterpret_cast<std::uintptr_t>(arena) % kBlockAlignment == 0, "BlockPool",
                    "arena", arena, "a 64-byte aligned address");
    detail::require(arena_bytes >= block_bytes_ * num_blocks_, "BlockPool", "arena_bytes",
                    arena_bytes, ">= " + std::to_string(block_bytes_ * num_blocks_));
    base_ = static_cast<std::byte*>(arena);
    init_free_list();
  }

  /// Bytes an engine-provided arena needs for this geometry.
  static constexpr std::size_t required_bytes(std::size_t block_bytes, std::size_t num_blocks) {
    return align_up(block_bytes) * num_blocks;
  }

  std::size_t block_bytes() const { return block_bytes_; }
  std::size_t num_blocks() const { return num_blocks_; }
  std::size_t num_free() const { return free_.size(); }
  std::size_t num_used() const { return num_blocks_ - free_.size(); }

  /// Takes a free block; the caller has checked num_free() > 0 (capacity was validated).
  /// acquire and release are thread-safe: the streams of one cache grow and shrink concurrently
  /// (one task per KV head through the Executor).
  std::int32_t acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  /// Returns a block to the free list (never reallocates: capacity is num_blocks).
  void release(std::int32_t b) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(b);
  }

  std::byte* data(std::int32_t b) { return base_ + static_cast<std::size_t>(b) * block_bytes_; }
  const std::byte* data(std::int32_t b) const {
    return base_ + static_cast<std::size_t>(b) * block_bytes_;
  }

 private:
  struct AlignedDelete {
    void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t{kBlockAlignment}); }
  };
  void init_free_list() {
    free_.reserve(num_blocks_);
    // Hand out low block indices first so a fresh cache streams through ascending addresses.
    for (std::size_t i = num_blocks_; i-- > 0;) free_.push_back(static_cast<std::int32_t>(i));
  }

  std::size_t block_bytes_ = 0;
  std::size_t num_blocks_ = 0;
  std::unique_ptr<std::byte, AlignedDelete> owned_;
  std::byte* base_ = nullptr;
  std::vector<std::int32_t> free_;
  std::mutex mutex_;  // guards free_ in acquire/release
};

/// One stream's blocks, in slot order: block i holds slots [i·block_tokens, (i+1)·block_tokens).
class BlockTable {
 public:
  BlockTable() = default;
  BlockTable(BlockPool* pool, std::size_t max_blocks) : pool_(pool) { ids_.reserve(max_blocks); }

  std::size_t size() const { return ids_.size(); }
  std::byte* block(std::size_t i) { return pool_->data(ids_[i]); }
  const std::byte* block(std::size_t i) const { return pool_->data(ids_[i]); }

  /// Grows to at least `n` blocks (acquiring from the pool).
  void grow_to(std::size_t n) {
    while (ids_.size() < n) ids_.push_back(pool_->acquire());
  }
  /// Shrinks to `n` blocks, returning the rest to the pool.
  void shrink_to(std::size_t n) {
    while (ids_.size() > n) {
      pool_->release(ids_.back());
      ids_.pop_back();
    }
  }

 private:
  BlockPool* pool_ = nullptr;
  std::vector<std::int32_t> ids_;
};

KVCOMPRESS_NAMESPACE_END
