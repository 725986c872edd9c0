// SPDX-License-Identifier: Apache-2.0
// GEAR error-correction kernels (kernels/gear.hpp) on every compiled ISA against a double-precision
// reference computed from the same fp16 bytes: low-rank logits/accumulation (factor-major layout,
// random n/d/rank/rows with SIMD tails), exact outlier corrections, block decoding; plus each ISA
// against the scalar reference.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "isa_test_support.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/gear.hpp"
#include "kvcompress/kernels/kivi.hpp"

namespace {

using namespace kvcompress;

struct Factors {
  std::vector<std::uint8_t> q, p;  // fp16 bytes, [rank][n] and [rank][d]
  std::vector<double> qd, pd;      // their values
};
Factors make_factors(std::size_t n, int d, int rank, std::mt19937& g) {
  std::normal_distribution<float> nd;
  Factors f;
  f.q.resize(2 * n * rank);
  f.p.resize(2 * static_cast<std::size_t>(d) * rank);
  f.qd.resize(n * rank);
  f.pd.resize(static_cast<std::size_t>(d) * rank);
  for (std::size_t i = 0; i < f.qd.size(); ++i) {
    const std::uint16_t h = f32_to_f16_bits(nd(g) * 0.2f);
    std::memcpy(&f.q[2 * i], &h, 2);
    f.qd[i] = f16_bits_to_f32(h);
  }
  for (std::size_t i = 0; i < f.pd.size(); ++i) {
    const std::uint16_t h = f32_to_f16_bits(nd(g));
    std::memcpy(&f.p[2 * i], &h, 2);
    f.pd[i] = f16_bits_to_f32(h);
  }
  return f;
}
double lr(const Factors& f, std::size_t n, int d, int rank, std::size_t t, int c) {
  double s = 0;
  for (int i = 0; i < rank; ++i) s += f.qd[i * n + t] * f.pd[static_cast<std::size_t>(i) * d + c];
  return s;
}

template <class Tag>
class GearIsa : public testing::Test {};
TYPED_TEST_SUITE(GearIsa, kvtest::IsaTags, kvtest::IsaName);

TYPED_TEST(GearIsa, LowRankLogitsAndAccumulate) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::mt19937 g(1);
  std::normal_distribution<float> nd;
  for (int trial = 0; trial < 60; ++trial) {
    const std::size_t n = 1 + g() % 90;
    const int d = 8 * (1 + static_cast<int>(g() % 20)) + (trial % 3 == 0 ? 3 : 0), rank = 1 + static_cast<int>(g() % 9),
              rows = 1 + static_cast<int>(g() % 16);
    const Factors f = make_factors(n, d, rank, g);
    std::vector<float> q(static_cast<std::size_t>(rows) * d), p(static_cast<std::size_t>(rows) * (n + 3));
    for (auto& x : q) x = nd(g);
    for (auto& x : p) x = std::fabs(nd(g));
    const std::size_t ldl = n + 5, ldp = n + 3;
    std::vector<float> lg(rows * ldl, 0.5f), lg_s = lg, out(static_cast<std::size_t>(rows) * d, -0.25f), out_s = out;
    kernels::gear_lowrank_logits(f.q.data(), f.p.data(), n, d, rank, q.data(), rows, lg.data(), ldl, TypeParam{});
    kernels::gear_lowrank_logits(f.q.data(), f.p.data(), n, d, rank, q.data(), rows, lg_s.data(), ldl, isa::scalar{});
    kernels::gear_lowrank_accumulate(f.q.data(), f.p.data(), n, d, rank, p.data(), ldp, rows, out.data(), TypeParam{});
    kernels::gear_lowrank_accumulate(f.q.data(), f.p.data(), n, d, rank, p.data(), ldp, rows, out_s.data(), isa::scalar{});
    for (int r = 0; r < rows; ++r) {
      for (std::size_t t = 0; t < n; ++t) {
        double want = 0.5, mag = 0.5;
        for (int c = 0; c < d; ++c) {
          want += q[r * d + c] * lr(f, n, d, rank, t, c);
          mag += std::fabs(q[r * d + c] * lr(f, n, d, rank, t, c));
        }
        ASSERT_NEAR(lg[r * ldl + t], want, 1e-5 * mag) << trial;
        ASSERT_NEAR(lg[r * ldl + t], lg_s[r * ldl + t], 1e-5 * mag) << trial;
      }
      for (std::size_t t = n; t < ldl; ++t) ASSERT_EQ(lg[r * ldl + t], 0.5f);  // untouched columns
      for (int c = 0; c < d; ++c) {
        double want = -0.25, mag = 0.25;
        for (std::size_t t = 0; t < n; ++t) {
          want += p[r * ldp + t] * lr(f, n, d, rank, t, c);
          mag += std::fabs(p[r * ldp + t] * lr(f, n, d, rank, t, c));
        }
        ASSERT_NEAR(out[r * d + c], want, 1e-5 * mag) << trial;
        ASSERT_NEAR(out[r * d + c], out_s[r * d + c], 1e-5 * mag) << trial;
      }
    }
  }
}

// Outlier corrections: after the backbone + low-rank kernels, the logit / output equal those of
// the block with the outlier entries substituted exactly (and L kept there with the ref flag).
TYPED_TEST(GearIsa, OutlierCorrectionsMakeOutliersExact) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::mt19937 g(2);
  std::normal_distribution<float> nd;
  const int G = 32, d = 64, bits = 2, rank = 3, rows = 5, per = 2;
  const std::size_t n = 64;
  for (bool ref_flag : {false, true}) {
    std::vector<float> k(n * d), v(n * d);
    for (auto& x : k) x = nd(g);
    for (auto& x : v) x = nd(g);
    std::vector<std::uint8_t> kblob(2 * kernels::kivi_key_group_bytes(G, d, bits)),
        vrows(n * kernels::kivi_value_row_bytes(d, d, bits));
    for (int gi = 0; gi < 2; ++gi)
      kernels::kivi_quantize_key_group(k.data() + gi * G * d, d, G, d, bits, kblob.data() + gi * kernels::kivi_key_group_bytes(G, d, bits), isa::scalar{});
    kernels::kivi_quantize_value_rows(v.data(), d, n, d, d, bits, vrows.data(), isa::scalar{});
    std::vector<float> kd(n * d), vd(n * d);
    for (int gi = 0; gi < 2; ++gi)
      kernels::kivi_dequantize_key_group(kblob.data() + gi * kernels::kivi_key_group_bytes(G, d, bits), G, d, bits, kd.data() + gi * G * d, d, isa::scalar{});
    kernels::kivi_dequantize_value_rows(vrows.data(), n, d, d, bits, vd.data(), d, isa::scalar{});
    const Factors fk = make_factors(n, d, rank, g), fv = make_factors(n, d, rank, g);
    // Entries: key channel c → tokens {c % n, (c * 7 + 3) % n}; value token t → channels {t % d, (t * 5 + 1) % d}.
    std::vector<std::uint8_t> ek(d * per * 4), ev(n * per * 4);
    std::vector<double> kx(n * d), vx(n * d);
    for (std::size_t t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) {
        kx[t * d + c] = kd[t * d + c] + lr(fk, n, d, rank, t, c);
        vx[t * d + c] = vd[t * d + c] + lr(fv, n, d, rank, t, c);
      }
    auto put = [](std::uint8_t* e, std::uint16_t idx, float val) {
      const std::uint16_t h = f32_to_f16_bits(val);
      std::memcpy(e, &idx, 2);
      std::memcpy(e + 2, &h, 2);
      return static_cast<double>(f16_bits_to_f32(h));
    };
    for (int c = 0; c < d; ++c) {
      std::uint16_t ts[2] = {static_cast<std::uint16_t>(c % n), static_cast<std::uint16_t>((c * 7 + 3) % n)};
      if (ts[0] > ts[1]) std::swap(ts[0], ts[1]);
      for (int e = 0; e < per; ++e) {
        const double val = put(&ek[(c * per + e) * 4], ts[e], 10.0f + nd(g));
        kx[ts[e] * d + c] = val + (ref_flag ? lr(fk, n, d, rank, ts[e], c) : 0.0);
      }
    }
    for (std::size_t t = 0; t < n; ++t) {
      std::uint16_t cs[2] = {static_cast<std::uint16_t>(t % d), static_cast<std::uint16_t>((t * 5 + 1) % d)};
      if (cs[0] > cs[1]) std::swap(cs[0], cs[1]);
      for (int e = 0; e < per; ++e) {
        const double val = put(&ev[(t * per + e) * 4], cs[e], -10.0f + nd(g));
        vx[t * d + cs[e]] = val + (ref_flag ? lr(fv, n, d, rank, t, cs[e]) : 0.0);
      }
    }
    std::vector<float> q(rows * d), p(rows * n), lg(rows * n), out(rows * d, 0.0f);
    for (auto& x : q) x = nd(g);
    for (auto& x : p) x = std::fabs(nd(g));
    kernels::kivi_key_logits(kblob.data(), 2, G, d, bits, q.data(), rows, lg.data(), n, TypeParam{});
    kernels::gear_lowrank_logits(fk.q.data(), fk.p.data(), n, d, rank, q.data(), rows, lg.data(), n, TypeParam{});
    kernels::gear_key_outlier_logits(kblob.data(), G, d, bits, ek.data(), per, n, fk.q.data(), fk.p.data(), rank,
                                     ref_flag, q.data(), rows, lg.data(), n, TypeParam{});
    kernels::kivi_value_accumulate(vrows.data(), n, d, d, bits, p.data(), n, rows, out.data(), TypeParam{});
    kernels::gear_lowrank_accumulate(fv.q.data(), fv.p.data(), n, d, rank, p.data(), n, rows, out.data(), TypeParam{});
    kernels::gear_value_outlier_accumulate(vrows.data(), n, d, d, bits, ev.data(), per, fv.q.data(), fv.p.data(), rank,
                                           ref_flag, p.data(), n, rows, out.data(), TypeParam{});
    for (int r = 0; r < rows; ++r) {
      for (std::size_t t = 0; t < n; ++t) {
        double want = 0, mag = 0;
        for (int c = 0; c < d; ++c) {
          want += q[r * d + c] * kx[t * d + c];
          mag += std::fabs(q[r * d + c] * kx[t * d + c]);
        }
        ASSERT_NEAR(lg[r * n + t], want, 2e-5 * mag) << ref_flag << " " << r << " " << t;
      }
      for (int c = 0; c < d; ++c) {
        double want = 0, mag = 0;
        for (std::size_t t = 0; t < n; ++t) {
          want += p[r * n + t] * vx[t * d + c];
          mag += std::fabs(p[r * n + t] * vx[t * d + c]);
        }
        ASSERT_NEAR(out[r * d + c], want, 2e-5 * mag) << ref_flag << " " << r << " " << c;
      }
    }
    // Block decoding adds L exactly as the reference.
    std::vector<float> dec = kd;
    kernels::gear_add_lowrank(fk.q.data(), fk.p.data(), n, d, rank, dec.data(), d, TypeParam{});
    for (std::size_t t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) ASSERT_NEAR(dec[t * d + c], kd[t * d + c] + lr(fk, n, d, rank, t, c), 1e-5);
  }
}

}  // namespace
