// SPDX-License-Identifier: Apache-2.0
// Two-tier token-wise store (quant::MixedPrecision, ZipVL eviction spec §7 step 5): stored rows
// against an independent re-quantization and the min–max error bound, fused logits/accumulate
// against double-precision sums over read() rows, the encoded-prefix / pending-window rules,
// exact memory accounting by hand, compaction, truncation, clearing, no heap allocation, and the
// store inside KVCache.

#include "support/allocation_counter.hpp"  // defines the counting operator new (one TU per exe)

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "kvcompress/kvcompress.hpp"
#include "kvcompress/policies/quant/mixed_precision.hpp"
#include "reference/float16_reference.hpp"
#include "reference/kivi_reference.hpp"
#include "support/cache_test_support.hpp"
#include "support/expect_invalid.hpp"
#include "support/store_harness.hpp"

namespace {

using namespace kvcompress;
using Zip = quant::ZipVLMixed;
constexpr PrecisionTier P = PrecisionTier::kPending, L = PrecisionTier::kLow, H = PrecisionTier::kHigh;

float f16(float x) { return static_cast<float>(kvref::round_to_f16(x)); }

/// One store on its own pool, with its scratch.
template <class Q>
struct Harness : kvtest::StoreHarness<Q> {
  using kvtest::StoreHarness<Q>::store;
  using kvtest::StoreHarness<Q>::d;
  using kvtest::StoreHarness<Q>::scratch;
  Harness(int d_, std::size_t window, std::size_t capacity) : kvtest::StoreHarness<Q>(d_, make_cfg(window), capacity) {}
  static typename Q::Config make_cfg(std::size_t w) {
    typename Q::Config c;
    c.window = w;
    return c;
  }
  void append(const float* k, const float* v, std::size_t n, const PrecisionTier* tier) {
    TokenInfo info;
    info.tier = tier;
    kvtest::StoreHarness<Q>::append(k, v, n, info);
  }
  void apply(const std::vector<PrecisionTier>& t) { store->apply_tiers(t.data(), scratch.data()); }
  std::vector<float> read_k() const { return read(true); }
  std::vector<float> read_v() const { return read(false); }
  std::vector<float> read(bool keys) const {
    const std::size_t n = store->size();
    std::vector<float> k(n * d + 1), v(n * d + 1);
    std::vector<float> s(scratch.size());
    store->read(0, n, k.data(), v.data(), static_cast<std::size_t>(d), s.data());
    k.resize(n * d);
    v.resize(n * d);
    return keys ? k : v;
  }
};

std::vector<PrecisionTier> random_tiers(std::size_t n, std::uint32_t seed, bool with_pending = false) {
  std::mt19937 g(seed);
  std::vector<PrecisionTier> t(n);
  for (auto& x : t) x = with_pending && g() % 4 == 0 ? P : (g() % 2 ? H : L);
  return t;
}

/// Independent model of the encoding: c_i = sqrt(max_t |fp16 K[t][i]|) over `rows` rows (1 where
/// 0), then KIVI value-row quantization (reference/kivi_reference.hpp) of fp16(K)/c and fp16(V).
struct Model {
  int d = 0;
  std::vector<float> c;
  Model(const std::vector<float>& k, std::size_t rows, int d_) : d(d_), c(static_cast<std::size_t>(d_), 0.0f) {
    for (std::size_t t = 0; t < rows; ++t)
      for (int i = 0; i < d; ++i) c[i] = std::max(c[i], std::fabs(f16(k[t * d + i])));
    for (float& x : c) x = x > 0.0f ? std::sqrt(x) : 1.0f;
  }
  std::vector<float> normalised(const float* k) const {
    std::vector<float> y(static_cast<std::size_t>(d));
    for (int i = 0; i < d; ++i) y[i] = f16(k[i]) / c[i];
    return y;
  }
};

/// max |x − x̂| of a KIVI min–max group quantization of x (fp32 input, fp16 metadata), computed
/// from the group's range in double: s16/2 + L·|s − s16| + |lo − z16| plus fp32 slack.
double group_bound(const float* x, int n, int bits) {
  double lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min<double>(lo, x[i]);
    hi = std::max<double>(hi, x[i]);
  }
  const double levels = (1 << bits) - 1;
  const double s = (hi - lo) / levels, s16 = kvref::round_to_f16(s);
  return s16 / 2 + levels * std::fabs(s - s16) + std::fabs(lo - kvref::round_to_f16(lo)) +
         1e-6 * (std::fabs(lo) + std::fabs(hi));
}

/// Every encoded row j of the store (tier t[j]) equals the model's re-quantization of input row j
/// and lies within the min–max bound of it (keys: bound of the normalised group times c_i);
/// window rows equal the fp16 rounding of the input.
template <class Q>
void expect_rows_match_model(const Harness<Q>& h, const std::vector<float>& k, const std::vector<float>& v,
                             const Model& m, int group) {
  const int d = h.d;
  const auto rk = h.read_k(), rv = h.read_v();
  const std::size_t ne = h.store->encoded();
  for (std::size_t j = 0; j < h.store->size(); ++j) {
    const float* kj = k.data() + j * d;
    const float* vj = v.data() + j * d;
    if (j >= ne) {
      for (int i = 0; i < d; ++i) {
        ASSERT_EQ(rk[j * d + i], f16(kj[i])) << "window slot " << j;
        ASSERT_EQ(rv[j * d + i], f16(vj[i])) << "window slot " << j;
      }
      continue;
    }
    const PrecisionTier t = h.store->tier(j);
    ASSERT_NE(t, P) << j;
    const int bits = t == H ? Q::kHighBits : Q::kLowBits;
    const auto kn = m.normalised(kj);
    std::vector<float> vh(static_cast<std::size_t>(d));
    for (int i = 0; i < d; ++i) vh[i] = f16(vj[i]);
    const auto kq = kvref::kivi_quantize_values(kn.data(), d, 1, d, group, bits);
    const auto vq = kvref::kivi_quantize_values(vh.data(), d, 1, d, group, bits);
    for (int g = 0; g < d / group; ++g) {
      const double bk = group_bound(kn.data() + g * group, group, bits);
      const double bv = group_bound(vh.data() + g * group, group, bits);
      for (int i = g * group; i < (g + 1) * group; ++i) {
        const double ref_k = kq.dequant(0, i) * m.c[i], ref_v = vq.dequant(0, i);
        ASSERT_NEAR(rk[j * d + i], ref_k, 1e-6 * std::fabs(ref_k) + 1e-7) << "slot " << j << " ch " << i;
        ASSERT_NEAR(rv[j * d + i], ref_v, 1e-6 * std::fabs(ref_v) + 1e-7) << "slot " << j << " ch " << i;
        ASSERT_LE(std::fabs(rk[j * d + i] - f16(kj[i])), bk * m.c[i] * (1 + 1e-6)) << "slot " << j << " ch " << i;
        ASSERT_LE(std::fabs(rv[j * d + i] - vh[i]), bv) << "slot " << j << " ch " << i;
      }
    }
  }
}

/// Fused logits / accumulate equal double-precision sums over the store's read() rows.
template <class Q>
void expect_attention_matches_read(const Harness<Q>& h, int rows, std::uint32_t seed) {
  const int d = h.d;
  const std::size_t n = h.store->size();
  const auto rk = h.read_k(), rv = h.read_v();
  const auto q = kvtest::random_kv(static_cast<std::size_t>(rows), 1, d, seed);
  const std::size_t ldl = n + 3;
  std::vector<float> lg(static_cast<std::size_t>(rows) * ldl, 0.0f);
  h.store->logits(q.data(), rows, lg.data(), ldl);
  std::mt19937 g(seed + 1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> p(static_cast<std::size_t>(rows) * ldl);
  for (auto& x : p) x = u(g);
  std::vector<float> out(static_cast<std::size_t>(rows) * d, 0.0f);
  h.store->accumulate(p.data(), ldl, rows, out.data());
  for (int r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < n; ++j) {
      double ref = 0, mag = 0;
      for (int i = 0; i < d; ++i) {
        ref += double(q[r * d + i]) * rk[j * d + i];
        mag += std::fabs(double(q[r * d + i]) * rk[j * d + i]);
      }
      ASSERT_NEAR(lg[r * ldl + j], ref, 1e-4 * mag + 1e-6) << "row " << r << " slot " << j;
    }
    for (int i = 0; i < d; ++i) {
      double ref = 0, mag = 0;
      for (std::size_t j = 0; j < n; ++j) {
        ref += double(p[r * ldl + j]) * rv[j * d + i];
        mag += std::fabs(double(p[r * ldl + j]) * rv[j * d + i]);
      }
      ASSERT_NEAR(out[r * d + i], ref, 1e-4 * mag + 1e-6) << "row " << r << " ch " << i;
    }
  }
}

/// Blocks a greedy in-order packing of rows with these tiers needs (independent of the store):
/// B = 64 high rows of kivi bytes per block, a row that does not fit starts the next block.
std::size_t blocks_for(const std::vector<PrecisionTier>& tiers, std::size_t high_row, std::size_t low_row) {
  const std::size_t region = 64 * high_row;
  std::size_t blocks = 0, used = region;
  for (PrecisionTier t : tiers) {
    const std::size_t rb = t == L ? low_row : high_row;
    if (used + rb > region) {
      ++blocks;
      used = 0;
    }
    used += rb;
  }
  return blocks;
}

// d = 128, <4, 2, 32>: high row 64 code + 16 metadata bytes = 80, low row 32 + 16 = 48; a block
// holds a 64·80 = 5120-byte K region and V region and a header of 4 + ⌊5120/48⌋ = 110 → 128 bytes.
constexpr std::size_t kHigh128 = 80, kLow128 = 48, kBlock128 = 128 + 2 * 5120;
constexpr std::size_t fixed128(std::size_t window) { return window * (2 * 128 * 2 + 1) + 128 * 4; }

TEST(MixedPrecisionConfig, RejectsBadHeadDimAndWindow) {
  Zip::Config cfg;
  cfg.validate(CacheShape{1, 1, 1, 128, 64});
  cfg.validate(CacheShape{1, 1, 1, 96, 64});
  kvtest::expect_invalid_argument([&] { cfg.validate(CacheShape{1, 1, 1, 80, 64}); }, "head_dim");
  cfg.window = 0;
  kvtest::expect_invalid_argument([&] { cfg.validate(CacheShape{1, 1, 1, 128, 64}); }, "window");
  EXPECT_STREQ(Zip::kName, "zipvl_mixed");
  EXPECT_STREQ((quant::MixedPrecision<8, 4, 32>::kName), "mixed_precision");
  EXPECT_TRUE(Zip::kPrecisionTiers);
}

// Decided tiers are encoded at once; every row matches the independent re-quantization and the
// min–max bound, with c over every row the store held or was given at its first encode.
template <class Q>
void round_trip(int d, std::size_t n, std::uint32_t seed) {
  Harness<Q> h(d, 16, 512);
  const auto k = kvtest::random_kv(n, 1, d, seed);
  const auto v = kvtest::random_kv(n, 1, d, seed + 1, false);
  const auto t = random_tiers(n, seed + 2);
  h.append(k.data(), v.data(), n, t.data());
  ASSERT_EQ(h.store->encoded(), n);
  for (std::size_t j = 0; j < n; ++j) ASSERT_EQ(h.store->tier(j), t[j]) << j;
  const Model m(k, n, d);
  for (int i = 0; i < d; ++i) ASSERT_EQ(h.store->key_scales()[i], m.c[i]) << i;
  expect_rows_match_model(h, k, v, m, Q::kGroup);
}
TEST(MixedPrecisionRoundTrip, ZipVLD128) { round_trip<Zip>(128, 300, 1); }
TEST(MixedPrecisionRoundTrip, ZipVLD64) { round_trip<Zip>(64, 150, 2); }
TEST(MixedPrecisionRoundTrip, ZipVLD256) { round_trip<Zip>(256, 200, 3); }
TEST(MixedPrecisionRoundTrip, EightFourD96) { round_trip<quant::MixedPrecision<8, 4, 32>>(96, 200, 4); }

// The 2-bit tier really is coarser: mean squared error of the low rows exceeds the high rows'.
TEST(MixedPrecisionRoundTrip, LowTierIsCoarser) {
  Harness<Zip> hl(128, 8, 256), hh(128, 8, 256);
  const auto k = kvtest::random_kv(200, 1, 128, 9);
  const std::vector<PrecisionTier> tl(200, L), th(200, H);
  hl.append(k.data(), k.data(), 200, tl.data());
  hh.append(k.data(), k.data(), 200, th.data());
  const auto rl = hl.read_v(), rh = hh.read_v();
  double el = 0, eh = 0;
  for (std::size_t i = 0; i < k.size(); ++i) {
    el += std::pow(rl[i] - f16(k[i]), 2);
    eh += std::pow(rh[i] - f16(k[i]), 2);
  }
  EXPECT_GT(el, 4 * eh);
}

// Fused kernels over runs of both tiers plus the fp16 window, for 1..16 query rows.
TEST(MixedPrecisionAttention, LogitsAndAccumulateMatchDoubleSumsOverReadRows) {
  for (int d : {64, 128, 256}) {
    Harness<Zip> h(d, 32, 600);
    const std::size_t n = 437;
    const auto k = kvtest::random_kv(n, 1, d, 20 + d);
    const auto v = kvtest::random_kv(n, 1, d, 21 + d, false);
    auto t = random_tiers(n, 22);
    std::fill(t.end() - 20, t.end(), P);  // a pending tail stays in the window
    h.append(k.data(), v.data(), 300, t.data());
    for (std::size_t j = 300; j < n; ++j) h.append(k.data() + j * d, v.data() + j * d, 1, t.data() + j);
    ASSERT_EQ(h.store->encoded(), n - 20);
    expect_rows_match_model(h, k, v, Model(k, 300, d), Zip::kGroup);
    for (int rows : {1, 5, 16}) expect_attention_matches_read(h, rows, 30 + rows);
  }
}

// Pending rows stay exact (fp16 of the input) until apply_tiers decides them; only the decided
// front leaves the window, in order.
TEST(MixedPrecisionWindow, PendingRowsStayExactUntilDecided) {
  const int d = 64;
  Harness<Zip> h(d, 16, 256);
  const auto k = kvtest::random_kv(10, 1, d, 40);
  const auto v = kvtest::random_kv(10, 1, d, 41, false);
  h.append(k.data(), v.data(), 10, nullptr);
  EXPECT_EQ(h.store->encoded(), 0u);
  EXPECT_EQ(h.store->memory_bytes(), Zip::Store::fixed_bytes(d, h.cfg));
  const Model m(k, 10, d);
  expect_rows_match_model(h, k, v, m, 32);  // all window: exact
  h.apply({H, L, L, H, P, H, L, L, L, L});
  EXPECT_EQ(h.store->encoded(), 4u);  // slot 4 pending blocks 5..9
  EXPECT_EQ(h.store->tier(4), P);
  EXPECT_EQ(h.store->tier(5), H);
  expect_rows_match_model(h, k, v, m, 32);
  expect_attention_matches_read(h, 3, 42);
  h.apply({H, L, L, H, L, H, L, L, L, P});
  EXPECT_EQ(h.store->encoded(), 9u);
  EXPECT_EQ(h.store->tier(4), L);
  expect_rows_match_model(h, k, v, m, 32);
  // An appended decided token behind the pending one waits; it is encoded once the front is.
  const auto k2 = kvtest::random_kv(1, 1, d, 43);
  h.append(k2.data(), k2.data(), 1, &L);
  EXPECT_EQ(h.store->encoded(), 9u);
  h.apply({H, L, L, H, L, H, L, L, L, H, L});
  EXPECT_EQ(h.store->encoded(), 11u);
  EXPECT_EQ(h.store->tier(9), H);
  EXPECT_EQ(h.store->tier(10), L);
}

// A window overflow encodes the oldest slots, pending ones at the high tier; c is computed at that
// first encode over the window and the whole appended chunk.
TEST(MixedPrecisionWindow, OverflowEncodesOldestPendingAtHighTier) {
  const int d = 64;
  {
    Harness<Zip> h(d, 8, 256);
    const auto k = kvtest::random_kv(30, 1, d, 50);
    for (std::size_t j = 0; j < 12; ++j) h.append(k.data() + j * d, k.data() + j * d, 1, nullptr);
    EXPECT_EQ(h.store->size(), 12u);
    EXPECT_EQ(h.store->encoded(), 4u);
    for (std::size_t j = 0; j < 4; ++j) EXPECT_EQ(h.store->tier(j), H);
    const Model m(k, 9, d);  // first encode: the 8 window rows plus the one being appended
    for (int i = 0; i < d; ++i) ASSERT_EQ(h.store->key_scales()[i], m.c[i]);
    expect_rows_match_model(h, k, k, m, 32);
  }
  {
    Harness<Zip> h(d, 8, 256);
    const auto k = kvtest::random_kv(30, 1, d, 51);
    h.append(k.data(), k.data(), 5, nullptr);
    std::vector<PrecisionTier> t(25, L);
    h.append(k.data() + 5 * d, k.data() + 5 * d, 25, t.data());  // overflow: slots 0..4 go high
    EXPECT_EQ(h.store->encoded(), 30u);  // then the low front drains completely
    for (std::size_t j = 0; j < 30; ++j) EXPECT_EQ(h.store->tier(j), j < 5 ? H : L) << j;
    const Model m(k, 30, d);
    for (int i = 0; i < d; ++i) ASSERT_EQ(h.store->key_scales()[i], m.c[i]);
    expect_rows_match_model(h, k, k, m, 32);
  }
  {  // a prefill chunk larger than the window
    Harness<Zip> h(d, 8, 256);
    const auto k = kvtest::random_kv(20, 1, d, 52);
    h.append(k.data(), k.data(), 20, nullptr);
    EXPECT_EQ(h.store->encoded(), 12u);
    expect_rows_match_model(h, k, k, Model(k, 20, d), 32);
  }
}

// memory_bytes() by hand: blocks × block bytes + rings + c; low rows pack 80/48 denser.
TEST(MixedPrecisionStorage, MemoryBytesByHand) {
  EXPECT_EQ(Zip::Store::block_bytes(128, Zip::Config{}), kBlock128);
  EXPECT_EQ(Zip::Store::fixed_bytes(128, Zip::Config{}), fixed128(128));
  EXPECT_EQ(Zip::Store::max_blocks(200, Zip::Config{}), 4u);
  const auto k = kvtest::random_kv(200, 1, 128, 60);
  std::vector<PrecisionTier> hi(200, H), lo(200, L), alt(200);
  for (std::size_t j = 0; j < 200; ++j) alt[j] = j % 2 ? L : H;
  std::size_t bytes[3];
  int i = 0;
  for (const auto* t : {&hi, &lo, &alt}) {
    Harness<Zip> h(128, 16, 200);
    h.append(k.data(), k.data(), 200, t->data());
    bytes[i++] = h.store->memory_bytes();
  }
  EXPECT_EQ(bytes[0], 4 * kBlock128 + fixed128(16));  // ⌈200/64⌉ blocks
  EXPECT_EQ(bytes[1], 2 * kBlock128 + fixed128(16));  // ⌊5120/48⌋ = 106 rows per block
  EXPECT_EQ(bytes[2], 3 * kBlock128 + fixed128(16));  // 40 (H, L) pairs of 128 bytes per block
  EXPECT_LT(bytes[1], bytes[0]);
}

// Compaction with mixed tiers keeps exactly the retained rows (bit for bit: no re-quantization),
// their tiers, and the packing an independent greedy model predicts; the store keeps working.
TEST(MixedPrecisionCompact, KeepsRetainedRowsAndShrinks) {
  const int d = 128;
  for (std::uint32_t seed : {70u, 71u, 72u}) {
    Harness<Zip> h(d, 32, 800);
    const std::size_t n = 500;
    const auto k = kvtest::random_kv(n, 1, d, seed);
    const auto v = kvtest::random_kv(n, 1, d, seed + 100, false);
    auto t = random_tiers(n, seed);
    std::fill(t.end() - 25, t.end(), P);
    h.append(k.data(), v.data(), n, t.data());
    ASSERT_EQ(h.store->encoded(), n - 25);
    const auto bk = h.read_k(), bv = h.read_v();
    std::vector<PrecisionTier> bt(n);
    for (std::size_t j = 0; j < n; ++j) bt[j] = h.store->tier(j);
    std::mt19937 g(seed);
    std::vector<std::uint8_t> keep(n), retained(n);
    for (auto& x : keep) x = seed == 72u ? 1 : (g() % 3 != 0);  // seed 72: keep all
    if (seed == 71u) std::fill(keep.begin(), keep.begin() + 200, 0);  // whole blocks vanish
    const std::size_t kept = h.store->plan_compact(keep.data(), retained.data());
    ASSERT_EQ(kept, static_cast<std::size_t>(std::count(keep.begin(), keep.end(), 1)));
    ASSERT_TRUE(std::equal(keep.begin(), keep.end(), retained.begin()));
    h.store->compact(retained.data(), h.scratch.data());
    ASSERT_EQ(h.store->size(), kept);
    const auto ak = h.read_k(), av = h.read_v();
    std::vector<PrecisionTier> kept_tiers;
    std::size_t o = 0;
    for (std::size_t j = 0; j < n; ++j) {
      if (!keep[j]) continue;
      for (int i = 0; i < d; ++i) {
        ASSERT_EQ(ak[o * d + i], bk[j * d + i]) << "slot " << j;
        ASSERT_EQ(av[o * d + i], bv[j * d + i]) << "slot " << j;
      }
      ASSERT_EQ(h.store->tier(o), bt[j]) << j;
      if (j < n - 25) kept_tiers.push_back(bt[j]);
      ++o;
    }
    EXPECT_EQ(h.store->encoded(), kept_tiers.size());
    EXPECT_EQ(h.store->memory_bytes(), blocks_for(kept_tiers, kHigh128, kLow128) * kBlock128 + fixed128(32));
    expect_attention_matches_read(h, 4, seed);
    // Appending after compaction continues the packing.
    const auto k2 = kvtest::random_kv(40, 1, d, seed + 200);
    const auto t2 = random_tiers(40, seed + 200);
    h.apply(std::vector<PrecisionTier>(h.store->size(), H));  // decide the pending tail
    for (std::size_t j = kept_tiers.size(); j < h.store->size(); ++j) kept_tiers.push_back(H);
    h.append(k2.data(), k2.data(), 40, t2.data());
    kept_tiers.insert(kept_tiers.end(), t2.begin(), t2.end());
    EXPECT_EQ(h.store->encoded(), kept_tiers.size());
    EXPECT_EQ(h.store->memory_bytes(), blocks_for(kept_tiers, kHigh128, kLow128) * kBlock128 + fixed128(32));
    expect_attention_matches_read(h, 2, seed + 1);
  }
  Harness<Zip> h(d, 8, 100);  // compacting everything away empties the store
  const auto k = kvtest::random_kv(50, 1, d, 80);
  const auto t = random_tiers(50, 80);
  h.append(k.data(), k.data(), 50, t.data());
  std::vector<std::uint8_t> none(50, 0), retained(50);
  EXPECT_EQ(h.store->plan_compact(none.data(), retained.data()), 0u);
  h.store->compact(retained.data(), h.scratch.data());
  EXPECT_EQ(h.store->size(), 0u);
  EXPECT_EQ(h.store->memory_bytes(), fixed128(8));
}

// truncate(m) drops slots ≥ m (inside the window, mid-block, at a block edge, to zero); the
// surviving rows are unchanged and appends continue from m.
TEST(MixedPrecisionTruncate, DropsTailKeepsPrefix) {
  const int d = 128;
  const std::size_t n = 300;
  const auto k = kvtest::random_kv(n, 1, d, 90);
  auto t = random_tiers(n, 91);
  std::fill(t.end() - 10, t.end(), P);
  for (std::size_t m : {295u, 290u, 150u, 64u, 1u, 0u}) {
    Harness<Zip> h(d, 16, 400);
    h.append(k.data(), k.data(), n, t.data());
    const auto before = h.read_k();
    h.store->truncate(m, h.scratch.data());
    ASSERT_EQ(h.store->size(), m);
    ASSERT_EQ(h.store->encoded(), std::min<std::size_t>(m, n - 10));
    const auto after = h.read_k();
    ASSERT_TRUE(std::equal(after.begin(), after.end(), before.begin())) << m;
    const std::vector<PrecisionTier> prefix(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(h.store->encoded()));
    EXPECT_EQ(h.store->memory_bytes(), blocks_for(prefix, kHigh128, kLow128) * kBlock128 + fixed128(16)) << m;
    h.append(k.data(), k.data(), 20, t.data());  // continue
    ASSERT_EQ(h.store->size(), m + 20);
    expect_attention_matches_read(h, 2, 92);
  }
}

// clear() empties the store and resets c: the next first encode computes it from new rows.
TEST(MixedPrecisionClear, ResetsEverything) {
  const int d = 64;
  Harness<Zip> h(d, 8, 256);
  const auto k = kvtest::random_kv(100, 1, d, 95);
  const auto t = random_tiers(100, 95);
  h.append(k.data(), k.data(), 100, t.data());
  h.store->clear();
  EXPECT_EQ(h.store->size(), 0u);
  EXPECT_EQ(h.store->encoded(), 0u);
  EXPECT_EQ(h.store->memory_bytes(), Zip::Store::fixed_bytes(d, h.cfg));
  std::vector<float> k2(k.begin(), k.begin() + 40 * d);
  for (auto& x : k2) x *= 0.01f;
  h.append(k2.data(), k2.data(), 40, t.data());
  const Model m(k2, 40, d);
  for (int i = 0; i < d; ++i) ASSERT_EQ(h.store->key_scales()[i], m.c[i]);
  expect_rows_match_model(h, k2, k2, m, 32);
}

// Once constructed, nothing on the hot path allocates.
TEST(MixedPrecisionNoAllocation, HotPathsAfterConstruction) {
  const int d = 128;
  Harness<Zip> h(d, 32, 1200);
  const auto k = kvtest::random_kv(600, 1, d, 100);
  const auto t = random_tiers(600, 100, true);
  std::vector<PrecisionTier> all(1200, L);
  const auto q = kvtest::random_kv(16, 1, d, 101);
  std::vector<float> lg(16 * 1200), out(16 * d), p(16 * 1200, 0.5f);
  std::vector<std::uint8_t> keep(1200, 1), retained(1200);
  for (std::size_t j = 0; j < 1200; j += 3) keep[j] = 0;
  const long before = kvtest::heap_allocations().load();
  h.append(k.data(), k.data(), 300, t.data());
  for (std::size_t j = 300; j < 600; ++j) {
    h.append(k.data() + j * d, k.data() + j * d, 1, t.data() + j);
    if (j % 50 == 0) h.store->apply_tiers(all.data(), h.scratch.data());
    h.store->logits(q.data(), 16, lg.data(), 1200);
    h.store->accumulate(p.data(), 1200, 16, out.data());
  }
  h.store->plan_compact(keep.data(), retained.data());
  h.store->compact(retained.data(), h.scratch.data());
  h.store->truncate(200, h.scratch.data());
  h.store->logits(q.data(), 1, lg.data(), 1200);
  h.store->clear();
  EXPECT_EQ(kvtest::heap_allocations().load() - before, 0);
}

// In the cache with no eviction (tiers stay pending): the window's overflow encodes at 4 bits.
// Attention matches the oracle over the cache's own contents, and stays close (relative L2 error
// of each step's output ≤ 0.25, about what KIVI-4 shows on this data) to the double-precision
// oracle over the fp16 inputs (read back from a dense cache fed the same tokens).
TEST(MixedPrecisionCache, AttendMatchesOracleAndDense) {
  using C = KVCache<Policy<evict::None, merge::None, Zip>>;
  using D = KVCache<Policy<evict::None, merge::None, quant::None>>;
  const CacheShape s{1, 8, 2, 128, 1024};
  const int d = 128, rep = 4;
  C c(s);
  D dense(s);
  std::uint32_t seed = 110;
  auto step = [&](std::size_t n) {
    const auto k = kvtest::random_kv(n, 2, d, seed++);
    const auto v = kvtest::random_kv(n, 2, d, seed++, false);
    const auto q = kvtest::random_kv(n, 8, d, seed++, false);
    std::vector<float> out(q.size());
    c.append(0, k.data(), v.data(), n);
    dense.append(0, k.data(), v.data(), n);
    c.attend(0, q.data(), n, out.data());
    kvtest::expect_attention_matches(c, 0, q, n, out, 1e-4, 1e-4);
    const std::int64_t seen = dense.tokens_seen(0);
    double se = 0, sr = 0;
    for (int h = 0; h < 2; ++h) {
      const auto slots = kvtest::live_slots(dense, 0, h);
      for (std::size_t i = 0; i < n; ++i) {
        std::vector<float> qh(static_cast<std::size_t>(rep) * d);
        for (int g = 0; g < rep; ++g)
          std::copy_n(q.data() + (i * 8 + h * rep + g) * d, d, qh.data() + g * d);
        const std::vector<std::int64_t> qpos(rep, seen - static_cast<std::int64_t>(n - i));
        const auto ref = kvref::attention(slots, d, qh.data(), rep, qpos.data(), 1.0 / std::sqrt(double(d)));
        for (int g = 0; g < rep; ++g)
          for (int x = 0; x < d; ++x) {
            const double r = ref[static_cast<std::size_t>(g) * d + x];
            se += std::pow(out[(i * 8 + h * rep + g) * d + x] - r, 2);
            sr += r * r;
          }
      }
    }
    EXPECT_LE(std::sqrt(se / sr), 0.25) << "tokens " << seen;
  };
  step(200);
  step(150);
  c.end_prefill();
  dense.end_prefill();
  for (int i = 0; i < 40; ++i) step(1);
  EXPECT_EQ(c.stream(0, 0).encoded(), 390u - 128u);
  EXPECT_LT(c.memory_bytes(), dense.memory_bytes());
}

}  // namespace
