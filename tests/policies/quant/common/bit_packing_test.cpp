// SPDX-License-Identifier: Apache-2.0
// BB-4 (quantization.md §0): every packing layout byte for byte — the spec's worked words, the
// ggml q4_0/q4_1 examples, hand-written P-CALIB/P-KVQ/trit bytes — exhaustive round trips over
// every code at every position, converters against direct packing, argument checks. Expected
// words are built arithmetically (code · 2^shift sums), not with the packers under test.

#include "support/expect_invalid.hpp"
#include "kvcompress/policies/quant/common/bit_packing.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

namespace qc = kvcompress::quant::common;

std::vector<std::uint8_t> random_codes(std::size_t n, int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> c(n);
  for (auto& v : c) v = static_cast<std::uint8_t>(rng() % (1u << bits));
  return c;
}

TEST(PKivi, SpecWorkedWords) {
  std::uint8_t ramp[16];
  for (int i = 0; i < 16; ++i) ramp[i] = static_cast<std::uint8_t>(i % 4);
  std::uint32_t w[1] = {0xdeadbeefu};
  qc::pack_pkivi(ramp, 16, 2, w);
  EXPECT_EQ(w[0], 0xE4E4E4E4u);
  const std::uint8_t kivi[4] = {1, 0, 3, 2};  // §1 worked example, partial word zero-padded
  qc::pack_pkivi(kivi, 4, 2, w);
  EXPECT_EQ(w[0], 0x000000B1u);
  const std::uint8_t nib[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  qc::pack_pkivi(nib, 8, 4, w);
  EXPECT_EQ(w[0], 0x87654321u);
}

// For every b, every position j in a word and every code value: the word equals Σ code·2^(b·j)
// and unpacks to the input.
TEST(PKivi, ExhaustiveEveryCodeEveryPosition) {
  for (int bits : {1, 2, 4, 8}) {
    const std::size_t per = 32 / bits;
    auto base = random_codes(per, bits, 11u + bits);
    for (std::size_t j = 0; j < per; ++j) {
      for (unsigned code = 0; code < (1u << bits); ++code) {
        auto codes = base;
        codes[j] = static_cast<std::uint8_t>(code);
        std::uint64_t expect = 0;
        for (std::size_t i = 0; i < per; ++i) expect += static_cast<std::uint64_t>(codes[i]) << (bits * i);
        std::uint32_t w = 0;
        qc::pack_pkivi(codes.data(), per, bits, &w);
        ASSERT_EQ(w, expect) << bits << " " << j << " " << code;
        std::vector<std::uint8_t> back(per);
        qc::unpack_pkivi(&w, per, bits, back.data());
        ASSERT_EQ(back, codes);
      }
    }
  }
}

TEST(PKivi, TailsAndLongRuns) {
  for (int bits : {1, 2, 4, 8}) {
    for (std::size_t n : {1u, 5u, 31u, 33u, 100u}) {
      auto codes = random_codes(n, bits, 100u * bits + static_cast<std::uint32_t>(n));
      std::vector<std::uint32_t> w(qc::pkivi_word_count(n, bits), 0xffffffffu);
      qc::pack_pkivi(codes.data(), n, bits, w.data());
      // Padding bits of the last word are zero.
      const std::size_t used = (n * bits) % 32;
      if (used != 0) {
        EXPECT_EQ(w.back() >> used, 0u) << bits << " " << n;
      }
      std::vector<std::uint8_t> back(n);
      qc::unpack_pkivi(w.data(), n, bits, back.data());
      EXPECT_EQ(back, codes) << bits << " " << n;
      EXPECT_EQ(w.size(), (n * bits + 31) / 32);
    }
  }
}

TEST(PCalib, HandWrittenBytesMsbFirst) {
  const std::uint8_t one[8] = {1, 0, 1, 1, 0, 0, 0, 1};
  std::uint8_t b[2] = {0xff, 0xff};
  qc::pack_pcalib(one, 8, 1, b);
  EXPECT_EQ(b[0], 0xB1);  // 0b10110001
  const std::uint8_t two[4] = {3, 0, 1, 2};
  qc::pack_pcalib(two, 4, 2, b);
  EXPECT_EQ(b[0], 0xC6);  // 0b11'00'01'10
  const std::uint8_t four[3] = {0xA, 0x5, 0x3};
  qc::pack_pcalib(four, 3, 4, b);
  EXPECT_EQ(b[0], 0xA5);
  EXPECT_EQ(b[1], 0x30);  // partial byte: code in the high nibble, low nibble zero
}

TEST(PCalib, ExhaustiveEveryCodeEveryPosition) {
  for (int bits : {1, 2, 4, 8}) {
    const std::size_t per = 8 / bits;
    for (std::size_t j = 0; j < per; ++j) {
      for (unsigned code = 0; code < (1u << bits); ++code) {
        std::vector<std::uint8_t> codes(per, 0);
        codes[j] = static_cast<std::uint8_t>(code);
        std::uint8_t byte = 0xff;
        qc::pack_pcalib(codes.data(), per, bits, &byte);
        ASSERT_EQ(byte, code << (bits * (per - 1 - j))) << bits << " " << j;
        std::vector<std::uint8_t> back(per);
        qc::unpack_pcalib(&byte, per, bits, back.data());
        ASSERT_EQ(back, codes);
      }
    }
    auto codes = random_codes(77, bits, 9u + bits);
    std::vector<std::uint8_t> bytes(qc::pcalib_byte_count(77, bits));
    qc::pack_pcalib(codes.data(), 77, bits, bytes.data());
    std::vector<std::uint8_t> back(77);
    qc::unpack_pcalib(bytes.data(), 77, bits, back.data());
    EXPECT_EQ(back, codes);
  }
}

// §10: q4_0 codes [12, 0, 10, 8, 8 …] → qs[0] = 0x8C, qs[1] = 0x80; q4_1 codes
// [15, 0, 13, 10, 10 …] → qs[0] = 0xAF.
TEST(PGgml, SpecWorkedBytes) {
  std::vector<std::uint8_t> q40(32, 8);
  q40[0] = 12;
  q40[1] = 0;
  q40[2] = 10;
  std::uint8_t qs[16];
  qc::pack_ggml_q4(q40.data(), 32, qs);
  EXPECT_EQ(qs[0], 0x8C);
  EXPECT_EQ(qs[1], 0x80);
  EXPECT_EQ(qs[2], 0x8A);
  std::vector<std::uint8_t> q41(32, 10);
  q41[0] = 15;
  q41[1] = 0;
  q41[2] = 13;
  qc::pack_ggml_q4(q41.data(), 32, qs);
  EXPECT_EQ(qs[0], 0xAF);
}

TEST(PGgml, ExhaustiveNibblePairsEveryByte) {
  for (std::size_t j = 0; j < 16; ++j) {
    for (unsigned lo = 0; lo < 16; ++lo) {
      for (unsigned hi = 0; hi < 16; ++hi) {
        std::vector<std::uint8_t> codes(64, 0);
        codes[32 + j] = static_cast<std::uint8_t>(lo);       // second block
        codes[32 + j + 16] = static_cast<std::uint8_t>(hi);
        std::uint8_t qs[32];
        qc::pack_ggml_q4(codes.data(), 64, qs);
        ASSERT_EQ(qs[16 + j], lo + 16 * hi);
        std::vector<std::uint8_t> back(64);
        qc::unpack_ggml_q4(qs, 64, back.data());
        ASSERT_EQ(back, codes);
      }
    }
  }
}

// P-KVQ: channel c of a token at bits 4·(c mod 8) of word c/8; word i at words[i·stride].
TEST(PKvq, HandWrittenColumnAndStride) {
  std::uint8_t codes[16];
  for (int c = 0; c < 16; ++c) codes[c] = static_cast<std::uint8_t>(c < 8 ? c : 15 - (c - 8));
  std::vector<std::uint32_t> m(2 * 5, 0);  // [d/8 = 2][max_T = 5], token column 0
  qc::pack_kvq_token(codes, 16, m.data(), 5);
  EXPECT_EQ(m[0], 0x76543210u);
  EXPECT_EQ(m[5], 0x89ABCDEFu);
  for (std::size_t i : {1u, 2u, 3u, 4u, 6u, 7u, 8u, 9u}) EXPECT_EQ(m[i], 0u);
  std::uint8_t back[16];
  qc::unpack_kvq_token(m.data(), 5, 16, back);
  for (int c = 0; c < 16; ++c) EXPECT_EQ(back[c], codes[c]);
}

TEST(PKvq, ExhaustiveAndIdenticalToFourBitPKiviWords) {
  for (std::size_t c = 0; c < 8; ++c) {
    for (unsigned code = 0; code < 16; ++code) {
      std::uint8_t codes[8] = {};
      codes[c] = static_cast<std::uint8_t>(code);
      std::uint32_t kvq = 0, kivi = 0;
      qc::pack_kvq_token(codes, 8, &kvq, 1);
      qc::pack_pkivi(codes, 8, 4, &kivi);
      ASSERT_EQ(kvq, static_cast<std::uint32_t>(code) << (4 * c));
      ASSERT_EQ(kvq, kivi);
    }
  }
  auto codes = random_codes(128, 4, 17);
  std::vector<std::uint32_t> kivi(16), kvq(16 * 7, 0), again(16);
  qc::pack_pkivi(codes.data(), 128, 4, kivi.data());
  qc::pkivi_to_kvq_token(kivi.data(), 128, kvq.data() + 3, 7);  // token column 3 of max_T = 7
  std::vector<std::uint32_t> direct(16 * 7, 0);
  qc::pack_kvq_token(codes.data(), 128, direct.data() + 3, 7);
  EXPECT_EQ(kvq, direct);
  qc::kvq_token_to_pkivi(kvq.data() + 3, 7, 128, again.data());
  EXPECT_EQ(again, kivi);
}

// Base-3: all 243 five-trit combinations give byte Σ t_i·3^i and unpack back.
TEST(Trits, ExhaustiveAllBytes) {
  for (unsigned v = 0; v < 243; ++v) {
    std::uint8_t t[5];
    unsigned r = v;
    for (auto& x : t) {
      x = static_cast<std::uint8_t>(r % 3);
      r /= 3;
    }
    std::uint8_t b = 0xff;
    qc::pack_trits(t, 5, &b);
    ASSERT_EQ(b, v);
    std::uint8_t back[5];
    qc::unpack_trits(&b, 5, back);
    for (int i = 0; i < 5; ++i) ASSERT_EQ(back[i], t[i]);
  }
}

TEST(Trits, TailPadsWithZeroAndSizeIsOnePointSixBits) {
  const std::uint8_t t[7] = {2, 1, 0, 2, 2, 1, 2};
  std::uint8_t b[2];
  qc::pack_trits(t, 7, b);
  EXPECT_EQ(b[0], 2 + 3 * 1 + 9 * 0 + 27 * 2 + 81 * 2);
  EXPECT_EQ(b[1], 1 + 3 * 2);
  std::uint8_t back[7];
  qc::unpack_trits(b, 7, back);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(back[i], t[i]);
  EXPECT_EQ(qc::trit_byte_count(160), 32u);  // 160 trits = 256 bits = 1.6 bits per trit
}

TEST(Converters, PCalibAndPGgmlMatchDirectPacking) {
  for (int bits : {1, 2, 4, 8}) {
    auto codes = random_codes(96, bits, 31u + bits);
    std::vector<std::uint32_t> words(qc::pkivi_word_count(96, bits)), back(words.size());
    std::vector<std::uint8_t> bytes(qc::pcalib_byte_count(96, bits)), direct(bytes.size());
    qc::pack_pkivi(codes.data(), 96, bits, words.data());
    qc::pack_pcalib(codes.data(), 96, bits, direct.data());
    qc::pkivi_to_pcalib(words.data(), 96, bits, bytes.data());
    EXPECT_EQ(bytes, direct) << bits;
    qc::pcalib_to_pkivi(bytes.data(), 96, bits, back.data());
    EXPECT_EQ(back, words) << bits;
  }
  auto codes = random_codes(64, 4, 41);
  std::vector<std::uint32_t> words(8), back(8);
  std::uint8_t qs[32], direct[32];
  qc::pack_pkivi(codes.data(), 64, 4, words.data());
  qc::pack_ggml_q4(codes.data(), 64, direct);
  qc::pkivi_to_ggml_q4(words.data(), 64, qs);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(qs[i], direct[i]) << i;
  qc::ggml_q4_to_pkivi(qs, 64, back.data());
  EXPECT_EQ(back, words);
}

TEST(BitPacking, RejectsBadArguments) {
  std::uint8_t codes[40] = {};
  std::uint32_t words[8];
  std::uint8_t bytes[40];
  kvtest::expect_invalid_argument([&] { qc::pack_pkivi(codes, 4, 3, words); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::unpack_pkivi(words, 4, 0, codes); }, "bits");
  kvtest::expect_invalid_argument([&] { qc::pack_pcalib(codes, 4, 5, bytes); }, "bits");
  codes[2] = 4;
  kvtest::expect_invalid_argument([&] { qc::pack_pkivi(codes, 4, 2, words); }, "codes[2]");
  codes[2] = 16;
  kvtest::expect_invalid_argument([&] { qc::pack_ggml_q4(codes, 32, bytes); }, "codes[2]");
  codes[2] = 0;
  kvtest::expect_invalid_argument([&] { qc::pack_ggml_q4(codes, 31, bytes); }, "n");
  kvtest::expect_invalid_argument([&] { qc::pack_kvq_token(codes, 12, words, 1); }, "d");
  kvtest::expect_invalid_argument([&] { qc::pack_kvq_token(codes, 8, words, 0); }, "word_stride");
  codes[1] = 3;
  kvtest::expect_invalid_argument([&] { qc::pack_trits(codes, 5, bytes); }, "trits[1]");
  bytes[0] = 243;
  kvtest::expect_invalid_argument([&] { qc::unpack_trits(bytes, 5, codes); }, "bytes[0]");
}

}  // namespace
