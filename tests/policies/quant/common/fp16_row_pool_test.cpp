// SPDX-License-Identifier: Apache-2.0
// common/fp16_row_pool.hpp: rows are distinct, released rows are reused, reset frees all, the
// byte count is exact.

#include "kvcompress/policies/quant/common/fp16_row_pool.hpp"

#include <gtest/gtest.h>

#include <set>

namespace {

namespace qc = kvcompress::quant::common;

TEST(Fp16RowPool, AcquireReleaseResetAndBytes) {
  qc::Fp16RowPool pool(5, 8);
  EXPECT_EQ(pool.capacity(), 5u);
  EXPECT_EQ(pool.memory_bytes(), 2u * 5 * 8 * 2 + 5 * 2);
  EXPECT_EQ(pool.memory_bytes(), qc::Fp16RowPool::bytes_for(5, 8));
  std::set<std::uint16_t> got;
  for (int i = 0; i < 5; ++i) got.insert(pool.acquire());
  EXPECT_EQ(got.size(), 5u);
  EXPECT_EQ(pool.num_free(), 0u);
  pool.key(3)[7] = kvcompress::half{0x3c00};
  pool.value(3)[0] = kvcompress::half{0x4000};
  EXPECT_EQ(pool.key(3)[7].bits, 0x3c00);
  EXPECT_EQ(pool.value(3)[0].bits, 0x4000);
  EXPECT_EQ(pool.key(4) - pool.key(3), 8);
  pool.release(2);
  EXPECT_EQ(pool.acquire(), 2);
  pool.reset();
  EXPECT_EQ(pool.num_free(), 5u);
  EXPECT_EQ(pool.num_used(), 0u);
}

}  // namespace
