// SPDX-License-Identifier: Apache-2.0
// An Evict policy that does not say whether it decides per head and uses scores is rejected.
// KVCOMPRESS_EXPECT_ERROR: kPerHead, kNeedsScores
#include "kvcompress/kvcompress.hpp"

namespace {
struct NoFlags {
  static constexpr const char* kName = "no_flags";
  struct Config {
    void validate(const kvcompress::CacheShape&) const {}
  };
  template <class C>
  static void make_room(const C&, const kvcompress::SlotView&, std::size_t, std::uint8_t*) {}
  template <class C>
  static void on_prefill_end(const C&, kvcompress::PrefillContext&) {}
};
}  // namespace

#ifdef KVCOMPRESS_SHOULD_FAIL
using Bad = kvcompress::Policy<NoFlags>;
#else
using Bad = kvcompress::Policy<kvcompress::evict::StreamingLLM>;
#endif
std::size_t evict_missing_flags_probe() { return sizeof(kvcompress::KVCache<Bad>); }
