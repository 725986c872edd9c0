// SPDX-License-Identifier: Apache-2.0
// Self-check of the compile-fail harness: with KVCOMPRESS_SHOULD_FAIL the static_assert below
// fires, without it this file is an ordinary translation unit that includes the library.
// KVCOMPRESS_EXPECT_ERROR: static assertion failed.*harness self-check
#include "kvcompress/config.hpp"

#ifdef KVCOMPRESS_SHOULD_FAIL
static_assert(sizeof(int) == 3, "harness self-check: this must not compile");
#endif

int kvcompress_compile_fail_harness_selfcheck() { return 0; }
