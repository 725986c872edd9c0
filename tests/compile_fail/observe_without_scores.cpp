// SPDX-License-Identifier: Apache-2.0
// observe() feeds eviction statistics; a policy without scores has none to feed.
// KVCOMPRESS_EXPECT_ERROR: uses no attention scores
#include "kvcompress/kvcompress.hpp"

#ifdef KVCOMPRESS_SHOULD_FAIL
using P = kvcompress::Policy<>;
#else
using P = kvcompress::Policy<kvcompress::evict::H2O>;
#endif
void observe_without_scores_probe(kvcompress::KVCache<P>& c, const float* q) { c.observe(0, q, 1); }
