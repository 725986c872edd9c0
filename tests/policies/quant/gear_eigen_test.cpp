// SPDX-License-Identifier: Apache-2.0
// GEAR against Eigen (quantization.md §7, BB-11): the allocation-free power iteration used inside
// Store::append (common/power_iteration.hpp) against calib::power_iteration_low_rank (Householder
// QR), and a whole compressed block against an independent pipeline built from the spec:
// outliers → mean replacement → KIVI quantization (kivi_reference.hpp) → residual → Eigen low
// rank (same seed) → fp16 factors → X̂ = Q̂ + L with outliers exact.

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>
#include <vector>

#include "kvcompress/calib/low_rank.hpp"
#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/common/power_iteration.hpp"
#include "kvcompress/policies/quant/gear.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"

namespace {

using namespace kvcompress;
float f16(float x) { return f16_bits_to_f32(f32_to_f16_bits(x)); }

TEST(GearPowerIterationEigen, InplaceMatchesEigenReconstruction) {
  std::mt19937 g(9);
  std::normal_distribution<float> nd;
  for (auto [n, d, r, loops] : {std::array<int, 4>{64, 128, 4, 3}, {64, 64, 2, 3}, {16, 40, 5, 1}, {64, 128, 64, 2}}) {
    Eigen::MatrixXf e(n, d);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) e(i, j) = nd(g) + (j % 7 == 0 ? 3.0f * std::sin(float(i)) : 0.0f);
    const auto ref = calib::power_iteration_low_rank(e, r, loops, 17).reconstruct();
    std::vector<float> rm(static_cast<std::size_t>(n) * d), q(static_cast<std::size_t>(n) * r), p(static_cast<std::size_t>(d) * r);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) rm[static_cast<std::size_t>(i) * d + j] = e(i, j);
    quant::common::power_iteration_low_rank_inplace<float>(rm.data(), n, d, d, r, loops, 17, q.data(), p.data());
    float max_diff = 0, max_ref = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) {
        float l = 0;
        for (int a = 0; a < r; ++a) l += q[static_cast<std::size_t>(i) * r + a] * p[static_cast<std::size_t>(j) * r + a];
        max_diff = std::max(max_diff, std::fabs(l - ref(i, j)));
        max_ref = std::max(max_ref, std::fabs(ref(i, j)));
      }
    EXPECT_LE(max_diff, 1e-4f * max_ref) << n << "x" << d << " r" << r;
  }
}

// One 64×64 block of keys and values with the default GEAR-2 config (prefill rank 4).
TEST(GearBlockEigen, StoreEqualsIndependentPipeline) {
  const int d = 64, n = 64, r = 4;
  const CacheShape s{1, 1, 1, d, 128};
  KVCache<Policy<evict::None, merge::None, quant::Gear2>> c(s);
  std::mt19937 g(77);
  std::normal_distribution<float> nd;
  std::vector<float> k(n * d), v(n * d);
  for (int i = 0; i < n * d; ++i) {
    k[i] = f16(nd(g) * ((i % d) % 9 == 2 ? 6.0f : 1.0f));
    v[i] = f16(nd(g));
  }
  c.append(0, k.data(), v.data(), n);
  const auto live = kvtest::live_slots(c, 0, 0);
  for (int which = 0; which < 2; ++which) {
    const bool key = which == 0;
    const std::vector<float>& x = key ? k : v;
    std::vector<float> w = x;
    std::vector<char> out(x.size());
    const int vecs = key ? d : n, len = key ? n : d;
    auto at = [&](int vec, int i) { return key ? i * d + vec : vec * d + i; };
    for (int vec = 0; vec < vecs; ++vec) {
      int hi = 0, lo = -1;
      double sum = 0;
      for (int i = 0; i < len; ++i) {
        sum += x[at(vec, i)];
        if (x[at(vec, i)] > x[at(vec, hi)]) hi = i;
      }
      for (int i = 0; i < len; ++i)
        if (i != hi && (lo < 0 || x[at(vec, i)] < x[at(vec, lo)])) lo = i;
      for (int i : {hi, lo}) {
        w[at(vec, i)] = static_cast<float>(sum / len);
        out[at(vec, i)] = 1;
      }
    }
    Eigen::MatrixXf e(n, d);
    std::vector<double> dq(x.size());
    if (key) {
      const auto q = kvref::kivi_quantize_keys(w.data(), d, n, d, 2);
      for (int t = 0; t < n; ++t)
        for (int ch = 0; ch < d; ++ch) dq[t * d + ch] = q.dequant(t, ch);
    } else {
      const auto q = kvref::kivi_quantize_values(w.data(), d, n, d, 64, 2);
      for (int t = 0; t < n; ++t)
        for (int ch = 0; ch < d; ++ch) dq[t * d + ch] = q.dequant(t, ch);
    }
    for (int t = 0; t < n; ++t)
      for (int ch = 0; ch < d; ++ch)
        e(t, ch) = out[t * d + ch] ? 0.0f : static_cast<float>(x[t * d + ch] - dq[t * d + ch]);
    auto f = calib::power_iteration_low_rank(e, r, 3, 0);
    f.q = f.q.unaryExpr([](float a) { return f16(a); });
    f.p = f.p.unaryExpr([](float a) { return f16(a); });
    const Eigen::MatrixXf l = f.reconstruct();
    double max_err = 0, max_e = 0, max_dq_err = 0;
    for (int t = 0; t < n; ++t)
      for (int ch = 0; ch < d; ++ch) {
        const double want = out[t * d + ch] ? x[t * d + ch] : dq[t * d + ch] + l(t, ch);
        const double got = key ? live.k[t * d + ch] : live.v[t * d + ch];
        if (out[t * d + ch]) {
          ASSERT_EQ(got, x[t * d + ch]);
        }
        max_err = std::max(max_err, std::fabs(got - want));
        max_e = std::max(max_e, double(std::fabs(e(t, ch))));
        max_dq_err = std::max(max_dq_err, std::fabs(got - dq[t * d + ch]) * (out[t * d + ch] ? 0 : 1));
      }
    // MGS vs Householder and fp16 factor rounding: differences far below the residual scale.
    EXPECT_LE(max_err, 2e-3 * max_e) << (key ? "keys" : "values");
    EXPECT_GT(max_dq_err, 1e-3 * max_e);  // the low-rank term is really present
  }
}

}  // namespace
