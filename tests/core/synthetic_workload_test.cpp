// SPDX-License-Identifier: Apache-2.0
// Tests of the synthetic workloads in tools/synthetic/ (used by tools/quality and by tests): every
// property their headers state is checked here against independent double-precision computations
// (RoPE re-implemented from its formula, softmax attention written out).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <set>
#include <stdexcept>
#include <vector>

#include "../../tools/synthetic/llm_kv.hpp"
#include "../../tools/synthetic/multimodal_workload.hpp"

namespace {

using kvcompress::Modality;

// RoPE, rotate_half layout, from the formula: pair (i, i + d/2) rotated by pos·base^(−2i/d).
std::vector<double> rope_ref(const float* x, std::size_t d, double base, double pos) {
  std::vector<double> y(x, x + d);
  for (std::size_t i = 0; i < d / 2; ++i) {
    const double th = pos * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    y[i] = x[i] * std::cos(th) - x[i + d / 2] * std::sin(th);
    y[i + d / 2] = x[i] * std::sin(th) + x[i + d / 2] * std::cos(th);
  }
  return y;
}

// Softmax attention weights of one query row over keys [0, n) (stride ld), scale 1/√d.
std::vector<double> weights_ref(const float* q, const float* k, std::size_t n, std::size_t ld, std::size_t d) {
  std::vector<double> w(n);
  double mx = -1e300;
  for (std::size_t j = 0; j < n; ++j) {
    double s = 0;
    for (std::size_t c = 0; c < d; ++c) s += static_cast<double>(q[c]) * k[j * ld + c];
    w[j] = s / std::sqrt(static_cast<double>(d));
    mx = std::max(mx, w[j]);
  }
  double sum = 0;
  for (double& x : w) sum += (x = std::exp(x - mx));
  for (double& x : w) x /= sum;
  return w;
}

kvsynth::LlmKvConfig small_llm() {
  kvsynth::LlmKvConfig c;
  c.n_tokens = 256;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.seed = 7;
  return c;
}

TEST(LlmKv, ShapesPositionsAndDeterminism) {
  const auto c = small_llm();
  const auto a = kvsynth::make_llm_kv(c);
  EXPECT_EQ(a.q.size(), 256u * 8 * 64);
  EXPECT_EQ(a.q_pre.size(), a.q.size());
  EXPECT_EQ(a.k.size(), 256u * 2 * 64);
  EXPECT_EQ(a.k_pre.size(), a.k.size());
  EXPECT_EQ(a.v.size(), a.k.size());
  ASSERT_EQ(a.pos.size(), 256u);
  for (std::size_t t = 0; t < 256; ++t) EXPECT_EQ(a.pos[t], static_cast<int>(t));
  const auto b = kvsynth::make_llm_kv(c);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.v, b.v);
  auto c2 = c;
  c2.seed = 8;
  EXPECT_NE(kvsynth::make_llm_kv(c2).k, a.k);
}

TEST(LlmKv, KeysAndQueriesAreRopeOfPreRope) {
  const auto c = small_llm();
  const auto a = kvsynth::make_llm_kv(c);
  const std::size_t d = 64;
  double worst = 0;
  for (std::size_t t : {0u, 1u, 17u, 255u}) {
    for (std::size_t h = 0; h < 2; ++h) {
      const auto y = rope_ref(a.k_pre.data() + (t * 2 + h) * d, d, c.rope_base, static_cast<double>(t));
      for (std::size_t x = 0; x < d; ++x)
        worst = std::max(worst, std::fabs(y[x] - a.k[(t * 2 + h) * d + x]) / (1.0 + std::fabs(y[x])));
    }
    for (std::size_t g = 0; g < 8; ++g) {
      const auto y = rope_ref(a.q_pre.data() + (t * 8 + g) * d, d, c.rope_base, static_cast<double>(t));
      for (std::size_t x = 0; x < d; ++x)
        worst = std::max(worst, std::fabs(y[x] - a.q[(t * 8 + g) * d + x]) / (1.0 + std::fabs(y[x])));
    }
  }
  EXPECT_LT(worst, 1e-5);
}

TEST(LlmKv, OutlierKeyChannelsAreLargeAndLowFrequency) {
  const auto c = small_llm();
  const auto a = kvsynth::make_llm_kv(c);
  const std::size_t d = 64, n = 256;
  ASSERT_EQ(a.outlier_channel.size(), 2u * static_cast<std::size_t>(c.outlier_channels));
  for (std::size_t h = 0; h < 2; ++h) {
    std::set<int> out(a.outlier_channel.begin() + static_cast<std::ptrdiff_t>(h * 4),
                      a.outlier_channel.begin() + static_cast<std::ptrdiff_t>(h * 4 + 4));
    EXPECT_EQ(out.size(), 4u);
    double mag_out = 0, mag_in = 0;
    for (std::size_t ch = 0; ch < d; ++ch) {
      double m = 0;
      for (std::size_t t = 0; t < n; ++t) m += std::fabs(a.k_pre[(t * 2 + h) * d + ch]);
      m /= n;
      if (out.count(static_cast<int>(ch))) {
        EXPECT_GE(ch % (d / 2), d / 4) << "outlier channel in a high-frequency pair";
        mag_out += m / 4;
      } else {
        mag_in += m / (d - 4);
      }
    }
    // |N(±12, 3²)| ≈ 12 vs E|N(μ, 1)| ≈ 0.8.
    EXPECT_GT(mag_out / mag_in, 8.0);
    // Post-RoPE keys: the low-frequency outlier pairs keep their magnitude in the same channels.
    double post_out = 0;
    for (int ch : out)
      for (std::size_t t = 0; t < n; ++t) post_out += std::fabs(a.k[(t * 2 + h) * d + static_cast<std::size_t>(ch)]) / (4.0 * n);
    EXPECT_GT(post_out / mag_in, 4.0);
  }
}

TEST(LlmKv, ValuesAreHeavyTailed) {
  auto c = small_llm();
  c.n_tokens = 1024;
  const auto a = kvsynth::make_llm_kv(c);
  double m = 0, m2 = 0, m4 = 0;
  for (float x : a.v) m += x;
  m /= a.v.size();
  for (float x : a.v) {
    const double e = x - m;
    m2 += e * e;
    m4 += e * e * e * e;
  }
  m2 /= a.v.size();
  m4 /= a.v.size();
  const double excess = m4 / (m2 * m2) - 3.0;
  // Student-t, ν = 5: variance 5/3, excess kurtosis 6 (sample estimate is noisy but clearly > 0).
  EXPECT_NEAR(m2, 5.0 / 3.0, 0.15);
  EXPECT_GT(excess, 2.0);
  EXPECT_NEAR(m, 0.0, 0.05);
}

TEST(LlmKv, AttentionIsConcentratedOnSinkAndTargets) {
  const auto c = small_llm();
  const auto a = kvsynth::make_llm_kv(c);
  const std::size_t d = 64;
  double sink = 0, maxw = 0, rows = 0;
  for (std::size_t t = 64; t < 256; t += 8)
    for (std::size_t g = 0; g < 8; ++g) {
      const std::size_t h = g / 4;  // GQA group of 4
      const auto w = weights_ref(a.q.data() + (t * 8 + g) * d, a.k.data() + h * d, t + 1, 2 * d, d);
      sink += w[0];
      maxw += *std::max_element(w.begin(), w.end());
      rows += 1;
    }
  sink /= rows;
  maxw /= rows;
  EXPECT_GT(sink, 10.0 / 256);  // far above a uniform share
  EXPECT_GT(maxw, 0.1);         // not uniform
  EXPECT_LT(maxw, 0.95);        // not one-hot
}

TEST(LlmKv, RejectsBadConfig) {
  auto c = small_llm();
  c.num_q_heads = 7;
  EXPECT_THROW(kvsynth::make_llm_kv(c), std::invalid_argument);
  c = small_llm();
  c.outlier_channels = 17;
  EXPECT_THROW(kvsynth::make_llm_kv(c), std::invalid_argument);
}

kvsynth::MultimodalConfig small_mm() {
  kvsynth::MultimodalConfig c;
  c.num_layers = 1;
  c.image_tokens = 256;
  c.video_frames = 6;
  c.frame_tokens = 64;
  c.seed = 3;
  return c;
}

TEST(MultimodalWorkload, LayoutAndExplicitLabels) {
  const auto c = small_mm();
  const auto w = kvsynth::make_multimodal_workload(c);
  const std::size_t n_prompt = 32 + 96 + 256 + 6 * 64 + 48;
  EXPECT_EQ(w.n_prompt, n_prompt);
  EXPECT_EQ(w.n_total, n_prompt + 64);
  ASSERT_EQ(w.modality.size(), w.n_total);
  std::size_t counts[kvcompress::kModalityCount] = {};
  for (Modality m : w.modality) ++counts[static_cast<int>(m)];
  EXPECT_EQ(counts[static_cast<int>(Modality::kSystem)], 32u);
  EXPECT_EQ(counts[static_cast<int>(Modality::kText)], 96u + 48u);
  EXPECT_EQ(counts[static_cast<int>(Modality::kImage)], 256u);
  EXPECT_EQ(counts[static_cast<int>(Modality::kVideo)], 6u * 64u);
  EXPECT_EQ(counts[static_cast<int>(Modality::kGenerated)], 64u);
  // Order: system, text, image, video, question, decode.
  EXPECT_EQ(w.modality[0], Modality::kSystem);
  EXPECT_EQ(w.modality[32], Modality::kText);
  EXPECT_EQ(w.modality[128], Modality::kImage);
  EXPECT_EQ(w.modality[384], Modality::kVideo);
  EXPECT_EQ(w.modality[n_prompt - 1], Modality::kText);
  EXPECT_EQ(w.modality[n_prompt], Modality::kGenerated);
  for (const auto& s : w.spans)
    for (std::size_t j = s.begin; j < s.end; ++j) ASSERT_EQ(w.modality[j], s.modality);
  ASSERT_EQ(w.layers.size(), 1u);
  EXPECT_EQ(w.layers[0].q.size(), w.n_total * 8 * 64);
  EXPECT_EQ(w.layers[0].k.size(), w.n_total * 2 * 64);
}

TEST(MultimodalWorkload, Deterministic) {
  const auto a = kvsynth::make_multimodal_workload(small_mm());
  const auto b = kvsynth::make_multimodal_workload(small_mm());
  EXPECT_EQ(a.layers[0].q, b.layers[0].q);
  EXPECT_EQ(a.layers[0].k, b.layers[0].k);
  EXPECT_EQ(a.layers[0].v, b.layers[0].v);
  EXPECT_EQ(a.changed, b.changed);
  auto c = small_mm();
  c.seed = 4;
  EXPECT_NE(kvsynth::make_multimodal_workload(c).layers[0].k, a.layers[0].k);
}

double cosine(const float* a, const float* b, std::size_t d) {
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t x = 0; x < d; ++x) {
    ab += static_cast<double>(a[x]) * b[x];
    aa += static_cast<double>(a[x]) * a[x];
    bb += static_cast<double>(b[x]) * b[x];
  }
  return ab / std::sqrt(aa * bb);
}

TEST(MultimodalWorkload, ImagePatchesOfARegionAreNearDuplicates) {
  const auto c = small_mm();
  const auto w = kvsynth::make_multimodal_workload(c);
  const std::size_t d = 64;
  const auto& k = w.layers[0].k;
  double same = 0, diff = 0, text = 0;
  int ns = 0, nd = 0, nt = 0;
  for (std::size_t i = 128; i < 384; ++i)
    for (std::size_t j = i + 1; j < 384; j += 7) {
      const double cs = cosine(&k[i * 2 * d], &k[j * 2 * d], d);
      if (w.region[i] == w.region[j]) same += cs, ++ns;
      else diff += std::fabs(cs), ++nd;
    }
  for (std::size_t i = 32; i < 128; ++i)
    for (std::size_t j = i + 1; j < 128; ++j) text += std::fabs(cosine(&k[i * 2 * d], &k[j * 2 * d], d)), ++nt;
  const double expected = 1.0 / (1.0 + c.image_noise * c.image_noise);
  EXPECT_NEAR(same / ns, expected, 0.02);
  EXPECT_LT(diff / nd, 0.2);
  EXPECT_LT(text / nt, 0.2);  // E|cos| of random 64-d unit vectors ≈ 0.1
}

TEST(MultimodalWorkload, ConsecutiveVideoFramesAreMostlyIdentical) {
  const auto c = small_mm();
  const auto w = kvsynth::make_multimodal_workload(c);
  const std::size_t d = 64, v0 = 384;
  std::size_t unchanged = 0, total = 0;
  for (std::size_t f = 1; f < 6; ++f)
    for (std::size_t i = 0; i < 64; ++i) {
      const std::size_t j = v0 + f * 64 + i, prev = j - 64;
      EXPECT_EQ(w.frame[j], static_cast<int>(f));
      const double cs = cosine(&w.layers[0].k[j * 2 * d], &w.layers[0].k[prev * 2 * d], d);
      if (w.changed[j]) {
        EXPECT_LT(cs, 0.6) << "a re-drawn patch should not match its predecessor";
      } else {
        EXPECT_GT(cs, 0.999) << "an unchanged patch should match its predecessor";
        ++unchanged;
      }
      ++total;
    }
  for (std::size_t i = 0; i < 64; ++i) EXPECT_EQ(w.changed[v0 + i], 1);
  const double frac = static_cast<double>(unchanged) / total;
  EXPECT_NEAR(frac, 1.0 - c.frame_change, 0.05);  // 320 Bernoulli(0.9): σ ≈ 0.017
}

// Attention of the decode (future) queries, computed in double over everything before them.
struct MassByGroup {
  double mass[3] = {0, 0, 0}, per_token[3] = {0, 0, 0}, sink = 0, salient_text = 0, other_text = 0;
};
MassByGroup future_attention(const kvsynth::MultimodalWorkload& w) {
  const std::size_t d = 64, hq = 8, hkv = 2;
  MassByGroup m;
  double rows = 0, n_sal = 0, n_oth = 0;
  for (std::size_t t = w.n_prompt; t < w.n_total; ++t)
    for (std::size_t g = 0; g < hq; ++g) {
      const std::size_t h = g / (hq / hkv);
      const auto p = weights_ref(w.layers[0].q.data() + (t * hq + g) * d, w.layers[0].k.data() + h * d, t, hkv * d, d);
      for (std::size_t j = 0; j < t; ++j) {
        m.mass[w.group[j]] += p[j];
        if (w.group[j] == 0 && j > 0 && j < w.n_prompt) {
          if (w.salient[j]) m.salient_text += p[j];
          else m.other_text += p[j];
        }
      }
      m.sink += p[0];
      rows += 1;
    }
  std::size_t count[3] = {0, 0, 0};
  for (std::size_t j = 0; j < w.n_prompt; ++j) ++count[w.group[j]];
  for (std::size_t j = 1; j < w.n_prompt; ++j)
    if (w.group[j] == 0) (w.salient[j] ? n_sal : n_oth) += 1;
  for (int gr = 0; gr < 3; ++gr) {
    m.mass[gr] /= rows;
    m.per_token[gr] = m.mass[gr] / count[gr];
  }
  m.sink /= rows;
  m.salient_text /= rows * n_sal;
  m.other_text /= rows * n_oth;
  return m;
}

TEST(MultimodalWorkload, FutureQueriesPreferTextSinkAndSalientTokens) {
  const auto w = kvsynth::make_multimodal_workload(small_mm());
  const auto m = future_attention(w);
  using W = kvsynth::MultimodalWorkload;
  EXPECT_GT(m.mass[W::kTextGroup], m.mass[W::kImageGroup]);
  EXPECT_GT(m.per_token[W::kTextGroup], 5.0 * m.per_token[W::kImageGroup]);
  EXPECT_GT(m.per_token[W::kTextGroup], 5.0 * m.per_token[W::kVideoGroup]);
  EXPECT_GT(m.mass[W::kImageGroup], 0.01);  // image is attended, just less
  EXPECT_GT(m.sink, 0.02);
  EXPECT_GT(m.sink, 10.0 * m.per_token[W::kTextGroup]);
  EXPECT_GT(m.salient_text, 3.0 * m.other_text);
}

TEST(MultimodalWorkload, RejectsBadConfig) {
  auto c = small_mm();
  c.system_tokens = 0;
  EXPECT_THROW(kvsynth::make_multimodal_workload(c), std::invalid_argument);
  c = small_mm();
  c.frame_change = 1.5f;
  EXPECT_THROW(kvsynth::make_multimodal_workload(c), std::invalid_argument);
}

}  // namespace
