// SPDX-License-Identifier: Apache-2.0
// CalibQuant (methods/quantization.md §4): every test oracle of the section, the store's
// lifecycle (pending → quantized spans), attention against an independent double-precision
// reference, composition with eviction, exact memory accounting and config validation.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/policies/evict/h2o.hpp"
#include "kvcompress/policies/evict/streaming_llm.hpp"
#include "kvcompress/policies/quant/calibquant.hpp"

namespace {

namespace kv = kvcompress;
using CQ = kv::quant::CalibQuant;
using Store = CQ::Store;
using kv::Modality;

std::vector<float> rand_floats(std::size_t n, float lo, float hi, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(n);
  for (auto& e : x) e = u(g);
  return x;
}

double f16(double x) { return kv::to_float(kv::half{kv::f32_to_f16_bits(static_cast<float>(x))}); }

/// A store with its own pool (tests of the Store contract without the cache).
struct StoreBox {
  StoreBox(int dim, std::size_t capacity, CQ::Config c = {})
      : cfg(c),
        pool(Store::block_bytes(dim, c), Store::max_blocks(capacity, c)),
        store(dim, c, kv::BlockTable(&pool, Store::max_blocks(capacity, c))),
        scratch(Store::scratch_floats(dim, c)), d(dim) {}
  void append(const std::vector<float>& k, const std::vector<float>& v, std::size_t n,
              const std::vector<Modality>& mods, std::size_t at = 0) {
    std::vector<std::int32_t> pos(n);
    kv::TokenInfo info{pos.data(), mods.data() + at};
    store.append(k.data() + at * d, v.data() + at * d, static_cast<std::size_t>(d), n, info, scratch.data());
  }
  void read_all(std::vector<float>& k, std::vector<float>& v) const {
    k.assign(store.size() * d, 0.0f);
    v.assign(store.size() * d, 0.0f);
    std::vector<float> s(Store::scratch_floats(d, cfg));
    store.read(0, store.size(), k.data(), v.data(), static_cast<std::size_t>(d), s.data());
  }
  CQ::Config cfg;
  kv::BlockPool pool;
  Store store;
  std::vector<float> scratch;
  int d;
};

/// Reference 1-bit quantization of one channel of a span (double, independent of the library):
/// inputs are staged in fp16, lo/hi = α·min/max, s and z rounded to fp16, q = round((x − z)/s)
/// clamped to {0, 1}, x̂ = s·q + z.
std::vector<double> ref_span_channel(const std::vector<float>& x, std::size_t first, std::size_t n, int d, int c,
                                     double alpha) {
  double mn = 1e300, mx = -1e300;
  for (std::size_t t = 0; t < n; ++t) {
    const double v = f16(x[(first + t) * d + c]);
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  const double lo = static_cast<float>(alpha) * static_cast<float>(mn);
  const double hi = static_cast<float>(alpha) * static_cast<float>(mx);
  const double s = f16(static_cast<float>(hi - lo)), z = f16(lo);
  std::vector<double> out(n);
  for (std::size_t t = 0; t < n; ++t) {
    const double v = f16(x[(first + t) * d + c]);
    const double q = s == 0.0 ? 0.0 : std::min(1.0, std::max(0.0, std::nearbyint((v - z) / s)));
    out[t] = s * q + z;
  }
  return out;
}

std::vector<Modality> labels(std::initializer_list<std::pair<Modality, int>> runs) {
  std::vector<Modality> m;
  for (auto [mod, n] : runs) m.insert(m.end(), static_cast<std::size_t>(n), mod);
  return m;
}

// ---- spec §4 test oracles ---------------------------------------------------------------------

TEST(CalibQuant, WorkedExampleOneChannel) {
  // v = [−2, −0.5, 1, 3], α = 0.5 → lo = −1, hi = 1.5, s = 2.5, q = [0,0,1,1], v̂ = [−1,−1,1.5,1.5].
  const int d = 64;
  StoreBox b(d, 64);
  std::vector<float> k(6 * d, 0.25f), v(6 * d, 0.25f);
  const float ex[4] = {-2.0f, -0.5f, 1.0f, 3.0f};
  for (int t = 0; t < 4; ++t) k[(1 + t) * d + 5] = ex[t];  // key channel 5, α_K = 0.5
  auto mods = labels({{Modality::kText, 1}, {Modality::kImage, 4}, {Modality::kText, 1}});
  b.append(k, v, 6, mods);
  b.append(k, v, 1, mods, 5);  // next append settles the completed span
  ASSERT_EQ(b.store.quantized_slots(), 4u);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  const float want[4] = {-1.0f, -1.0f, 1.5f, 1.5f};
  for (int t = 0; t < 4; ++t) EXPECT_EQ(rk[(1 + t) * d + 5], want[t]) << t;
}

TEST(CalibQuant, ReconstructionTakesExactlyTwoValuesPerChannel) {
  const int d = 64;
  const std::size_t n = 70;
  StoreBox b(d, 256);
  auto k = kvtest::random_kv(n, 1, d, 3), v = kvtest::random_kv(n, 1, d, 4);
  auto mods = labels({{Modality::kSystem, 5}, {Modality::kImage, 60}, {Modality::kText, 5}});
  b.append(k, v, n, mods);
  b.append(k, v, 1, mods, n - 1);
  ASSERT_EQ(b.store.quantized_slots(), 60u);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  for (int c = 0; c < d; ++c) {
    const auto ek = ref_span_channel(k, 5, 60, d, c, 0.5);
    const auto ev = ref_span_channel(v, 5, 60, d, c, 0.3);
    double mn = 1e300, mx = -1e300;
    for (std::size_t t = 0; t < 60; ++t) {
      mn = std::min(mn, f16(k[(5 + t) * d + c]));
      mx = std::max(mx, f16(k[(5 + t) * d + c]));
    }
    std::vector<double> levels;
    for (std::size_t t = 0; t < 60; ++t) {
      EXPECT_EQ(rk[(5 + t) * d + c], ek[t]) << "key c=" << c << " t=" << t;
      EXPECT_EQ(rv[(5 + t) * d + c], ev[t]) << "value c=" << c << " t=" << t;
      levels.push_back(rk[(5 + t) * d + c]);
    }
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    EXPECT_EQ(levels.size(), 2u) << c;
    EXPECT_NEAR(levels.front(), 0.5 * mn, 1e-3 * std::fabs(mn) + 1e-6);  // {α·min, α·max} (fp16 metadata)
    EXPECT_NEAR(levels.back(), 0.5 * mx, 2e-3 * (std::fabs(mx) + std::fabs(mn)) + 1e-6);
  }
}

TEST(CalibQuant, NonVisualSegmentsAreExactFp16) {
  const int d = 80;
  const std::size_t n = 40;
  StoreBox b(d, 128);
  auto k = kvtest::random_kv(n, 1, d, 5), v = kvtest::random_kv(n, 1, d, 6);
  auto mods = labels({{Modality::kSystem, 3}, {Modality::kImage, 20}, {Modality::kText, 7},
                      {Modality::kSpecial, 2}, {Modality::kGenerated, 8}});
  b.append(k, v, n, mods);
  b.append(k, v, 1, mods, n - 1);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  for (std::size_t t = 0; t < n + 1; ++t) {
    const std::size_t src = t < n ? t : n - 1;
    if (t >= 3 && t < 23) continue;
    for (int c = 0; c < d; ++c) {
      EXPECT_EQ(rk[t * d + c], f16(k[src * d + c]));
      EXPECT_EQ(rv[t * d + c], f16(v[src * d + c]));
    }
  }
}

TEST(CalibQuant, CalibrationMapWorkedExample) {
  // [−4, 0, 2, 6] → [−4, −1.2, 0.2, 3.0] (δ_max = −3, δ_min = 0).
  const auto f = kv::quant::common::logit_remap(-4.0f, 6.0f, 0.0f, -3.0f, false);
  ASSERT_TRUE(f.active);
  const float in[4] = {-4, 0, 2, 6}, want[4] = {-4.0f, -1.2f, 0.2f, 3.0f};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f(in[i]), want[i], 1e-5f);
  // Range 2 < 3: the [rec] guard leaves the row alone; the reference flag remaps (ranking reverses).
  const auto g = kv::quant::common::logit_remap(0.0f, 2.0f, 0.0f, -3.0f, false);
  EXPECT_FALSE(g.active);
  EXPECT_EQ(g(1.5f), 1.5f);
  const auto h = kv::quant::common::logit_remap(0.0f, 2.0f, 0.0f, -3.0f, true);
  EXPECT_NEAR(h(2.0f), -1.0f, 1e-5f);
  EXPECT_NEAR(h(0.0f), 0.0f, 1e-6f);
}

// ---- attention over the store ----------------------------------------------------------------

/// Double reference of one attention step over the store's dequantized contents, with the
/// calibration applied (in double) to the visual slots [vis) when `calib`.
std::vector<double> ref_attention(const std::vector<float>& rk, const std::vector<float>& rv, std::size_t n, int d,
                                  const float* q, const std::vector<bool>& visual, bool calib, bool always,
                                  std::vector<double>* logits_out = nullptr) {
  std::vector<double> l(n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (std::size_t j = 0; j < n; ++j) {
    double a = 0;
    for (int c = 0; c < d; ++c) a += static_cast<double>(static_cast<float>(q[c] * static_cast<float>(scale))) * rk[j * d + c];
    l[j] = a;
  }
  if (calib) {
    double m = 1e300, M = -1e300;
    for (std::size_t j = 0; j < n; ++j)
      if (visual[j]) m = std::min(m, l[j]), M = std::max(M, l[j]);
    const double width = (M - 3.0) - m;
    if (M >= m && (always || width > 0))
      for (std::size_t j = 0; j < n; ++j)
        if (visual[j]) l[j] = (l[j] - m) / (M - m + 1e-8) * width + m;
  }
  if (logits_out) *logits_out = l;
  const double mx = *std::max_element(l.begin(), l.end());
  double sum = 0;
  std::vector<double> out(d, 0.0);
  for (std::size_t j = 0; j < n; ++j) {
    const double p = std::exp(l[j] - mx);
    sum += p;
    for (int c = 0; c < d; ++c) out[c] += p * rv[j * d + c];
  }
  for (auto& o : out) o /= sum;
  return out;
}

/// The cache's attention recipe over one store: logits, one softmax, accumulate.
std::vector<float> store_attention(const Store& s, int d, const float* q, std::vector<float>* logits_out = nullptr) {
  const std::size_t n = s.size();
  std::vector<float> qs(d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int c = 0; c < d; ++c) qs[c] = q[c] * scale;
  std::vector<float> l(n);
  s.logits(qs.data(), 1, l.data(), n);
  if (logits_out) *logits_out = l;
  const float mx = *std::max_element(l.begin(), l.end());
  float sum = 0;
  for (auto& x : l) sum += (x = std::exp(x - mx));
  std::vector<float> out(d, 0.0f);
  s.accumulate(l.data(), n, 1, out.data());
  for (auto& o : out) o /= sum;
  return out;
}

void expect_store_attention(const StoreBox& b, const std::vector<bool>& visual, bool calib, bool always,
                            std::uint32_t seed) {
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  const auto q = rand_floats(b.d, -2.0f, 2.0f, seed);
  std::vector<double> ref_l;
  const auto ref = ref_attention(rk, rv, b.store.size(), b.d, q.data(), visual, calib, always, &ref_l);
  std::vector<float> got_l;
  const auto got = store_attention(b.store, b.d, q.data(), &got_l);
  double lmag = 0;
  for (double x : ref_l) lmag = std::max(lmag, std::fabs(x));
  for (std::size_t j = 0; j < ref_l.size(); ++j) EXPECT_NEAR(got_l[j], ref_l[j], 1e-4 * (1 + lmag)) << "slot " << j;
  double mag = 0;
  for (double x : ref) mag = std::max(mag, std::fabs(x));
  for (int c = 0; c < b.d; ++c) EXPECT_NEAR(got[c], ref[c], 1e-4 * (1 + mag)) << "channel " << c;
}

TEST(CalibQuant, PostScalingEqualsDequantizedDotWithoutCalibration) {
  for (int d : {64, 96, 128}) {
    CQ::Config cfg;
    cfg.calibrate = false;
    StoreBox b(d, 512, cfg);
    const std::size_t n = 300;
    auto k = kvtest::random_kv(n, 1, d, 7 + d), v = kvtest::random_kv(n, 1, d, 8 + d);
    auto mods = labels({{Modality::kSystem, 10}, {Modality::kImage, 150}, {Modality::kText, 20},
                        {Modality::kVideo, 100}, {Modality::kText, 20}});
    b.append(k, v, n, mods);
    b.append(k, v, 1, mods, n - 1);
    ASSERT_EQ(b.store.quantized_slots(), 250u);
    expect_store_attention(b, std::vector<bool>(b.store.size(), false), false, false, 11);
  }
}

TEST(CalibQuant, CalibratedAttentionMatchesReference) {
  const int d = 128;
  for (bool always : {false, true}) {
    CQ::Config cfg;
    cfg.calib_always = always;
    StoreBox b(d, 512, cfg);
    const std::size_t n = 200;
    auto k = kvtest::random_kv(n, 1, d, 21), v = kvtest::random_kv(n, 1, d, 22);
    for (auto& x : k) x *= 3.0f;  // logit range well above 3 so the remap is active
    auto mods = labels({{Modality::kSystem, 8}, {Modality::kImage, 90}, {Modality::kText, 12},
                        {Modality::kImage, 80}, {Modality::kText, 10}});
    b.append(k, v, n, mods);
    b.append(k, v, 1, mods, n - 1);
    std::vector<bool> visual(b.store.size(), false);
    for (std::size_t j = 8; j < 98; ++j) visual[j] = true;
    for (std::size_t j = 110; j < 190; ++j) visual[j] = true;
    expect_store_attention(b, visual, true, always, 23);
  }
}

TEST(CalibQuant, CalibrationSkippedWhenRangeBelowThreeUnlessFlag) {
  const int d = 64;
  for (bool always : {false, true}) {
    CQ::Config cfg;
    cfg.calib_always = always;
    StoreBox b(d, 256, cfg);
    const std::size_t n = 40;
    auto k = kvtest::random_kv(n, 1, d, 31, false), v = kvtest::random_kv(n, 1, d, 32);
    for (auto& x : k) x *= 0.01f;  // tiny logits: M − m ≪ 3
    auto mods = labels({{Modality::kText, 5}, {Modality::kImage, 30}, {Modality::kText, 5}});
    b.append(k, v, n, mods);
    b.append(k, v, 1, mods, n - 1);
    std::vector<bool> visual(b.store.size(), false);
    for (std::size_t j = 5; j < 35; ++j) visual[j] = true;
    expect_store_attention(b, visual, true, always, 33);
  }
}

// ---- lifecycle ---------------------------------------------------------------------------------

TEST(CalibQuant, SpansStayFp16UntilCompleteThenQuantizeOnNextAppend) {
  const int d = 64;
  StoreBox b(d, 256);
  auto k = kvtest::random_kv(100, 1, d, 41), v = kvtest::random_kv(100, 1, d, 42);
  auto mods = labels({{Modality::kSystem, 4}, {Modality::kImage, 50}, {Modality::kText, 46}});
  b.append(k, v, 30, mods);  // span open at the end of the chunk
  EXPECT_EQ(b.store.pending_slots(), 26u);
  EXPECT_EQ(b.store.quantized_slots(), 0u);
  b.append(k, v, 40, mods, 30);  // completes the span; the chunk is attended in fp16
  EXPECT_EQ(b.store.pending_slots(), 50u);
  EXPECT_EQ(b.store.quantized_slots(), 0u);
  b.append(k, v, 1, mods, 70);  // first decode step: 1-bit from here on
  EXPECT_EQ(b.store.pending_slots(), 0u);
  EXPECT_EQ(b.store.quantized_slots(), 50u);
  EXPECT_EQ(b.store.text_rows(), 4u + 16u + 1u);
  EXPECT_EQ(b.store.size(), 71u);
  // A decode step that completes a span quantizes it before the step's attention.
  StoreBox c(d, 256);
  auto m2 = labels({{Modality::kText, 4}, {Modality::kVideo, 20}, {Modality::kGenerated, 1}});
  c.append(k, v, 24, m2);
  EXPECT_EQ(c.store.pending_slots(), 20u);
  c.append(k, v, 1, m2, 24);
  EXPECT_EQ(c.store.quantized_slots(), 20u);
  // Image directly followed by video: two spans, each with its own parameters.
  StoreBox e(d, 256);
  auto m3 = labels({{Modality::kImage, 10}, {Modality::kVideo, 10}, {Modality::kText, 1}});
  e.append(k, v, 21, m3);
  e.append(k, v, 1, m3, 20);
  EXPECT_EQ(e.store.quantized_slots(), 20u);
  EXPECT_EQ(e.store.num_segments(), 3u);
  std::vector<float> rk, rv;
  e.read_all(rk, rv);
  const auto ref_img = ref_span_channel(k, 0, 10, d, 7, 0.5), ref_vid = ref_span_channel(k, 10, 10, d, 7, 0.5);
  for (int t = 0; t < 10; ++t) {
    EXPECT_EQ(rk[t * d + 7], ref_img[t]);
    EXPECT_EQ(rk[(10 + t) * d + 7], ref_vid[t]);
  }
}

TEST(CalibQuant, WithoutLabelsEverythingIsFp16) {
  const int d = 64;
  StoreBox b(d, 64);
  auto k = kvtest::random_kv(10, 1, d, 51), v = kvtest::random_kv(10, 1, d, 52);
  std::vector<float> s(Store::scratch_floats(d, {}));
  b.store.append(k.data(), v.data(), d, 10, s.data());
  EXPECT_EQ(b.store.quantized_slots() + b.store.pending_slots(), 0u);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  for (std::size_t i = 0; i < rk.size(); ++i) EXPECT_EQ(rk[i], f16(k[i]));
}

TEST(CalibQuant, IndexTableFlagChangesBitsNotValues) {
  const int d = 64;
  CQ::Config ref_cfg;
  ref_cfg.calib_index_lut = true;
  StoreBox a(d, 256), b(d, 256, ref_cfg);
  auto k = kvtest::random_kv(60, 1, d, 61), v = kvtest::random_kv(60, 1, d, 62);
  k[0 * d + 0] = 100.0f;  // first code of the span is 1 → the reference table is {1, 0}
  auto mods = labels({{Modality::kImage, 50}, {Modality::kText, 10}});
  for (StoreBox* x : {&a, &b}) {
    x->append(k, v, 60, mods);
    x->append(k, v, 1, mods, 59);
  }
  EXPECT_EQ(a.store.segment(0).kflip, 0);
  EXPECT_EQ(b.store.segment(0).kflip, 1);
  std::vector<float> ak, av, bk, bv;
  a.read_all(ak, av);
  b.read_all(bk, bv);
  EXPECT_EQ(ak, bk);
  EXPECT_EQ(av, bv);
  std::vector<bool> visual(a.store.size(), false);
  for (std::size_t j = 0; j < 50; ++j) visual[j] = true;
  expect_store_attention(b, visual, true, false, 63);
}

TEST(CalibQuant, SegmentOverflowKeepsFurtherVisualRunsInFp16) {
  // 200 alternations of one image token and one text token need 400 segments; the directory
  // holds kMaxSegments, later image tokens stay fp16 (exact), nothing is lost.
  const int d = 64;
  StoreBox b(d, 1024);
  const std::size_t n = 400;
  auto k = kvtest::random_kv(n, 1, d, 95), v = kvtest::random_kv(n, 1, d, 96);
  std::vector<Modality> mods(n);
  for (std::size_t i = 0; i < n; ++i) mods[i] = i % 2 ? Modality::kText : Modality::kImage;
  b.append(k, v, n, mods);
  b.append(k, v, 1, mods, n - 1);
  EXPECT_EQ(b.store.size(), n + 1);
  EXPECT_LE(b.store.num_segments(), CQ::kMaxSegments);
  const std::size_t spans = b.store.quantized_slots();
  EXPECT_GT(spans, 100u);
  EXPECT_LT(spans, 200u);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  // Single-token spans: min = max, s = 0, x̂ = fp16(α·x); the overflowed ones are exact fp16.
  for (std::size_t i = 0; i < n; i += 2) {
    const bool quantized = i / 2 < spans;
    for (int c = 0; c < d; ++c) {
      const double x = f16(k[i * d + c]);
      const double want = quantized ? f16(static_cast<float>(0.5f * static_cast<float>(x))) : x;
      ASSERT_EQ(rk[i * d + c], want) << "slot " << i << " c " << c;
    }
  }
}

// ---- memory ------------------------------------------------------------------------------------

TEST(CalibQuant, MemoryBytesAndBitsPerElementAreExact) {
  const int d = 128;
  const std::size_t N = 576;  // one InternVL-style image
  StoreBox b(d, 4096);
  auto k = kvtest::random_kv(700, 1, d, 71), v = kvtest::random_kv(700, 1, d, 72);
  auto mods = labels({{Modality::kSystem, 41}, {Modality::kImage, static_cast<int>(N)}, {Modality::kText, 83}});
  b.append(k, v, 700, mods);
  const std::size_t block = 512 * d;  // 128 fp16 K rows + 128 fp16 V rows
  const std::size_t fixed = 2 * 1024 * 4 + 256 * sizeof(CQ::Segment);
  EXPECT_EQ(Store::block_bytes(d, {}), block);
  EXPECT_EQ(b.store.memory_bytes(), (700 + 127) / 128 * block + fixed);  // all fp16 while pending
  b.append(k, v, 1, mods, 699);
  const std::size_t text = 41 + 83 + 1;
  const std::size_t units = 32 + N;  // parameter record + one unit per token
  EXPECT_EQ(b.store.text_rows(), text);
  EXPECT_EQ(b.store.visual_units(), units);
  EXPECT_EQ(b.store.unit_bytes(), static_cast<std::size_t>(d) / 4);
  EXPECT_EQ(b.store.memory_bytes(), ((text + 127) / 128 + (units + 2047) / 2048) * block + fixed);
  // Visual bits per element (K and V, codes + fp16 s and z per channel): 1 + 32/N.
  const double bpe = 8.0 * static_cast<double>(units * b.store.unit_bytes()) / (2.0 * N * d);
  EXPECT_DOUBLE_EQ(bpe, 1.0 + 32.0 / N);
  b.store.clear();
  EXPECT_EQ(b.store.memory_bytes(), fixed);
  EXPECT_EQ(b.pool.num_used(), 0u);
}

// ---- eviction and truncation at the store ------------------------------------------------------

TEST(CalibQuant, CompactKeepsPartlyLiveSpansAndFreesDeadOnes) {
  const int d = 64;
  StoreBox b(d, 512);
  const std::size_t n = 300;
  auto k = kvtest::random_kv(n, 1, d, 81), v = kvtest::random_kv(n, 1, d, 82);
  auto mods = labels({{Modality::kText, 20}, {Modality::kImage, 100}, {Modality::kText, 30},
                      {Modality::kImage, 120}, {Modality::kText, 30}});
  b.append(k, v, n, mods);
  b.append(k, v, 1, mods, n - 1);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  std::vector<std::uint8_t> keep(b.store.size(), 1), retained(b.store.size());
  for (std::size_t j = 0; j < 20; j += 2) keep[j] = 0;   // text: removed physically
  for (std::size_t j = 20; j < 119; ++j) keep[j] = 0;    // first span: one slot stays → kept whole
  for (std::size_t j = 150; j < 270; ++j) keep[j] = 0;   // second span: all dead → freed
  const std::size_t cnt = b.store.plan_compact(keep.data(), retained.data());
  std::vector<std::size_t> survivors;
  for (std::size_t j = 0; j < b.store.size(); ++j)
    if (retained[j]) survivors.push_back(j);
  EXPECT_EQ(cnt, survivors.size());
  EXPECT_EQ(cnt, 10u + 100u + 30u + 31u);
  const std::size_t units_before = b.store.visual_units();
  b.store.compact(retained.data(), b.scratch.data());
  EXPECT_EQ(b.store.size(), cnt);
  EXPECT_EQ(b.store.visual_units(), units_before - (32 + 120));
  EXPECT_EQ(b.store.quantized_slots(), 100u);
  std::vector<float> ck, cv;
  b.read_all(ck, cv);
  for (std::size_t i = 0; i < survivors.size(); ++i)
    for (int c = 0; c < d; ++c) {
      ASSERT_EQ(ck[i * d + c], rk[survivors[i] * d + c]) << i;
      ASSERT_EQ(cv[i * d + c], rv[survivors[i] * d + c]) << i;
    }
  EXPECT_EQ(b.store.memory_bytes(),
            ((b.store.text_rows() + 127) / 128 + (b.store.visual_units() + 2047) / 2048) * Store::block_bytes(d, {}) +
                Store::fixed_bytes(d, {}));
  // Attention still matches the dequantized contents after compaction.
  std::vector<bool> visual(b.store.size(), false);
  for (std::size_t i = 0; i < survivors.size(); ++i) visual[i] = survivors[i] >= 20 && survivors[i] < 120;
  expect_store_attention(b, visual, true, false, 83);
}

TEST(CalibQuant, TruncateInsideSpanKeepsItsParameters) {
  const int d = 64;
  StoreBox b(d, 256);
  auto k = kvtest::random_kv(90, 1, d, 91), v = kvtest::random_kv(90, 1, d, 92);
  auto mods = labels({{Modality::kText, 10}, {Modality::kImage, 70}, {Modality::kText, 10}});
  b.append(k, v, 90, mods);
  b.append(k, v, 1, mods, 89);
  std::vector<float> rk, rv;
  b.read_all(rk, rv);
  b.store.truncate(45, b.scratch.data());
  EXPECT_EQ(b.store.size(), 45u);
  EXPECT_EQ(b.store.quantized_slots(), 35u);
  EXPECT_EQ(b.store.text_rows(), 10u);
  std::vector<float> tk, tv;
  b.read_all(tk, tv);
  for (std::size_t i = 0; i < 45 * d; ++i) ASSERT_EQ(tk[i], rk[i]);
  // Appending after the cut continues in fp16 (text) after the shortened span.
  b.append(k, v, 5, mods, 80);
  EXPECT_EQ(b.store.size(), 50u);
  std::vector<float> ak, av;
  b.read_all(ak, av);
  for (int c = 0; c < d; ++c) EXPECT_EQ(ak[47 * d + c], f16(k[82 * d + c]));
}

// ---- config ------------------------------------------------------------------------------------

TEST(CalibQuant, BadConfigsAreRejected) {
  kv::CacheShape shape{1, 4, 2, 64, 1024};
  auto bad = [&](auto mutate, const char* arg) {
    CQ::Config c;
    mutate(c);
    kvtest::expect_invalid_argument([&] { c.validate(shape); }, arg);
  };
  bad([](CQ::Config& c) { c.alpha_k = 0.0f; }, "alpha_k");
  bad([](CQ::Config& c) { c.alpha_k = 1.5f; }, "alpha_k");
  bad([](CQ::Config& c) { c.alpha_v = -0.3f; }, "alpha_v");
  bad([](CQ::Config& c) { c.delta_min = NAN; }, "delta_min");
  bad([](CQ::Config& c) { c.delta_max = INFINITY; }, "delta_max");
  kv::CacheShape big = shape;
  big.capacity = CQ::kMaxCapacity + 1;
  kvtest::expect_invalid_argument([&] { CQ::Config{}.validate(big); }, "capacity");
  using Cache = kv::KVCache<kv::Policy<kv::evict::None, kv::merge::None, CQ>>;
  kv::Policy<kv::evict::None, kv::merge::None, CQ>::Config pc;
  pc.quant.alpha_v = 2.0f;
  kvtest::expect_invalid_argument([&] { Cache c(shape, pc); }, "alpha_v");
  CQ::Config defaults;
  EXPECT_EQ(defaults.alpha_k, 0.5f);
  EXPECT_EQ(defaults.alpha_v, 0.3f);
  EXPECT_EQ(defaults.delta_min, 0.0f);
  EXPECT_EQ(defaults.delta_max, -3.0f);
}

// ---- through the cache -------------------------------------------------------------------------

template <class P>
void run_cache(typename P::Config cfg, std::size_t decode_steps, std::uint32_t seed, bool expect_evictions) {
  const kv::CacheShape shape{2, 8, 2, 64, 1024};
  kv::KVCache<P> cache(shape, cfg);
  const std::size_t T = 260;
  auto mods = labels({{Modality::kSystem, 10}, {Modality::kImage, 196}, {Modality::kText, 54}});
  const int hd = shape.num_kv_heads * shape.head_dim, qd = shape.num_q_heads * shape.head_dim;
  for (int l = 0; l < shape.num_layers; ++l) {
    auto k = kvtest::random_kv(T, shape.num_kv_heads, shape.head_dim, seed + l);
    auto v = kvtest::random_kv(T, shape.num_kv_heads, shape.head_dim, seed + 10 + l);
    cache.append(l, k.data(), v.data(), T, mods.data());
    auto q = rand_floats(T * qd, -1.0f, 1.0f, seed + 20 + l);
    std::vector<float> out(T * qd);
    cache.attend(l, q.data(), T, out.data());
    kvtest::expect_attention_matches(cache, l, q, T, out, 1e-4, 1e-4);
  }
  cache.end_prefill();
  for (std::size_t s = 0; s < decode_steps; ++s)
    for (int l = 0; l < shape.num_layers; ++l) {
      auto k = kvtest::random_kv(1, shape.num_kv_heads, shape.head_dim, seed + 100 + 7 * s + l);
      auto v = kvtest::random_kv(1, shape.num_kv_heads, shape.head_dim, seed + 200 + 7 * s + l);
      const Modality g = Modality::kGenerated;
      cache.append(l, k.data(), v.data(), 1, &g);
      auto q = rand_floats(qd, -1.0f, 1.0f, seed + 300 + 7 * s + l);
      std::vector<float> out(qd);
      cache.attend(l, q.data(), 1, out.data());
      kvtest::expect_attention_matches(cache, l, q, 1, out, 1e-4, 1e-4);
    }
  (void)hd;
  if (expect_evictions) {
    EXPECT_LT(cache.size(0, 0), T + decode_steps);
  }
  // The cache forwards the labels (core/token_info.hpp): the image span is 1-bit after decode
  // starts (all of it without eviction; what eviction left of it otherwise).
  const auto& st = cache.stream(0, 0);
  if (expect_evictions) {
    EXPECT_LE(st.quantized_slots(), 196u);
  } else {
    EXPECT_EQ(st.quantized_slots(), 196u);
    EXPECT_EQ(st.pending_slots(), 0u);
  }
}

TEST(CalibQuant, AttentionThroughCacheWithMixedModalities) {
  using P = kv::Policy<kv::evict::None, kv::merge::None, CQ>;
  P::Config cfg;
  cfg.quant.calibrate = false;  // the oracle (reference/attention_reference.hpp) has no remap
  run_cache<P>(cfg, 20, 1000, false);
}

TEST(CalibQuant, CalibratedAttentionThroughCache) {
  // One layer, GQA 4:1; the oracle applies the remap (in double) per query head over the visual
  // slots of the cache's own dequantized contents.
  using P = kv::Policy<kv::evict::None, kv::merge::None, CQ>;
  const kv::CacheShape shape{1, 4, 1, 128, 512};
  kv::KVCache<P> cache(shape);
  const std::size_t T = 300;
  auto mods = labels({{Modality::kSystem, 12}, {Modality::kImage, 256}, {Modality::kText, 32}});
  auto k = kvtest::random_kv(T + 1, 1, 128, 7001), v = kvtest::random_kv(T + 1, 1, 128, 7002);
  for (auto& x : k) x *= 2.5f;
  cache.append(0, k.data(), v.data(), T, mods.data());
  const Modality g = Modality::kGenerated;
  cache.append(0, k.data() + T * 128, v.data() + T * 128, 1, &g);
  ASSERT_EQ(cache.stream(0, 0).quantized_slots(), 256u);
  auto q = rand_floats(4 * 128, -2.0f, 2.0f, 7003);
  std::vector<float> out(4 * 128);
  cache.attend(0, q.data(), 1, out.data());
  const std::size_t n = cache.size(0, 0);
  std::vector<float> rk(n * 128), rv(n * 128);
  cache.materialize(0, rk.data(), rv.data());
  std::vector<bool> visual(n, false);
  for (std::size_t j = 12; j < 268; ++j) visual[j] = true;
  for (int h = 0; h < 4; ++h) {
    const auto ref = ref_attention(rk, rv, n, 128, q.data() + h * 128, visual, true, false);
    double mag = 0;
    for (double x : ref) mag = std::max(mag, std::fabs(x));
    for (int c = 0; c < 128; ++c) EXPECT_NEAR(out[h * 128 + c], ref[c], 1e-4 * (1 + mag)) << "head " << h << " c " << c;
  }
}

TEST(CalibQuant, ComposesWithH2O) {
  using P = kv::Policy<kv::evict::H2O, kv::merge::None, CQ>;
  P::Config cfg;
  cfg.evict.heavy_budget = 64;
  cfg.evict.recent_budget = 64;
  cfg.quant.calibrate = false;
  run_cache<P>(cfg, 30, 2000, true);
}

TEST(CalibQuant, ComposesWithStreamingLLM) {
  using P = kv::Policy<kv::evict::StreamingLLM, kv::merge::None, CQ>;
  P::Config cfg;
  cfg.evict.sink_tokens = 4;
  cfg.evict.window_tokens = 100;
  cfg.quant.calibrate = false;
  run_cache<P>(cfg, 30, 3000, true);
}

}  // namespace
