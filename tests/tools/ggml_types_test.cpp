// SPDX-License-Identifier: Apache-2.0
// Dequantization of every supported ggml block type. Each test builds blocks from chosen integer
// codes by the layout ggml documents (an encoder written independently of the decoder) and checks
// the decoded floats against values computed by hand from those codes; all values are exact in
// fp32, so the comparisons are exact.
#include "ggml_types.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using kvllama::dequantize_row;
using kvllama::GgmlType;

constexpr std::uint32_t id(GgmlType t) { return static_cast<std::uint32_t>(t); }

void put_f16(std::uint8_t* p, std::uint16_t bits) { std::memcpy(p, &bits, 2); }

constexpr std::uint16_t kHalfOne = 0x3C00, kHalfHalf = 0x3800, kHalfQuarter = 0x3400, kHalfMinusOne = 0xBC00;

std::vector<float> decode(GgmlType t, const std::vector<std::uint8_t>& block, int n) {
  std::vector<float> y(static_cast<std::size_t>(n));
  dequantize_row(id(t), block.data(), y.data(), n);
  return y;
}

TEST(Dequantize, Q4_0) {
  std::vector<std::uint8_t> b(18);
  put_f16(b.data(), kHalfHalf);                                            // d = 0.5
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = decode(GgmlType::kQ4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;                                  // low nibbles first
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f) << j;                        // then high nibbles
  }
  EXPECT_EQ(y[0], -4.0f);  // hand check: code 0 → (0 − 8)·0.5
}

TEST(Dequantize, Q4_1) {
  std::vector<std::uint8_t> b(20);
  put_f16(b.data(), kHalfQuarter);   // d = 0.25
  put_f16(b.data() + 2, kHalfMinusOne);  // m = −1
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = decode(GgmlType::kQ4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f) << j;
    EXPECT_EQ(y[j + 16], (15 - j) * 0.25f - 1.0f) << j;
  }
  EXPECT_EQ(y[16], 2.75f);  // hand check: code 15 → 15·0.25 − 1
}

/// Packs 32 five-bit codes the Q5 way: low nibbles of j and j+16 share qs[j], the fifth bits
/// go to bit j (element j) and bit j+16 (element j+16) of qh.
void pack_q5(const int* q, std::uint8_t* qh_out, std::uint8_t* qs) {
  std::uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<std::uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
    qh |= static_cast<std::uint32_t>(q[j] >> 4) << j;
    qh |= static_cast<std::uint32_t>(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(qh_out, &qh, 4);
}

TEST(Dequantize, Q5_0) {
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 7 + 3) % 32;
  std::vector<std::uint8_t> b(22);
  put_f16(b.data(), kHalfHalf);
  pack_q5(q, b.data() + 2, b.data() + 6);
  const std::vector<float> y = decode(GgmlType::kQ5_0, b, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], (q[i] - 16) * 0.5f) << i;
  EXPECT_EQ(y[1], -3.0f);  // hand check: q = 10 → (10 − 16)·0.5
}

TEST(Dequantize, Q5_1) {
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 11 + 5) % 32;
  std::vector<std::uint8_t> b(24);
  put_f16(b.data(), kHalfQuarter);
  put_f16(b.data() + 2, kHalfOne);
  pack_q5(q, b.data() + 4, b.data() + 8);
  const std::vector<float> y = decode(GgmlType::kQ5_1, b, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], q[i] * 0.25f + 1.0f) << i;
  EXPECT_EQ(y[2], 7.75f);  // hand check: q = 27 → 27·0.25 + 1
}

TEST(Dequantize, Q8_0) {
  std::vector<std::uint8_t> b(34);
  put_f16(b.data(), kHalfQuarter);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128));
  const std::vector<float> y = decode(GgmlType::kQ8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.25f) << j;
  EXPECT_EQ(y[0], -32.0f);
}

TEST(Dequantize, Q6_K) {
  // 256 six-bit codes, 16 int8 scales (one per 16 elements), d = 0.5.
  int q[256];
  std::int8_t sc[16];
  for (int i = 0; i < 256; ++i) q[i] = (i * 37 + 11) % 64;
  for (int s = 0; s < 16; ++s) sc[s] = static_cast<std::int8_t>(s * 9 - 70);
  std::vector<std::uint8_t> b(210, 0);
  std::uint8_t* ql = b.data();
  std::uint8_t* qh = b.data() + 128;
  std::memcpy(b.data() + 192, sc, 16);
  put_f16(b.data() + 208, kHalfHalf);
  // Element i: half h = i/128, quadrant c = (i%128)/32, lane l = i%32. Low 4 bits in
  // ql[64h + l + 32(c&1)] (low nibble for c < 2, high for c ≥ 2); high 2 bits at bit 2c of
  // qh[32h + l]; scale sc[8h + l/16 + 2c].
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, c = (i % 128) / 32, l = i % 32;
    std::uint8_t& lo = ql[64 * h + l + 32 * (c & 1)];
    lo = static_cast<std::uint8_t>(lo | ((q[i] & 15) << (c >= 2 ? 4 : 0)));
    qh[32 * h + l] = static_cast<std::uint8_t>(qh[32 * h + l] | ((q[i] >> 4) << (2 * c)));
  }
  const std::vector<float> y = decode(GgmlType::kQ6_K, b, 256);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, c = (i % 128) / 32, l = i % 32;
    EXPECT_EQ(y[i], 0.5f * sc[8 * h + l / 16 + 2 * c] * (q[i] - 32)) << i;
  }
  EXPECT_EQ(y[0], 0.5f * -70 * (11 - 32));  // hand check: element 0 uses scale 0 and q = 11
}

TEST(Dequantize, F16AndBF16) {
  std::vector<std::uint8_t> h(4);
  put_f16(h.data(), kHalfMinusOne);
  put_f16(h.data() + 2, 0x7BFF);  // 65504, the largest half
  EXPECT_EQ(decode(GgmlType::kF16, h, 2), (std::vector<float>{-1.0f, 65504.0f}));
  std::vector<std::uint8_t> bf(4);
  put_f16(bf.data(), 0x3F80);  // bf16 1.0
  put_f16(bf.data() + 2, 0xC0A0);  // bf16 −5.0
  EXPECT_EQ(decode(GgmlType::kBF16, bf, 2), (std::vector<float>{1.0f, -5.0f}));
}

TEST(Dequantize, RejectsPartialBlocksAndUnknownTypes) {
  std::vector<std::uint8_t> b(64);
  std::vector<float> y(64);
  EXPECT_THROW(dequantize_row(id(GgmlType::kQ4_0), b.data(), y.data(), 31), std::runtime_error);
  EXPECT_THROW(kvllama::type_traits(12), std::runtime_error);  // Q4_K: not supported
}

}  // namespace
