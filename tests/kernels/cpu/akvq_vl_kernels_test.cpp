// SPDX-License-Identifier: Apache-2.0
// AKVQ-VL kernels (kernels/akvq_vl.hpp) on every compiled ISA against scalar on random rows of
// every head_dim with 2- and 4-bit rows: fused row dot and row axpy within the fp32 reordering
// bound of a double reference computed from the dequantized row; the WHT identical.

#include "kvcompress/kernels/akvq_vl.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/isa_test_support.hpp"

namespace {

namespace kernels = kvcompress::kernels;
namespace isa = kvcompress::isa;

template <class Tag>
class AkvqVlKernels : public ::testing::Test {};
TYPED_TEST_SUITE(AkvqVlKernels, kvtest::IsaTags, kvtest::IsaName);

TYPED_TEST(AkvqVlKernels, RowDotAndAxpyMatchScalarAndDouble) {
  KVTEST_REQUIRE_ISA(TypeParam);
  std::uint32_t seed = 3;
  for (std::size_t d : {64u, 80u, 96u, 128u, 256u})
    for (int bits : {2, 4}) {
      const std::size_t group = std::min<std::size_t>(128, d);
      const auto x = kvtest::random_floats(d, -3.0f, 3.0f, seed++);
      std::vector<std::uint8_t> row(kernels::akvq_row_bytes(d, group)), ext(kernels::akvq_plane_bytes(d));
      std::uint8_t* e = bits == 4 ? ext.data() : nullptr;
      kernels::akvq_quantize_row(x.data(), d, group, bits, kernels::akvq_default_clip(bits), row.data(), e,
                                 isa::scalar{});
      std::vector<float> y(d);
      kernels::akvq_dequantize_row(row.data(), e, d, group, y.data(), isa::scalar{});
      const auto q = kvtest::random_floats(d, -1.0f, 1.0f, seed++);
      std::vector<float> qs(d / group);
      kernels::akvq_group_sums(q.data(), d, group, qs.data(), isa::scalar{});
      // Magnitude of the terms the kernel sums: Σ_g s_g·Σ_c |q_c|·(code_c + z_g), from the documented
      // metadata bytes {fp16 scale, uint8 zero} of each group (code_c = y_c/s_g + z_g).
      double ref = 0, a = 0;
      for (std::size_t c = 0; c < d; ++c) {
        const std::uint8_t* meta = row.data() + kernels::akvq_plane_bytes(d) + 4 * (c / group);
        const double sg = kvcompress::f16_bits_to_f32(static_cast<std::uint16_t>(meta[0] | (meta[1] << 8)));
        const double code = sg > 0 ? y[c] / sg + meta[2] : 0.0;
        ref += double(q[c]) * y[c];
        a += sg * std::fabs(double(q[c])) * (code + meta[2]) + std::fabs(double(q[c]) * y[c]);
      }
      const float s0 = kernels::akvq_row_dot(row.data(), e, d, group, q.data(), qs.data(), isa::scalar{});
      const float s1 = kernels::akvq_row_dot(row.data(), e, d, group, q.data(), qs.data(), TypeParam{});
      EXPECT_NEAR(s0, ref, kvtest::float_sum_bound(2 * d, a)) << d << " " << bits;
      EXPECT_NEAR(s1, s0, 2 * kvtest::float_sum_bound(2 * d, a)) << d << " " << bits;
      std::vector<float> o0(d, 0.25f), o1(d, 0.25f);
      kernels::akvq_row_axpy(row.data(), e, d, group, 0.7f, o0.data(), isa::scalar{});
      kernels::akvq_row_axpy(row.data(), e, d, group, 0.7f, o1.data(), TypeParam{});
      for (std::size_t c = 0; c < d; ++c) {
        const double want = 0.25 + 0.7 * double(y[c]);
        const std::uint8_t* meta = row.data() + kernels::akvq_plane_bytes(d) + 4 * (c / group);
        const double sg = kvcompress::f16_bits_to_f32(static_cast<std::uint16_t>(meta[0] | (meta[1] << 8)));
        const double tol = 4 * kvtest::kU32 * (0.25 + 0.7 * sg * (2.0 * ((1 << bits) - 1)));  // |w·s·code|, |w·s·z| ≤ w·s·L
        EXPECT_NEAR(o0[c], want, tol) << c;
        EXPECT_NEAR(o1[c], o0[c], tol) << c;
      }
      std::vector<float> w0(x), w1(x);
      kernels::akvq_wht(w0.data(), d, isa::scalar{});
      kernels::akvq_wht(w1.data(), d, TypeParam{});
      EXPECT_EQ(w0, w1);
    }
}

}  // namespace
