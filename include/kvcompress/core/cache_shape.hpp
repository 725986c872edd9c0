// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Model geometry of one cached sequence: layers, query/KV heads (MHA, GQA, MQA), head_dim and
/// the token capacity reserved up front.

#include <cstddef>
#include <string>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Geometry of a KVCache. `capacity` is the largest number of slots one (layer, KV head) holds at
/// once; every buffer is reserved for it at construction, so append/attend never allocate.
struct CacheShape {
  int num_layers = 0;        ///< L ≥ 1
  int num_q_heads = 0;       ///< Hq, a multiple of num_kv_heads
  int num_kv_heads = 0;      ///< Hkv ≥ 1 (Hkv = Hq: MHA; Hkv = 1: MQA)
  int head_dim = 0;          ///< d ∈ {64, 80, 96, 128, 256}
  std::size_t capacity = 0;  ///< slots per (layer, KV head), ≥ 1

  /// GQA group size n_rep = Hq / Hkv.
  int group_size() const { return num_q_heads / num_kv_heads; }

  /// Throws InvalidArgument naming the first bad field.
  void validate(const char* where) const {
    detail::require(num_layers >= 1, where, "num_layers", num_layers, ">= 1");
    detail::require(num_kv_heads >= 1, where, "num_kv_heads", num_kv_heads, ">= 1");
    detail::require(num_q_heads >= num_kv_heads && num_q_heads % num_kv_heads == 0, where,
                    "num_q_heads", num_q_heads,
                    "a positive multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")");
    detail::require(head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128 ||
                        head_dim == 256,
                    where, "head_dim", head_dim, "one of {64, 80, 96, 128, 256}");
    detail::require(capacity >= 1, where, "capacity", capacity, ">= 1");
  }
};

KVCOMPRESS_NAMESPACE_END
