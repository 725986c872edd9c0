// SPDX-License-Identifier: Apache-2.0
// KVQuant kernels (kernels/kvquant.hpp): the LSB-first code bitstream, per-slot decoding (LUT codes,
// masked/added outliers, fp16 sinks, RoPE at the slot's position) against a hand-written double
// reference, and every compiled ISA's fused logits/accumulate against a double evaluation over
// the decoded slots (fp32 summation bound) on random shapes with SIMD tails.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"
#include "kvcompress/kernels/kvquant.hpp"

namespace {

using namespace kvcompress;
using kernels::KvqRowFormat;
using kernels::KvqTables;

// Code c of an LSB-first bitstream, written independently of kvq_code.
unsigned ref_code(const std::uint8_t* bytes, std::size_t nbytes, std::size_t c, int bits) {
  const std::size_t bit = c * static_cast<std::size_t>(bits);
  const unsigned v = bytes[bit / 8] | (bit / 8 + 1 < nbytes ? static_cast<unsigned>(bytes[bit / 8 + 1]) << 8 : 0u);
  return (v >> (bit % 8)) & ((1u << bits) - 1u);
}

TEST(KvqCodes, BitstreamRoundTripAndLayout) {
  for (int bits : {2, 3, 4}) {
    std::mt19937 g(static_cast<unsigned>(bits));
    const std::size_t n = 77;
    std::vector<std::uint8_t> codes(n), bytes((n * bits + 7) / 8, 0xFF);
    for (auto& c : codes) c = static_cast<std::uint8_t>(g() % (1u << bits));
    for (std::size_t i = 0; i < n; ++i) kernels::kvq_set_code(bytes.data(), i, bits, codes[i]);
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(kernels::kvq_code(bytes.data(), i, bits), codes[i]) << bits << "," << i;
      EXPECT_EQ(ref_code(bytes.data(), bytes.size(), i, bits), codes[i]) << bits << "," << i;
    }
  }
  // 2-bit codes [0,1,2,3] LSB-first → 0xE4 (the P-KIVI worked check, byte-wise); 3-bit codes
  // [5, 6, 7] at bits [0,3), [3,6), [6,9): byte0 = 5 | 6 << 3 | (7 & 3) << 6 = 0xF5, byte1 = 7 >> 2 = 0x01.
  std::uint8_t b[2] = {0, 0};
  for (int i = 0; i < 4; ++i) kernels::kvq_set_code(b, static_cast<std::size_t>(i), 2, static_cast<std::uint8_t>(i));
  EXPECT_EQ(b[0], 0xE4);
  std::uint8_t c[2] = {0, 0};
  kernels::kvq_set_code(c, 0, 3, 5);
  kernels::kvq_set_code(c, 1, 3, 6);
  kernels::kvq_set_code(c, 2, 3, 7);
  EXPECT_EQ(c[0], 0xF5);
  EXPECT_EQ(c[1], 0x01);
}

void put16(std::uint8_t* p, std::uint16_t x) { std::memcpy(p, &x, 2); }
void putf16(std::uint8_t* p, float x) { put16(p, f32_to_f16_bits(x)); }

// Random rows and tables for one format.
struct Fixture {
  KvqRowFormat f;
  std::vector<std::uint8_t> keys, values;
  std::vector<float> lut_k, lut_v, lut_k_c;
  std::vector<half> sink_k, sink_v;
  std::vector<double> theta;
  std::vector<float> lo_cos, lo_sin;
  std::vector<std::int32_t> pos;
  KvqTables t;

  Fixture(std::size_t d, int bits, bool dynamic, bool add_mode, std::size_t n, std::uint32_t seed) {
    f.d = d;
    f.bits = bits;
    f.key_cap = 3;
    f.value_cap = 2;
    f.key_dynamic = dynamic;
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const std::size_t L = std::size_t{1} << bits;
    for (std::size_t i = 0; i < L; ++i) {
      lut_k.push_back(u(g));
      lut_v.push_back(u(g));
    }
    for (std::size_t c = 0; c < d; ++c)
      for (std::size_t i = 0; i < L; ++i) lut_k_c.push_back(lut_k[i] * 1.7f + u(g));
    const int n_sink = 2;
    for (std::size_t i = 0; i < n_sink * d; ++i) {
      sink_k.push_back(half{f32_to_f16_bits(u(g) * 3)});
      sink_v.push_back(half{f32_to_f16_bits(u(g) * 3)});
    }
    for (std::size_t i = 0; i < d / 2; ++i) theta.push_back(std::pow(10000.0, -2.0 * i / d));
    keys.assign(n * f.key_row_bytes(), 0);
    values.assign(n * f.value_row_bytes(), 0);
    for (std::size_t j = 0; j < n; ++j) {
      std::uint8_t* kr = keys.data() + j * f.key_row_bytes();
      std::uint8_t* vr = values.data() + j * f.value_row_bytes();
      const std::int32_t p = j < 2 && j % 2 == 0 ? static_cast<std::int32_t>(j / 2) : static_cast<std::int32_t>(3 + 5 * j + g() % 3);
      pos.push_back(p);
      std::memcpy(kr, &p, 4);
      kr[5] = j < 2 && j % 2 == 0 ? 1 : 0;  // slot 0 is a sink (pos 0)
      if (dynamic) {
        putf16(kr + 6, u(g));
        putf16(kr + 8, std::fabs(u(g)) * 2);
      }
      for (std::size_t c = 0; c < d; ++c) {
        kernels::kvq_set_code(kr + f.key_codes(), c, bits, static_cast<std::uint8_t>(g() % L));
        kernels::kvq_set_code(vr + f.value_codes(), c, bits, static_cast<std::uint8_t>(g() % L));
      }
      putf16(vr + 2, u(g));
      putf16(vr + 4, std::fabs(u(g)) * 2);
      kr[4] = static_cast<std::uint8_t>(g() % (f.key_cap + 1));
      vr[0] = static_cast<std::uint8_t>(g() % (f.value_cap + 1));
      for (std::size_t e = 0; e < kr[4]; ++e) {
        put16(kr + f.key_outliers() + 4 * e, static_cast<std::uint16_t>(std::min<std::size_t>(d - 1, (e * d) / f.key_cap + g() % std::max<std::size_t>(1, d / f.key_cap))));
        putf16(kr + f.key_outliers() + 4 * e + 2, u(g) * 20);
      }
      for (std::size_t e = 0; e < vr[0]; ++e) {
        put16(vr + f.value_outliers() + 4 * e, static_cast<std::uint16_t>(std::min<std::size_t>(d - 1, (e * d) / f.value_cap + g() % std::max<std::size_t>(1, d / f.value_cap))));
        putf16(vr + f.value_outliers() + 4 * e + 2, u(g) * 20);
      }
    }
    t.lut_k = lut_k.data();
    t.lut_k_c = lut_k_c.data();
    t.lut_v = lut_v.data();
    t.sink_k = sink_k.data();
    t.sink_v = sink_v.data();
    t.outliers = add_mode ? kernels::KvqOutlierMode::kAddToDense : kernels::KvqOutlierMode::kMask;
    t.rope.theta = theta.data();
    for (int lo = 0; lo < 16; ++lo)
      for (std::size_t i = 0; i < d / 2; ++i) {
        lo_cos.push_back(static_cast<float>(std::cos(lo * theta[i])));
        lo_sin.push_back(static_cast<float>(std::sin(lo * theta[i])));
      }
  }
  // Switches the kernels to the angle-addition RoPE tables.
  void use_tables() {
    t.rope.lo_cos = lo_cos.data();
    t.rope.lo_sin = lo_sin.data();
  }

  // Hand reference: decoded post-RoPE key / value of slot j in double.
  std::vector<double> ref_key(std::size_t j) const {
    const std::uint8_t* kr = keys.data() + j * f.key_row_bytes();
    const std::size_t d = f.d, L = std::size_t{1} << f.bits;
    std::vector<double> x(d);
    if (kr[5]) {
      for (std::size_t c = 0; c < d; ++c) x[c] = to_float(sink_k[pos[j] * d + c]);
    } else {
      std::uint16_t h;
      std::memcpy(&h, kr + 6, 2);
      const float off = f16_bits_to_f32(h);
      std::memcpy(&h, kr + 8, 2);
      const float hr = f16_bits_to_f32(h);
      for (std::size_t c = 0; c < d; ++c) {
        const unsigned code = ref_code(kr + f.key_codes(), f.code_bytes(), c, f.bits);
        x[c] = f.key_dynamic ? static_cast<double>(lut_k[code] * hr + off) : lut_k_c[c * L + code];
      }
      for (std::size_t e = 0; e < kr[4]; ++e) {
        std::uint16_t ch, val;
        std::memcpy(&ch, kr + f.key_outliers() + 4 * e, 2);
        std::memcpy(&val, kr + f.key_outliers() + 4 * e + 2, 2);
        x[ch] = (t.outliers == kernels::KvqOutlierMode::kMask ? 0.0 : x[ch]) + f16_bits_to_f32(val);
      }
    }
    for (std::size_t i = 0; i < d / 2; ++i) {
      const double a = pos[j] * theta[i];
      const double xa = x[i], xb = x[i + d / 2];
      x[i] = xa * std::cos(a) - xb * std::sin(a);
      x[i + d / 2] = xa * std::sin(a) + xb * std::cos(a);
    }
    return x;
  }
  std::vector<double> ref_value(std::size_t j) const {
    const std::uint8_t* kr = keys.data() + j * f.key_row_bytes();
    const std::uint8_t* vr = values.data() + j * f.value_row_bytes();
    const std::size_t d = f.d;
    std::vector<double> x(d);
    if (kr[5]) {
      for (std::size_t c = 0; c < d; ++c) x[c] = to_float(sink_v[pos[j] * d + c]);
      return x;
    }
    std::uint16_t h;
    std::memcpy(&h, vr + 2, 2);
    const float off = f16_bits_to_f32(h);
    std::memcpy(&h, vr + 4, 2);
    const float hr = f16_bits_to_f32(h);
    for (std::size_t c = 0; c < d; ++c) x[c] = lut_v[ref_code(vr + f.value_codes(), f.code_bytes(), c, f.bits)] * hr + off;
    for (std::size_t e = 0; e < vr[0]; ++e) {
      std::uint16_t ch, val;
      std::memcpy(&ch, vr + f.value_outliers() + 4 * e, 2);
      std::memcpy(&val, vr + f.value_outliers() + 4 * e + 2, 2);
      x[ch] = (t.outliers == kernels::KvqOutlierMode::kMask ? 0.0 : x[ch]) + f16_bits_to_f32(val);
    }
    return x;
  }
};

TEST(KvqDecode, MatchesHandReference) {
  for (int bits : {2, 3, 4})
    for (bool dyn : {false, true})
      for (bool add : {false, true}) {
        Fixture fx(40, bits, dyn, add, 9, static_cast<std::uint32_t>(bits * 4 + dyn * 2 + add));
        std::vector<float> k(40), v(40);
        for (std::size_t j = 0; j < 9; ++j) {
          kernels::kvq_decode_key(fx.keys.data() + j * fx.f.key_row_bytes(), fx.f, fx.t, true, k.data());
          const std::uint8_t* kr = fx.keys.data() + j * fx.f.key_row_bytes();
          kernels::kvq_decode_value(fx.values.data() + j * fx.f.value_row_bytes(), fx.pos[j], kr[5] != 0, fx.f, fx.t,
                                    v.data());
          const auto rk = fx.ref_key(j), rv = fx.ref_value(j);
          for (std::size_t c = 0; c < 40; ++c) {
            EXPECT_NEAR(k[c], rk[c], 1e-4 * (1 + std::fabs(rk[c]))) << bits << dyn << add << " j=" << j << " c=" << c;
            EXPECT_NEAR(v[c], rv[c], 1e-5 * (1 + std::fabs(rv[c])));
          }
        }
      }
}

template <class Tag>
class KvqKernels : public ::testing::Test {};
TYPED_TEST_SUITE(KvqKernels, kvtest::IsaTags, kvtest::IsaName);

struct Shape {
  std::size_t d, n;
  int rows, bits;
};
const Shape kShapes[] = {{2, 3, 1, 2},    {6, 5, 2, 3},   {18, 17, 3, 4},  {64, 33, 4, 3},
                         {80, 9, 16, 4},  {96, 64, 5, 2}, {130, 7, 7, 3},  {128, 40, 1, 4}};

TYPED_TEST(KvqKernels, LogitsMatchDoubleWithinFp32SumBound) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : kShapes)
    for (int variant = 0; variant < 3; ++variant) {
      const bool dyn = variant == 1;
      Fixture fx(s.d, s.bits, dyn, false, s.n, static_cast<std::uint32_t>(s.d + s.n));
      if (variant == 2) fx.use_tables();
      auto q = kvtest::random_floats(s.rows * s.d, -1.0f, 1.0f, 5);
      const std::size_t ldl = s.n + 3;
      std::vector<float> out(s.rows * ldl, -7.0f), buf(2 * s.d);
      kernels::kvq_logits(fx.keys.data(), fx.f.key_row_bytes(), s.n, fx.f, fx.t, q.data(), s.rows, out.data(), ldl,
                          buf.data(), TypeParam{});
      for (std::size_t j = 0; j < s.n; ++j) {
        const auto k = fx.ref_key(j);
        for (int r = 0; r < s.rows; ++r) {
          double e = 0, a = 0;
          for (std::size_t c = 0; c < s.d; ++c) {
            e += q[r * s.d + c] * k[c];
            a += std::fabs(q[r * s.d + c] * k[c]);
          }
          // + decode error of the key (fp32 RoPE products / angle addition, ≤ 1e-6 relative).
          EXPECT_NEAR(out[r * ldl + j], e, kvtest::float_sum_bound(s.d, a) + 4e-6 * a) << s.d << "," << j << "," << r;
        }
      }
      for (int r = 0; r < s.rows; ++r)
        for (std::size_t j = s.n; j < ldl; ++j) EXPECT_EQ(out[r * ldl + j], -7.0f);  // untouched tail
    }
}

TYPED_TEST(KvqKernels, AccumulateMatchesDoubleWithinFp32SumBound) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (const Shape& s : kShapes)
    for (bool add : {false, true}) {
      Fixture fx(s.d, s.bits, true, add, s.n, static_cast<std::uint32_t>(3 * s.d + s.n));
      const std::size_t ldp = s.n + 1;
      auto p = kvtest::random_floats(s.rows * ldp, 0.0f, 1.0f, 9);
      for (int r = 0; r < s.rows; ++r) p[r * ldp + s.n / 2] = 0.0f;  // a masked slot
      std::vector<float> out(s.rows * s.d, 0.5f), buf(s.d);
      kernels::kvq_accumulate(fx.keys.data(), fx.f.key_row_bytes(), fx.values.data(), fx.f.value_row_bytes(), s.n,
                              fx.f, fx.t, p.data(), ldp, s.rows, out.data(), buf.data(), TypeParam{});
      for (int r = 0; r < s.rows; ++r)
        for (std::size_t c = 0; c < s.d; ++c) {
          double e = 0.5, a = 0.5;
          for (std::size_t j = 0; j < s.n; ++j) {
            const double v = fx.ref_value(j)[c];
            e += p[r * ldp + j] * v;
            a += std::fabs(p[r * ldp + j] * v);
          }
          EXPECT_NEAR(out[r * s.d + c], e, kvtest::float_sum_bound(s.n, a) + 1e-6 * a) << s.d << "," << r << "," << c;
        }
    }
}

TYPED_TEST(KvqKernels, DotAndAxpyAgreeWithScalar) {
  KVTEST_REQUIRE_ISA(TypeParam);
  for (std::size_t d : {1u, 7u, 8u, 15u, 16u, 17u, 33u, 128u}) {
    auto x = kvtest::random_floats(d, -2.0f, 2.0f, static_cast<std::uint32_t>(d));
    auto q = kvtest::random_floats(3 * d, -1.0f, 1.0f, 77);
    float a[3], b[3];
    kernels::kvq_dot_rows(x.data(), d, q.data(), 3, a, 1, isa::scalar{});
    kernels::kvq_dot_rows(x.data(), d, q.data(), 3, b, 1, TypeParam{});
    for (int r = 0; r < 3; ++r) {
      double abs = 0;
      for (std::size_t c = 0; c < d; ++c) abs += std::fabs(q[r * d + c] * x[c]);
      EXPECT_NEAR(a[r], b[r], kvtest::float_sum_bound(d, abs));
    }
    std::vector<float> o1(3 * d, 1.0f), o2(3 * d, 1.0f);
    const float p[3] = {0.25f, 0.0f, -1.5f};
    kernels::kvq_axpy_rows(x.data(), d, p, 1, 3, o1.data(), isa::scalar{});
    kernels::kvq_axpy_rows(x.data(), d, p, 1, 3, o2.data(), TypeParam{});
    for (std::size_t i = 0; i < 3 * d; ++i) EXPECT_NEAR(o1[i], o2[i], 1e-6 * (1 + std::fabs(o1[i])));
  }
}

}  // namespace
