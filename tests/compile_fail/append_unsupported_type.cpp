// SPDX-License-Identifier: Apache-2.0
// Inputs are float, half or bfloat16; double is rejected at compile time.
// KVCOMPRESS_EXPECT_ERROR: inputs must be float, kvcompress::half or kvcompress::bfloat16
#include "kvcompress/kvcompress.hpp"

#ifdef KVCOMPRESS_SHOULD_FAIL
using T = double;
#else
using T = kvcompress::half;
#endif
void append_unsupported_type_probe(kvcompress::KVCache<kvcompress::Policy<>>& c, const T* k) { c.append(0, k, k, 1); }
