// SPDX-License-Identifier: Apache-2.0
// The calibration file format (calib/calibration_file.hpp): round trip, byte layout against a
// hand-assembled file, and every malformed input rejected with a message naming what is wrong.

#include "kvcompress/calib/calibration_file.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "support/expect_invalid.hpp"

namespace {

namespace calib = kvcompress::calib;

calib::CalibrationSet sample() {
  calib::CalibrationSet s;
  s.method = "kvquant";
  s.method_version = 3;
  s.add("lut", {2, 3}, {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-30f});
  s.add("scalar", {}, {42.0f});
  return s;
}

// FNV-1a 64 written out independently, plus a little-endian writer.
std::uint64_t fnv(const std::vector<std::uint8_t>& b, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}
void u32(std::vector<std::uint8_t>& b, std::uint32_t x) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>((x >> (8 * i)) & 0xff));
}
void reseal(std::vector<std::uint8_t>& b) {
  b.resize(b.size() - 8);
  const std::uint64_t h = fnv(b, b.size());
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>((h >> (8 * i)) & 0xff));
}

TEST(CalibrationFile, RoundTripPreservesEveryBit) {
  const auto s = sample();
  const auto bytes = calib::serialize(s);
  const auto r = calib::deserialize(bytes.data(), bytes.size(), "kvquant");
  EXPECT_EQ(r.method, "kvquant");
  EXPECT_EQ(r.method_version, 3u);
  ASSERT_EQ(r.tensors.size(), 2u);
  const auto& lut = r.get("lut", {2, 3});
  ASSERT_EQ(lut.data.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i)
    EXPECT_EQ(std::memcmp(&lut.data[i], &s.tensors[0].data[i], 4), 0) << i;  // -0.0 and denormals too
  EXPECT_EQ(r.get("scalar", {}).data[0], 42.0f);
}

TEST(CalibrationFile, BytesMatchAHandAssembledFile) {
  calib::CalibrationSet s;
  s.method = "cq";
  s.method_version = 1;
  s.add("c", {2}, {1.0f, -2.0f});
  std::vector<std::uint8_t> expect = {'K', 'V', 'C', 'C', 'A', 'L', 'I', 'B'};
  u32(expect, 1);                                   // format
  u32(expect, 2); expect.push_back('c'); expect.push_back('q');
  u32(expect, 1);                                   // method version
  u32(expect, 1);                                   // one tensor
  u32(expect, 1); expect.push_back('c');
  u32(expect, 1); u32(expect, 2);                   // rank 1, dim 2
  u32(expect, 0x3f800000u); u32(expect, 0xc0000000u);  // 1.0f, -2.0f
  expect.resize(expect.size() + 8);
  reseal(expect);
  EXPECT_EQ(calib::serialize(s), expect);
}

TEST(CalibrationFile, SaveAndLoadThroughAFile) {
  const std::string path = ::testing::TempDir() + "kvc_calib_test.bin";
  calib::save(sample(), path);
  const auto r = calib::load(path, "kvquant");
  EXPECT_EQ(r.get("lut").data[2], 3.25f);
  std::remove(path.c_str());
  kvtest::expect_invalid_argument([&] { calib::load(path, "kvquant"); }, "path");
}

TEST(CalibrationFile, RejectsMalformedFiles) {
  const auto good = calib::serialize(sample());
  auto des = [](const std::vector<std::uint8_t>& b, const char* m = "kvquant") {
    return calib::deserialize(b.data(), b.size(), m);
  };
  auto bad_magic = good;
  bad_magic[0] = 'X';
  kvtest::expect_invalid_argument([&] { des(bad_magic); }, "magic");
  auto flipped = good;
  flipped[40] ^= 0x10;
  kvtest::expect_invalid_argument([&] { des(flipped); }, "checksum");
  for (std::size_t cut : {std::size_t{0}, std::size_t{7}, std::size_t{20}, good.size() - 9, good.size() - 1}) {
    std::vector<std::uint8_t> t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(des(t), kvcompress::InvalidArgument) << cut;
  }
  auto truncated = good;  // drop the last float but keep a valid checksum: the parser must notice
  truncated.erase(truncated.end() - 12, truncated.end() - 8);
  reseal(truncated);
  kvtest::expect_invalid_argument([&] { des(truncated); }, "tensor data");
  auto version = good;
  version[8] = 2;
  reseal(version);
  kvtest::expect_invalid_argument([&] { des(version); }, "format");
  kvtest::expect_invalid_argument([&] { des(good, "cq"); }, "method");
  auto huge = good;  // first tensor claims 2^31 × 3 elements
  const std::size_t dim0 = 8 + 4 + 4 + 7 + 4 + 4 + 4 + 3 + 4;
  huge[dim0 + 3] = 0x80;
  reseal(huge);
  EXPECT_THROW(des(huge), kvcompress::InvalidArgument);
}

TEST(CalibrationFile, LookupErrorsNameTheTensor) {
  const auto s = sample();
  try {
    s.get("centroids");
    ADD_FAILURE();
  } catch (const kvcompress::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'centroids'"), std::string::npos) << e.what();
  }
  kvtest::expect_invalid_argument([&] { s.get("lut", {3, 2}); }, "lut");
  calib::CalibrationSet t;
  kvtest::expect_invalid_argument([&] { t.add("x", {2, 2}, {1.0f}); }, "data.size()");
  t.add("x", {1}, {1.0f});
  kvtest::expect_invalid_argument([&] { t.add("x", {1}, {1.0f}); }, "name");
}

}  // namespace
