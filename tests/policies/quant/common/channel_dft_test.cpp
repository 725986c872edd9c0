// SPDX-License-Identifier: Apache-2.0
// BB-9 channel DFT (policies/quant/common/channel_dft.hpp): forward against a double-precision
// textbook DFT, round trip = identity (§6 oracle, 1e-5 fp32), and the adjoint identity
// q·inverse(y) = adjoint(q)·y that the fused VidKV kernels rely on, for both layouts and odd m.

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "kvcompress/policies/quant/common/channel_dft.hpp"

namespace {

namespace qc = kvcompress::quant::common;

std::vector<float> rnd(std::size_t n, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& e : x) e = d(g);
  return x;
}

std::vector<std::complex<double>> naive_dft(const std::vector<float>& x) {
  const std::size_t m = x.size();
  std::vector<std::complex<double>> Y(m);
  for (std::size_t k = 0; k < m; ++k)
    for (std::size_t c = 0; c < m; ++c)
      Y[k] += static_cast<double>(x[c]) * std::polar(1.0, -2.0 * M_PI * static_cast<double>(c * k) / m);
  return Y;
}

TEST(ChannelDft, ForwardMatchesTextbookDft) {
  for (int m : {4, 7, 16, 40, 64}) {
    const auto x = rnd(static_cast<std::size_t>(m), 1 + m);
    const auto Y = naive_dft(x);
    qc::ChannelDft full(m, qc::DftLayout::kComplexFull), compact(m, qc::DftLayout::kCompact);
    ASSERT_EQ(full.size(), 2 * m);
    ASSERT_EQ(compact.size(), m);
    std::vector<float> yf(2 * m), yc(m);
    full.forward(x.data(), yf.data());
    compact.forward(x.data(), yc.data());
    for (int k = 0; k < m; ++k) {
      EXPECT_NEAR(yf[2 * k], Y[k].real(), 1e-4);
      EXPECT_NEAR(yf[2 * k + 1], Y[k].imag(), 1e-4);
    }
    EXPECT_NEAR(yc[0], Y[0].real(), 1e-4);
    for (int k = 1; k <= (m - 1) / 2; ++k) {
      EXPECT_NEAR(yc[2 * k - 1], Y[k].real(), 1e-4);
      EXPECT_NEAR(yc[2 * k], Y[k].imag(), 1e-4);
    }
    if (m % 2 == 0) {
      EXPECT_NEAR(yc[m - 1], Y[m / 2].real(), 1e-4);
    }
  }
}

TEST(ChannelDft, RoundTripIsIdentity) {
  for (auto layout : {qc::DftLayout::kCompact, qc::DftLayout::kComplexFull})
    for (int m : {1, 2, 5, 16, 48, 64, 128}) {
      qc::ChannelDft f(m, layout);
      const auto x = rnd(static_cast<std::size_t>(m), 100 + m);
      std::vector<float> y(f.size()), back(m);
      f.forward(x.data(), y.data());
      f.inverse(y.data(), back.data());
      for (int c = 0; c < m; ++c) EXPECT_NEAR(back[c], x[c], 1e-5 * (1 + std::fabs(x[c]))) << qc::to_string(layout) << m;
    }
}

TEST(ChannelDft, AdjointOfInverse) {
  for (auto layout : {qc::DftLayout::kCompact, qc::DftLayout::kComplexFull})
    for (int m : {3, 8, 40, 64}) {
      qc::ChannelDft f(m, layout);
      const auto q = rnd(static_cast<std::size_t>(m), 200 + m);
      const auto y = rnd(static_cast<std::size_t>(f.size()), 300 + m);  // arbitrary (non-Hermitian) spectrum
      std::vector<float> x(m), w(f.size());
      f.inverse(y.data(), x.data());
      f.adjoint(q.data(), w.data());
      double lhs = 0, rhs = 0;
      for (int c = 0; c < m; ++c) lhs += static_cast<double>(q[c]) * x[c];
      for (int i = 0; i < f.size(); ++i) rhs += static_cast<double>(w[i]) * y[i];
      EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::fabs(lhs))) << qc::to_string(layout) << m;
    }
}

TEST(ChannelDft, RejectsEmpty) { EXPECT_THROW(qc::ChannelDft(0, qc::DftLayout::kCompact), kvcompress::InvalidArgument); }

}  // namespace
