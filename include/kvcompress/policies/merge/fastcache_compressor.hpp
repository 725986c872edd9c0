// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// FastCache's learned group compressor (arXiv 2503.08461; eviction spec §10; reference
/// `KVCacheLinearDecoupleCompressor` in `utils_ccm/module_ccm_v11.py`): the Merge half of
/// `Policy<evict::FastCache, merge::FastCacheCompressor, Quant>` (grouping and segments are
/// documented in policies/evict/fastcache.hpp). For each group of c slots of one KV head — its
/// anchor (kept) followed by c − 1 evicted slots of the same segment —
///   x = concat(k_anchor, k_2, …, k_c) ∈ R^{c·d},   k̂ = MLP^{l,seg,K}(x)
/// with MLP = Linear(c·d→d) → ReLU → Linear(d→d) → ReLU → Linear(d→d) (the reference's dropout
/// layers are training-only), and the same for values with their own weights. Weights are per
/// layer, segment and K/V, shared by the heads of a layer; they are model-specific trained
/// checkpoints that the library loads but never trains. Without weights the configuration is
/// rejected with a message saying so. Groups whose size is not c (another eviction policy in
/// the same Policy) are left as they are.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvcompress/calib/calibration_file.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/core/slot_view.hpp"
#include "kvcompress/policies/evict/fastcache.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace merge {

/// The trained MLPs of one model: [layer][segment][K, V].
struct FastCacheWeights {
  /// One three-layer MLP; weights are PyTorch Linear layout [out][in].
  struct Mlp {
    std::vector<float> w1, b1;  ///< [d][c·d], [d]
    std::vector<float> w2, b2;  ///< [d][d], [d]
    std::vector<float> w3, b3;  ///< [d][d], [d]
  };

  int num_layers = 0;
  int head_dim = 0;
  std::size_t factor = 0;  ///< c: slots per group
  std::vector<Mlp> mlps;   ///< index ((layer · 2 + segment) · 2 + (0 = K, 1 = V))

  /// Zero weights of the right shapes (fill them, or load a checkpoint with from_calibration).
  FastCacheWeights(int layers, int d, std::size_t c) : num_layers(layers), head_dim(d), factor(c) {
    const std::size_t du = static_cast<std::size_t>(d);
    mlps.resize(static_cast<std::size_t>(layers) * 4);
    for (Mlp& m : mlps) {
      m.w1.assign(du * c * du, 0.0f);
      m.b1.assign(du, 0.0f);
      m.w2.assign(du * du, 0.0f);
      m.b2.assign(du, 0.0f);
      m.w3.assign(du * du, 0.0f);
      m.b3.assign(du, 0.0f);
    }
  }

  Mlp& at(int layer, evict::FastCacheSegment seg, int kv) { return mlps[index(layer, seg, kv)]; }
  const Mlp& at(int layer, evict::FastCacheSegment seg, int kv) const { return mlps[index(layer, seg, kv)]; }

  /// out[d] = MLP(x[c·d]); h is [2·d] scratch.
  void forward(const Mlp& m, const float* x, float* h, float* out) const {
    const std::size_t d = static_cast<std::size_t>(head_dim), in = factor * d;
    auto linear = [](const std::vector<float>& w, const std::vector<float>& b, const float* src, std::size_t n_in,
                     std::size_t n_out, bool relu, float* dst) {
      for (std::size_t o = 0; o < n_out; ++o) {
        float acc = b[o];
        for (std::size_t i = 0; i < n_in; ++i) acc += w[o * n_in + i] * src[i];
        dst[o] = relu && acc < 0.0f ? 0.0f : acc;
      }
    };
    linear(m.w1, m.b1, x, in, d, true, h);
    linear(m.w2, m.b2, h, d, d, true, h + d);
    linear(m.w3, m.b3, h + d, d, d, false, out);
  }

  /// Tensors "l<layer>.<visual|text>.<k|v>.<w1|b1|w2|b2|w3|b3>" of a "fastcache" calibration file.
  calib::CalibrationSet to_calibration() const {
    calib::CalibrationSet set;
    set.method = "fastcache";
    for_each_tensor([&](const std::string& name, const std::vector<std::uint32_t>& shape, const std::vector<float>& t) {
      set.add(name, shape, t);
    });
    return set;
  }

  /// Loads a checkpoint; throws InvalidArgument naming any missing or misshapen tensor.
  static FastCacheWeights from_calibration(const calib::CalibrationSet& set, int layers, int d, std::size_t c) {
    FastCacheWeights w(layers, d, c);
    w.for_each_tensor([&](const std::string& name, const std::vector<std::uint32_t>& shape, std::vector<float>& t) {
      t = set.get(name, shape).data;
    });
    return w;
  }

 private:
  std::size_t index(int layer, evict::FastCacheSegment seg, int kv) const {
    return (static_cast<std::size_t>(layer) * 2 + static_cast<std::size_t>(seg)) * 2 + static_cast<std::size_t>(kv);
  }
  // f(name, shape, tensor) for every tensor, in file order; Self is FastCacheWeights or const.
  template <class F>
  void for_each_tensor(F&& f) { for_each_tensor_of(*this, f); }
  template <class F>
  void for_each_tensor(F&& f) const { for_each_tensor_of(*this, f); }
  template <class Self, class F>
  static void for_each_tensor_of(Self& self, F& f) {
    const std::uint32_t d = static_cast<std::uint32_t>(self.head_dim);
    const std::uint32_t in = static_cast<std::uint32_t>(self.factor) * d;
    for (int l = 0; l < self.num_layers; ++l)
      for (auto seg : {evict::FastCacheSegment::kVisual, evict::FastCacheSegment::kText})
        for (int kv = 0; kv < 2; ++kv) {
          auto& m = self.mlps[self.index(l, seg, kv)];
          const std::string p = "l" + std::to_string(l) + (seg == evict::FastCacheSegment::kVisual ? ".visual." : ".text.") +
                                (kv == 0 ? "k." : "v.");
          f(p + "w1", {d, in}, m.w1);
          f(p + "b1", {d}, m.b1);
          f(p + "w2", {d, d}, m.w2);
          f(p + "b2", {d}, m.b2);
          f(p + "w3", {d, d}, m.w3);
          f(p + "b3", {d}, m.b3);
        }
  }
};

/// Rewrites each FastCache group's anchor with the trained MLP of its layer and segment.
struct FastCacheCompressor {
  static constexpr const char* kName = "fastcache_mlp";

  struct Config {
    /// The trained compressor; required (there is no data-free fallback for a learned model).
    std::shared_ptr<const FastCacheWeights> weights;

    void validate(const CacheShape& shape) const {
      const char* w = "merge::FastCacheCompressor";
      kvcompress::detail::require(weights != nullptr, w, "weights", "nullptr",
                                  "trained FastCache compressor weights (FastCacheWeights::from_calibration of a "
                                  "checkpoint); the library does not train them");
      kvcompress::detail::require(weights->num_layers == shape.num_layers, w, "weights->num_layers",
                                  weights->num_layers, "the cache's num_layers (" + std::to_string(shape.num_layers) + ")");
      kvcompress::detail::require(weights->head_dim == shape.head_dim, w, "weights->head_dim", weights->head_dim,
                                  "the cache's head_dim (" + std::to_string(shape.head_dim) + ")");
    }
  };

  static void merge(const Config& c, const SlotView& s, const std::uint8_t* keep, float* k, float* v, std::size_t d) {
    const FastCacheWeights& w = *c.weights;
    const std::size_t g = w.factor;
    std::vector<float> xk(g * d), xv(g * d), h(2 * d);
    std::vector<std::size_t> members(g);
    for (std::size_t a = 0; a < s.n; ++a) {
      if (!s.alive[a] || !keep[a]) continue;
      const auto seg = evict::fastcache_segment(s.mod[a]);
      // The anchor's group: the evicted live slots of its segment up to the next kept one.
      std::size_t m = 0;
      members[m++] = a;
      for (std::size_t j = a + 1; j < s.n; ++j) {
        if (!s.alive[j] || evict::fastcache_segment(s.mod[j]) != seg) continue;
        if (keep[j] || m == g) break;
        members[m++] = j;
      }
      if (m != g) continue;
      for (std::size_t i = 0; i < g; ++i) {
        std::copy(k + members[i] * d, k + (members[i] + 1) * d, xk.begin() + static_cast<std::ptrdiff_t>(i * d));
        std::copy(v + members[i] * d, v + (members[i] + 1) * d, xv.begin() + static_cast<std::ptrdiff_t>(i * d));
      }
      w.forward(w.at(s.layer, seg, 0), xk.data(), h.data(), k + a * d);
      w.forward(w.at(s.layer, seg, 1), xv.data(), h.data(), v + a * d);
    }
  }
};

}  // namespace merge
KVCOMPRESS_NAMESPACE_END
