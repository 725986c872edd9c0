// SPDX-License-Identifier: Apache-2.0
// A Quant policy without a nested Store is rejected with a message naming the member.
// KVCOMPRESS_EXPECT_ERROR: Quant policy needs a nested `class Store`
#include "kvcompress/kvcompress.hpp"

namespace {
struct NoStore {
  static constexpr const char* kName = "no_store";
  static constexpr float kMaxAbsInput = 1.0f;
  struct Config {
    void validate(const kvcompress::CacheShape&) const {}
  };
};
}  // namespace

#ifdef KVCOMPRESS_SHOULD_FAIL
using Bad = kvcompress::Policy<kvcompress::evict::None, kvcompress::merge::None, NoStore>;
#else
using Bad = kvcompress::Policy<>;
#endif
std::size_t quant_missing_store_probe() { return sizeof(kvcompress::KVCache<Bad>); }
