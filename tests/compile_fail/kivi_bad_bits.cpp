// SPDX-License-Identifier: Apache-2.0
// KIVI supports 2, 4 and 8 bits only.
// KVCOMPRESS_EXPECT_ERROR: KBits must be 2, 4 or 8
#include "kvcompress/kvcompress.hpp"

#ifdef KVCOMPRESS_SHOULD_FAIL
using Q = kvcompress::quant::Kivi<3, 2>;
#else
using Q = kvcompress::quant::Kivi<4, 2>;
#endif
int kivi_bad_bits_probe() { return Q::kKeyBits; }
