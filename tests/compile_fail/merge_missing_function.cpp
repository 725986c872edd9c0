// SPDX-License-Identifier: Apache-2.0
// A Merge policy must provide the static merge() the cache calls at end_prefill.
// KVCOMPRESS_EXPECT_ERROR: Merge policy needs
#include "kvcompress/kvcompress.hpp"

namespace {
struct NoMerge {
  static constexpr const char* kName = "no_merge";
  struct Config {
    void validate(const kvcompress::CacheShape&) const {}
  };
#ifndef KVCOMPRESS_SHOULD_FAIL
  static void merge(const Config&, const kvcompress::SlotView&, const std::uint8_t*, float*, float*, std::size_t) {}
#endif
};
}  // namespace

std::size_t merge_missing_function_probe() {
  return sizeof(kvcompress::KVCache<kvcompress::Policy<kvcompress::evict::None, NoMerge>>);
}
