// SPDX-License-Identifier: Apache-2.0
// The committed real activation fixture: it loads, has the documented shapes, its post-RoPE keys
// are its pre-RoPE keys rotated in ggml NORM mode (adjacent pairs, base 100000) at position t,
// and damaged copies are rejected with a clear error.
#include "activation_fixture.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <vector>

namespace {

using kvtest::ActivationFixture;

std::vector<std::uint8_t> fixture_bytes() {
  std::ifstream in(ActivationFixture::default_path(), std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(ActivationFixture, LoadsWithDocumentedShapes) {
  const ActivationFixture f = ActivationFixture::load();
  EXPECT_EQ(f.model_name, "SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(f.n_tokens, 256);
  EXPECT_EQ(f.n_q_heads, 9);
  EXPECT_EQ(f.n_kv_heads, 3);
  EXPECT_EQ(f.head_dim, 64);
  EXPECT_FLOAT_EQ(f.rope_base, 100000.0f);
  ASSERT_EQ(f.layers.size(), 3u);
  for (int idx : {0, 15, 29}) {
    const auto& l = f.layer(idx);
    EXPECT_EQ(l.q.size(), 256u * 9 * 64);
    EXPECT_EQ(l.k.size(), 256u * 3 * 64);
    EXPECT_EQ(l.k_pre.size(), l.k.size());
    EXPECT_EQ(l.v.size(), l.k.size());
  }
  EXPECT_THROW(f.layer(7), std::out_of_range);
}

TEST(ActivationFixture, PostRopeKeysAreRotatedPreRopeKeys) {
  const ActivationFixture f = ActivationFixture::load();
  const int d = f.head_dim;
  for (const auto& l : f.layers) {
    double max_err = 0, max_abs = 0;
    for (int t = 0; t < f.n_tokens; ++t)
      for (int h = 0; h < f.n_kv_heads; ++h) {
        const std::size_t o = (static_cast<std::size_t>(t) * f.n_kv_heads + h) * d;
        for (int i = 0; i < d / 2; ++i) {
          const double th = t * std::pow(static_cast<double>(f.rope_base), -2.0 * i / d);
          const double x0 = l.k_pre[o + 2 * i], x1 = l.k_pre[o + 2 * i + 1];
          max_err = std::max({max_err, std::fabs(x0 * std::cos(th) - x1 * std::sin(th) - l.k[o + 2 * i]),
                              std::fabs(x0 * std::sin(th) + x1 * std::cos(th) - l.k[o + 2 * i + 1])});
          max_abs = std::max(max_abs, std::fabs(x0));
        }
      }
    // fp16 storage: relative error ~1e-3 of the largest key component.
    EXPECT_LT(max_err, 2e-3 * max_abs + 1e-3) << "layer " << l.index;
    EXPECT_GT(max_abs, 1.0) << "layer " << l.index;  // real keys, not zeros
  }
}

std::string load_error(const std::vector<std::uint8_t>& bytes) {
  try {
    ActivationFixture::parse(bytes, "damaged");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(ActivationFixture, RejectsDamagedCopies) {
  const std::vector<std::uint8_t> good = fixture_bytes();
  ASSERT_GT(good.size(), 1000u);
  std::vector<std::uint8_t> magic = good;
  magic[0] = 'X';
  EXPECT_NE(load_error(magic).find("bad magic"), std::string::npos);
  std::vector<std::uint8_t> version = good;
  version[8] = 2;
  EXPECT_NE(load_error(version).find("unsupported version 2"), std::string::npos);
  for (std::size_t n : {std::size_t{0}, std::size_t{10}, good.size() / 2, good.size() - 1}) {
    const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_FALSE(load_error(cut).empty()) << n;
  }
  std::vector<std::uint8_t> flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  EXPECT_NE(load_error(flipped).find("hash mismatch"), std::string::npos);
  EXPECT_THROW(ActivationFixture::load("/nonexistent/fixture.bin"), std::runtime_error);
}

}  // namespace
