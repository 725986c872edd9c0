// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// One Quant::Store on its own block pool with its scratch — what KVCache gives a stream — for
/// tests that drive a store directly (cq_test, akvq_vl_test, mixed_precision_test). A store
/// whose constructor takes its (layer, KV head) gets them; others ignore the two arguments.

#include <cstddef>
#include <memory>
#include <type_traits>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/token_info.hpp"

namespace kvtest {

template <class Q>
struct StoreHarness {
  using Store = typename Q::Store;
  typename Q::Config cfg;
  int d;
  kvcompress::BlockPool pool;
  std::unique_ptr<Store> store;
  std::vector<float> scratch;

  StoreHarness(int d_, const typename Q::Config& c, std::size_t capacity, int layer = 0, int kv_head = 0)
      : cfg(c), d(d_), pool(Store::block_bytes(d_, c), Store::max_blocks(capacity, c)),
        scratch(Store::scratch_floats(d_, c)) {
    kvcompress::BlockTable table(&pool, Store::max_blocks(capacity, c));
    if constexpr (std::is_constructible_v<Store, int, const typename Q::Config&, kvcompress::BlockTable, int, int>) {
      store = std::make_unique<Store>(d_, cfg, std::move(table), layer, kv_head);
    } else {
      store = std::make_unique<Store>(d_, cfg, std::move(table));
    }
  }

  /// Store::append of n rows [n][d] with the token facts (stores that take TokenInfo).
  void append(const float* k, const float* v, std::size_t n, const kvcompress::TokenInfo& info) {
    store->append(k, v, static_cast<std::size_t>(d), n, info, scratch.data());
  }
};

}  // namespace kvtest
