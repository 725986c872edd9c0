// SPDX-License-Identifier: Apache-2.0
// KIVI key groups are whole 16-token tiles of the packed layout, and R must be a multiple of G.
// KVCOMPRESS_EXPECT_ERROR: GroupSize must be a positive multiple of 16
#include "kvcompress/kvcompress.hpp"

#ifdef KVCOMPRESS_SHOULD_FAIL
using Q = kvcompress::quant::Kivi<2, 2, 24, 96>;
#else
using Q = kvcompress::quant::Kivi<2, 2, 32, 96>;
#endif
int kivi_bad_group_probe() { return Q::kGroupSize; }
