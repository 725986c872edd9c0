// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Codebooks of CQ (Coupled Quantization, Zhang, Yi, Xu, Shrivastava, NeurIPS 2024, arXiv
/// 2405.03917; methods/quantization.md §3 "Calibration"): for every (layer, KV head, K or V,
/// channel group g) a codebook C_g of 2^b centroids of c channels, learned offline.
///
///  * cq_fit_codebooks: weighted k-means with k-means++ seeding (BB-7, calib/kmeans.hpp) on
///    captured K/V rows of each stream. Uniform CQ: all weights 1. Fisher-guided CQ: per token and
///    group w_t = Σ_{j∈g} (∂L/∂a_{t,j})² from captured gradients (the library only consumes them;
///    computing them needs autograd, BB-8). Keys are captured pre-RoPE (BB-14) for the default
///    pre-RoPE store, post-RoPE for KeySpace::kPostRope.
///  * cq_gaussian_codebooks: the documented data-free fallback [our interpretation; the spec's
///    [rec] "self-calibration on the prompt" is not implemented]: one c-dimensional Lloyd
///    codebook of 2^b centroids fitted (20 Lloyd iterations) to 16·2^b seeded N(0, I_c) samples (Box–Muller on
///    calib::uniform01, so the codebook is identical on every platform), scaled by σ_K for keys
///    and σ_V for values and shared by every group and stream. It is a rate-distortion-optimal
///    quantizer only for i.i.d. Gaussian channels of that σ — a fallback, not a substitute for
///    calibration.
///  * to_calibration_set / cq_codebooks_from: the shared calibration file (calib/
///    calibration_file.hpp), method "cq", version 1, tensors "keys" and "values" of shape
///    [L, H, G, 2^b, c] (L = H = 1: one codebook set shared by every stream).
///
/// Centroids are kept in fp32 (the paper stores fp16; fp32 keeps the decode tables exact with
/// respect to the codebook the calibration produced). Allocates; calibration time only.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kvcompress/calib/calibration_file.hpp"
#include "kvcompress/calib/kmeans.hpp"
#include "kvcompress/calib/seeded_random.hpp"
#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// The codebooks of one model (or one set shared by every stream when num_layers = num_kv_heads = 1).
class CqCodebooks {
 public:
  /// Name and tensor-set version in the calibration file.
  static constexpr const char* kMethod = "cq";
  static constexpr std::uint32_t kMethodVersion = 1;

  /// Wraps natural-layout centroids keys/values [L][H][G][2^bits][c], G = head_dim / c.
  /// Throws InvalidArgument for a bad geometry, a size mismatch or a non-finite centroid.
  CqCodebooks(int num_layers, int num_kv_heads, int head_dim, int c, int bits, std::vector<float> keys,
              std::vector<float> values)
      : layers_(num_layers), heads_(num_kv_heads), d_(head_dim), c_(c), bits_(bits), keys_(std::move(keys)),
        values_(std::move(values)) {
    constexpr const char* where = "quant::CqCodebooks";
    kvcompress::detail::require(num_layers >= 1, where, "num_layers", num_layers, ">= 1");
    kvcompress::detail::require(num_kv_heads >= 1, where, "num_kv_heads", num_kv_heads, ">= 1");
    kvcompress::detail::require(c >= 1, where, "c", c, ">= 1");
    kvcompress::detail::require(head_dim >= 1 && head_dim % c == 0, where, "head_dim", head_dim,
                                "a positive multiple of c = " + std::to_string(c));
    kvcompress::detail::require(bits >= 1 && bits <= 16, where, "bits", bits, "an integer in [1, 16]");
    const std::size_t n = stream_floats() * static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_kv_heads);
    kvcompress::detail::require(keys_.size() == n, where, "keys.size()", keys_.size(), std::to_string(n) + " = L·H·d·2^bits");
    kvcompress::detail::require(values_.size() == n, where, "values.size()", values_.size(),
                                std::to_string(n) + " = L·H·d·2^bits");
    for (float x : keys_) kvcompress::detail::require(std::isfinite(x), where, "keys", x, "finite centroids");
    for (float x : values_) kvcompress::detail::require(std::isfinite(x), where, "values", x, "finite centroids");
    keys_t_ = transpose(keys_);
    values_t_ = transpose(values_);
  }

  int num_layers() const { return layers_; }
  int num_kv_heads() const { return heads_; }
  int head_dim() const { return d_; }
  int c() const { return c_; }
  int bits() const { return bits_; }
  std::size_t centroids() const { return std::size_t{1} << bits_; }
  std::size_t groups() const { return static_cast<std::size_t>(d_ / c_); }
  /// True when one set serves every stream.
  bool shared() const { return layers_ == 1 && heads_ == 1; }
  /// Floats of one stream's codebooks, one of K/V: G·2^b·c = d·2^b.
  std::size_t stream_floats() const { return static_cast<std::size_t>(d_) * centroids(); }

  /// Natural layout [G][2^b][c] of (layer, head); a shared set ignores the indices.
  const float* keys(int layer, int head) const { return keys_.data() + offset(layer, head); }
  const float* values(int layer, int head) const { return values_.data() + offset(layer, head); }
  /// Transposed layout [G][c][2^b] (decode tables).
  const float* keys_t(int layer, int head) const { return keys_t_.data() + offset(layer, head); }
  const float* values_t(int layer, int head) const { return values_t_.data() + offset(layer, head); }

  /// Bytes held (both layouts of K and V).
  std::size_t memory_bytes() const {
    return (keys_.capacity() + values_.capacity() + keys_t_.capacity() + values_t_.capacity()) * sizeof(float);
  }

  /// The calibration-file form (method "cq", version 1).
  calib::CalibrationSet to_calibration_set() const {
    calib::CalibrationSet set;
    set.method = kMethod;
    set.method_version = kMethodVersion;
    set.add("keys", file_shape(), keys_);
    set.add("values", file_shape(), values_);
    return set;
  }

 private:
  std::vector<std::uint32_t> file_shape() const {
    return {static_cast<std::uint32_t>(layers_), static_cast<std::uint32_t>(heads_),
            static_cast<std::uint32_t>(groups()), static_cast<std::uint32_t>(centroids()),
            static_cast<std::uint32_t>(c_)};
  }
  std::size_t offset(int layer, int head) const {
    if (shared()) return 0;
    return (static_cast<std::size_t>(layer) * static_cast<std::size_t>(heads_) + static_cast<std::size_t>(head)) *
           stream_floats();
  }
  std::vector<float> transpose(const std::vector<float>& x) const {
    std::vector<float> t(x.size());
    const std::size_t K = centroids(), C = static_cast<std::size_t>(c_), G = groups();
    for (std::size_t s = 0; s < x.size() / stream_floats(); ++s)
      for (std::size_t g = 0; g < G; ++g)
        for (std::size_t k = 0; k < K; ++k)
          for (std::size_t j = 0; j < C; ++j)
            t[s * stream_floats() + (g * C + j) * K + k] = x[s * stream_floats() + (g * K + k) * C + j];
    return t;
  }

  int layers_, heads_, d_, c_, bits_;
  std::vector<float> keys_, values_;      // [L][H][G][K][c]
  std::vector<float> keys_t_, values_t_;  // [L][H][G][c][K]
};

/// Rebuilds codebooks from a calibration set of method "cq" (shapes checked: 5-D, equal for K
/// and V, last dim c, 2^bits centroids). Throws InvalidArgument for anything else.
inline std::shared_ptr<const CqCodebooks> cq_codebooks_from(const calib::CalibrationSet& set) {
  constexpr const char* where = "quant::cq_codebooks_from";
  kvcompress::detail::require(set.method == CqCodebooks::kMethod, where, "method", set.method, "\"cq\"");
  kvcompress::detail::require(set.method_version == CqCodebooks::kMethodVersion, where, "method_version",
                              set.method_version, "1");
  const calib::CalibrationTensor& k = set.get("keys");
  kvcompress::detail::require(k.shape.size() == 5, where, "keys.shape", k.shape.size(), "rank 5 [L, H, G, 2^b, c]");
  const calib::CalibrationTensor& v = set.get("values", k.shape);
  const std::uint32_t ncent = k.shape[3];
  int bits = 0;
  while (bits < 16 && (std::uint32_t{1} << bits) < ncent) ++bits;
  kvcompress::detail::require(ncent >= 2 && (std::uint32_t{1} << bits) == ncent, where, "keys.shape[3]", ncent,
                              "a power of two ≥ 2 (2^bits centroids)");
  return std::make_shared<const CqCodebooks>(static_cast<int>(k.shape[0]), static_cast<int>(k.shape[1]),
                                             static_cast<int>(k.shape[2] * k.shape[4]), static_cast<int>(k.shape[4]),
                                             bits, k.data, v.data);
}

/// Saves / loads the codebooks as a calibration file.
inline void cq_save(const CqCodebooks& cb, const std::string& path) { calib::save(cb.to_calibration_set(), path); }
inline std::shared_ptr<const CqCodebooks> cq_load(const std::string& path) {
  return cq_codebooks_from(calib::load(path, CqCodebooks::kMethod));
}

/// Captured calibration data of one stream: rows [n][d] of keys and values and, for
/// Fisher-guided CQ, the gradients of the loss with respect to them (nullptr = uniform CQ).
struct CqStreamSamples {
  const float* keys = nullptr;        ///< [n][d]
  const float* values = nullptr;      ///< [n][d]
  std::size_t n = 0;                  ///< tokens (≥ 2^bits)
  const float* key_grads = nullptr;   ///< [n][d] or nullptr
  const float* value_grads = nullptr; ///< [n][d] or nullptr
};

namespace detail {

/// k-means of the c-channel sub-vectors of group g of rows x [n][d], weights from grads.
inline void cq_fit_group(const float* x, const float* grads, std::size_t n, std::size_t d, std::size_t g, int c,
                         std::size_t ncent, const calib::KMeansConfig& km, float* out) {
  const std::size_t cc = static_cast<std::size_t>(c);
  std::vector<float> sub(n * cc), w;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t j = 0; j < cc; ++j) sub[t * cc + j] = x[t * d + g * cc + j];
  if (grads) {
    w.resize(n);
    for (std::size_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (std::size_t j = 0; j < cc; ++j) s += static_cast<double>(grads[t * d + g * cc + j]) * grads[t * d + g * cc + j];
      w[t] = static_cast<float>(s);
    }
  }
  calib::KMeansConfig cfg = km;
  cfg.clusters = ncent;
  const calib::KMeansResult r = calib::weighted_kmeans(sub.data(), n, cc, grads ? w.data() : nullptr, cfg);
  std::copy(r.centroids.begin(), r.centroids.end(), out);
}

}  // namespace detail

/// Learns codebooks from captured K/V (§3 "Algorithm"): samples[l·H + h] for every stream, or a
/// single entry with num_layers = num_kv_heads = 1 for one shared set. km.clusters is ignored
/// (2^bits). Throws InvalidArgument for a bad geometry, a wrong number of sample sets, null rows
/// or fewer positive-weight tokens than centroids (calib::weighted_kmeans).
inline std::shared_ptr<const CqCodebooks> cq_fit_codebooks(int num_layers, int num_kv_heads, int head_dim, int c,
                                                           int bits, const std::vector<CqStreamSamples>& samples,
                                                           const calib::KMeansConfig& km = {}) {
  constexpr const char* where = "quant::cq_fit_codebooks";
  kvcompress::detail::require(num_layers >= 1 && num_kv_heads >= 1, where, "num_layers·num_kv_heads",
                              num_layers * num_kv_heads, ">= 1");
  kvcompress::detail::require(c >= 1 && head_dim >= 1 && head_dim % c == 0, where, "head_dim", head_dim,
                              "a positive multiple of c");
  kvcompress::detail::require(bits >= 1 && bits <= 16, where, "bits", bits, "an integer in [1, 16]");
  const std::size_t streams = static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_kv_heads);
  kvcompress::detail::require(samples.size() == streams, where, "samples.size()", samples.size(),
                              std::to_string(streams) + " = num_layers·num_kv_heads");
  const std::size_t d = static_cast<std::size_t>(head_dim), ncent = std::size_t{1} << bits;
  const std::size_t per = d * ncent, groups = d / static_cast<std::size_t>(c);
  std::vector<float> keys(streams * per), values(streams * per);
  for (std::size_t s = 0; s < streams; ++s) {
    const CqStreamSamples& sm = samples[s];
    kvcompress::detail::require(sm.keys != nullptr && sm.values != nullptr, where, "samples[].keys/values", "nullptr",
                                "[n][head_dim] rows");
    for (std::size_t g = 0; g < groups; ++g) {
      detail::cq_fit_group(sm.keys, sm.key_grads, sm.n, d, g, c, ncent, km, keys.data() + s * per + g * ncent * c);
      detail::cq_fit_group(sm.values, sm.value_grads, sm.n, d, g, c, ncent, km,
                           values.data() + s * per + g * ncent * c);
    }
  }
  return std::make_shared<const CqCodebooks>(num_layers, num_kv_heads, head_dim, c, bits, std::move(keys),
                                             std::move(values));
}

/// The data-free fallback (file comment): one seeded Gaussian Lloyd codebook shared by every
/// group and stream, scaled by sigma_k (keys) and sigma_v (values). Throws InvalidArgument for a
/// bad geometry or a non-positive / non-finite sigma.
inline std::shared_ptr<const CqCodebooks> cq_gaussian_codebooks(int head_dim, int c, int bits, float sigma_k = 1.0f,
                                                                float sigma_v = 1.0f,
                                                                std::uint64_t seed = calib::kDefaultSeed) {
  constexpr const char* where = "quant::cq_gaussian_codebooks";
  kvcompress::detail::require(std::isfinite(sigma_k) && sigma_k > 0.0f, where, "sigma_k", sigma_k, "a finite value > 0");
  kvcompress::detail::require(std::isfinite(sigma_v) && sigma_v > 0.0f, where, "sigma_v", sigma_v, "a finite value > 0");
  kvcompress::detail::require(c >= 1 && head_dim >= 1 && head_dim % c == 0, where, "head_dim", head_dim,
                              "a positive multiple of c");
  kvcompress::detail::require(bits >= 1 && bits <= 12, where, "bits", bits, "an integer in [1, 12]");
  const std::size_t ncent = std::size_t{1} << bits, cc = static_cast<std::size_t>(c);
  const std::size_t n = 16 * ncent;
  std::mt19937_64 rng(seed);
  std::vector<float> x(n * cc);
  for (std::size_t i = 0; i < x.size(); ++i) {  // Box–Muller, one normal per pair of uniforms
    const double u1 = 1.0 - calib::uniform01(rng), u2 = calib::uniform01(rng);
    x[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  calib::KMeansConfig km;
  km.clusters = ncent;
  km.seed = seed;
  km.max_iterations = 20;
  const calib::KMeansResult r = calib::weighted_kmeans(x.data(), n, cc, nullptr, km);
  const std::size_t groups = static_cast<std::size_t>(head_dim) / cc;
  std::vector<float> keys(groups * ncent * cc), values(keys.size());
  for (std::size_t g = 0; g < groups; ++g)
    for (std::size_t i = 0; i < ncent * cc; ++i) {
      keys[g * ncent * cc + i] = sigma_k * r.centroids[i];
      values[g * ncent * cc + i] = sigma_v * r.centroids[i];
    }
  return std::make_shared<const CqCodebooks>(1, 1, head_dim, c, bits, std::move(keys), std::move(values));
}

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
