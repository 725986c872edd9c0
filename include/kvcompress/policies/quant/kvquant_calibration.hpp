// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Offline calibration of KVQuant (methods/quantization.md §2 "Datatype nuqX" and "Calibration";
/// Hooper et al., "KVQuant: Towards 10 Million Context Length LLM Inference with KV Cache
/// Quantization", NeurIPS 2024, arXiv 2401.18079; reference SqueezeAILab/KVQuant at 57a2383,
/// quant/kvquant/simquant_module_quantizer.py).
///
/// Input: captured **pre-RoPE** keys (k_proj output) and values (v_proj output) of a calibration
/// set, per layer [T][Hkv][d], optionally with Fisher weights of the same shape (BB-8: squared
/// gradients, produced by an offline autograd tool) and the tokens' positions within their
/// sequence (for the attention-sink exclusion). Output: `KVQuantCalibration`, immutable runtime
/// data shared by every store of a cache through `KVQuant<B>::Config::calibration`:
///   lut_k, lut_v [L][2^b]     per-layer nuqB datatypes (ascending), normalized space [−1, 1]
///   t_lo, t_hi  [L][Hkv][d]   per-channel key outlier thresholds (static at inference)
/// Saved/loaded with the shared calibration file (calib/calibration_file.hpp), method "kvquant",
/// method_version 1, tensors "lut_k", "lut_v", "t_lo", "t_hi" with the shapes above.
///
/// Algorithm (per layer; keys and values separately):
///  * keys: per channel c of head h, t_lo/t_hi = the p/2 and 1 − p/2 quantiles (numpy's linear
///    interpolation) over the calibration tokens. Sink tokens (position < n_sink) are excluded
///    ([rec]); `sink_in_thresholds = true` includes them, as the reference does. Every
///    non-sink element inside [t_lo, t_hi] (strict outlier rule) is normalized with its channel's
///    fp16 (offset, half_range) = lut_normalization(t_lo, t_hi); channels with half_range 0 are
///    skipped.
///  * values: per token and head (value_scope = head, see kvquant.hpp), thresholds = the token's
///    own p/2 and 1 − p/2 quantiles over its d elements ([code]: calibration normalizes values by
///    their own percentiles), outliers inclusive, the rest normalized.
///  * weights: Fisher F_i·hr_i² (paper App. E, default) or F_i (`fisher_scale_sq = false`, the
///    released code); without Fisher data every sample weighs 1 (the reference's unweighted fit).
///  * LUT = 1-D weighted k-means with 2^b clusters (calib/kmeans.hpp: k-means++, Lloyd, sorted).
///  * Q-Norm (optional, `q_norm`; the code/README use it for 2-bit): with μ1, σ1 the mean/std of
///    the normalized samples and μ2, σ2 those of their quantized values (nearest LUT entry),
///    c' = c·σ1/σ2 + (μ1 − μ2·σ1/σ2), so the quantized calibration data keep mean μ1 and std σ1.
///
/// Data-free fallback (`nf_lut`): the reference's `--nf` datatype. Signposts are the standard
/// normal inverse CDF at 2^{b−1} evenly spaced probabilities in [δ, 0.5] and 2^{b−1} + 1 in
/// [0.5, 1 − δ] (first one dropped), δ = ½(1/32 + 1/30); the negative half is divided by its
/// largest magnitude (→ [−1, 0]) and the positive half by its maximum (→ [0, 1]).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvcompress/calib/calibration_file.hpp"
#include "kvcompress/calib/kmeans.hpp"
#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"
#include "kvcompress/policies/quant/common/lut_quant.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {

/// Calibrated KVQuant datatypes and key thresholds of one model (layout in the file comment).
struct KVQuantCalibration {
  static constexpr const char* kMethod = "kvquant";
  static constexpr std::uint32_t kMethodVersion = 1;

  int bits = 0;
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::vector<float> lut_k, lut_v;  ///< [L][2^b] ascending, normalized
  std::vector<float> t_lo, t_hi;    ///< [L][Hkv][d] key outlier thresholds

  std::size_t levels() const { return std::size_t{1} << bits; }
  const float* key_lut(int layer) const { return lut_k.data() + static_cast<std::size_t>(layer) * levels(); }
  const float* value_lut(int layer) const { return lut_v.data() + static_cast<std::size_t>(layer) * levels(); }
  std::size_t channel_index(int layer, int head) const {
    return (static_cast<std::size_t>(layer) * static_cast<std::size_t>(num_kv_heads) + static_cast<std::size_t>(head)) *
           static_cast<std::size_t>(head_dim);
  }

  /// Checks internal consistency: bits in [1, 8], sizes match, finite LUTs, t_lo ≤ t_hi finite and
  /// within fp16. Throws InvalidArgument naming the offending field.
  void validate(const char* where) const {
    kvcompress::detail::require(bits >= 1 && bits <= 8, where, "calibration.bits", bits, "in [1, 8]");
    kvcompress::detail::require(num_layers >= 1 && num_kv_heads >= 1 && head_dim >= 2, where,
                                "calibration shape", std::to_string(num_layers) + "x" + std::to_string(num_kv_heads) +
                                    "x" + std::to_string(head_dim), "L >= 1, Hkv >= 1, d >= 2");
    const std::size_t nl = static_cast<std::size_t>(num_layers) * levels();
    const std::size_t nc = static_cast<std::size_t>(num_layers) * num_kv_heads * head_dim;
    kvcompress::detail::require(lut_k.size() == nl, where, "calibration.lut_k.size()", lut_k.size(), "L*2^bits = " + std::to_string(nl));
    kvcompress::detail::require(lut_v.size() == nl, where, "calibration.lut_v.size()", lut_v.size(), "L*2^bits = " + std::to_string(nl));
    kvcompress::detail::require(t_lo.size() == nc && t_hi.size() == nc, where, "calibration.t_lo/t_hi size",
                                t_lo.size(), "L*Hkv*d = " + std::to_string(nc));
    for (std::size_t i = 0; i < nl; ++i)
      kvcompress::detail::require(std::isfinite(lut_k[i]) && std::isfinite(lut_v[i]), where, "calibration.lut",
                                  "a non-finite entry", "finite LUT entries");
    for (std::size_t i = 0; i < nc; ++i)
      kvcompress::detail::require(std::isfinite(t_lo[i]) && std::isfinite(t_hi[i]) && t_lo[i] <= t_hi[i] &&
                                      std::fabs(t_lo[i]) <= kHalfMax && std::fabs(t_hi[i]) <= kHalfMax,
                                  where, "calibration.t_lo/t_hi", std::to_string(t_lo[i]) + ".." + std::to_string(t_hi[i]),
                                  "finite fp16-range thresholds with t_lo <= t_hi");
  }

  /// As a calibration-file tensor set.
  calib::CalibrationSet to_set() const {
    validate("quant::KVQuantCalibration::to_set");
    calib::CalibrationSet s;
    s.method = kMethod;
    s.method_version = kMethodVersion;
    const auto L = static_cast<std::uint32_t>(num_layers), K = static_cast<std::uint32_t>(levels());
    const auto H = static_cast<std::uint32_t>(num_kv_heads), D = static_cast<std::uint32_t>(head_dim);
    s.add("lut_k", {L, K}, lut_k);
    s.add("lut_v", {L, K}, lut_v);
    s.add("t_lo", {L, H, D}, t_lo);
    s.add("t_hi", {L, H, D}, t_hi);
    return s;
  }

  /// From a calibration-file tensor set (method "kvquant"); throws InvalidArgument on a missing
  /// tensor, inconsistent shapes or a LUT size that is not a power of two.
  static KVQuantCalibration from_set(const calib::CalibrationSet& s) {
    constexpr const char* where = "quant::KVQuantCalibration::from_set";
    kvcompress::detail::require(s.method == kMethod, where, "method", s.method, "\"kvquant\"");
    kvcompress::detail::require(s.method_version == kMethodVersion, where, "method_version", s.method_version, "1");
    const auto& lk = s.get("lut_k");
    kvcompress::detail::require(lk.shape.size() == 2, where, "lut_k rank", lk.shape.size(), "2 ([L][2^bits])");
    const auto& lo = s.get("t_lo");
    kvcompress::detail::require(lo.shape.size() == 3, where, "t_lo rank", lo.shape.size(), "3 ([L][Hkv][d])");
    KVQuantCalibration c;
    int b = 0;
    while ((std::uint32_t{1} << b) < lk.shape[1] && b < 9) ++b;
    kvcompress::detail::require((std::uint32_t{1} << b) == lk.shape[1], where, "lut_k.shape[1]", lk.shape[1],
                                "a power of two (2^bits)");
    c.bits = b;
    c.num_layers = static_cast<int>(lk.shape[0]);
    c.num_kv_heads = static_cast<int>(lo.shape[1]);
    c.head_dim = static_cast<int>(lo.shape[2]);
    c.lut_k = lk.data;
    c.lut_v = s.get("lut_v", lk.shape).data;
    c.t_lo = lo.data;
    c.t_hi = s.get("t_hi", lo.shape).data;
    kvcompress::detail::require(lo.shape[0] == lk.shape[0], where, "t_lo.shape[0]", lo.shape[0],
                                "the layer count of lut_k (" + std::to_string(lk.shape[0]) + ")");
    c.validate(where);
    return c;
  }

  void save(const std::string& path) const { calib::save(to_set(), path); }
  static KVQuantCalibration load(const std::string& path) { return from_set(calib::load(path, kMethod)); }
};

/// Captured activations of one layer for calibrate_kvquant. All arrays [tokens][Hkv][d].
struct KVQuantLayerActivations {
  const float* k = nullptr;         ///< pre-RoPE keys (k_proj output)
  const float* v = nullptr;         ///< values (v_proj output)
  const float* fisher_k = nullptr;  ///< optional Fisher weights of k (≥ 0)
  const float* fisher_v = nullptr;  ///< optional Fisher weights of v (≥ 0)
  const std::int32_t* pos = nullptr;  ///< optional [tokens] position in its sequence (nullptr: 0, 1, …)
  std::size_t tokens = 0;
};

/// Knobs of calibrate_kvquant (defaults: paper).
struct KVQuantCalibrationOptions {
  int bits = 3;
  float outlier_fraction = 0.01f;   ///< p: 1% ⇒ 0.5th / 99.5th percentiles
  int n_sink = 1;                   ///< tokens with position < n_sink are sinks (excluded)
  bool sink_in_thresholds = false;  ///< reference: sinks still enter the key percentiles
  bool fisher_scale_sq = true;      ///< weight F·hr² (paper); false = F (reference code)
  bool q_norm = false;              ///< Q-Norm centroid adjustment
  calib::KMeansConfig kmeans{};     ///< clusters is overwritten with 2^bits
};

namespace detail {

/// numpy.quantile (linear interpolation) of sorted x[0..n), n ≥ 1.
inline double kvq_quantile_sorted(const std::vector<float>& x, double q) {
  const double h = (static_cast<double>(x.size()) - 1.0) * q;
  const std::size_t lo = static_cast<std::size_t>(std::floor(h));
  if (lo + 1 >= x.size()) return x.back();
  return x[lo] + (h - static_cast<double>(lo)) * (static_cast<double>(x[lo + 1]) - x[lo]);
}

/// Standard normal inverse CDF (bisection on erfc; |error| < 1e-12).
inline double kvq_norm_ppf(double p) {
  double lo = -40.0, hi = 40.0;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    const double cdf = 0.5 * std::erfc(-mid / std::sqrt(2.0));
    (cdf < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

/// 1-D weighted k-means LUT with optional Q-Norm.
inline std::vector<float> kvq_fit_lut(const std::vector<float>& x, const std::vector<float>& w,
                                      const KVQuantCalibrationOptions& o, const char* what) {
  calib::KMeansConfig kc = o.kmeans;
  kc.clusters = std::size_t{1} << o.bits;
  kvcompress::detail::require(x.size() >= kc.clusters, "quant::calibrate_kvquant", what, x.size(),
                              "at least 2^bits = " + std::to_string(kc.clusters) + " non-outlier calibration samples");
  std::vector<float> lut = calib::weighted_kmeans(x.data(), x.size(), 1, w.data(), kc).centroids;
  if (o.q_norm) {
    double m1 = 0, s1 = 0, m2 = 0, s2 = 0;
    const int L = static_cast<int>(lut.size());
    for (float v : x) {
      const float qv = lut[common::nearest_lut_index(lut.data(), L, v)];
      m1 += v;
      m2 += qv;
    }
    m1 /= static_cast<double>(x.size());
    m2 /= static_cast<double>(x.size());
    for (float v : x) {
      const float qv = lut[common::nearest_lut_index(lut.data(), L, v)];
      s1 += (v - m1) * (v - m1);
      s2 += (qv - m2) * (qv - m2);
    }
    s1 = std::sqrt(s1 / static_cast<double>(x.size()));
    s2 = std::sqrt(s2 / static_cast<double>(x.size()));
    if (s2 > 0.0)
      for (float& c : lut) c = static_cast<float>(c * (s1 / s2) + (m1 - m2 * s1 / s2));
    std::sort(lut.begin(), lut.end());
  }
  return lut;
}

}  // namespace detail

/// The data-free nuqB datatype (reference `--nf`; see the file comment). 2^bits ascending entries
/// in [−1, 1] containing 0. Throws InvalidArgument for bits outside [1, 8].
inline std::vector<float> nf_lut(int bits) {
  kvcompress::detail::require(bits >= 1 && bits <= 8, "quant::nf_lut", "bits", bits, "in [1, 8]");
  const double delta = 0.5 * (1.0 / 32.0 + 1.0 / 30.0);
  const std::size_t half = std::size_t{1} << (bits - 1);
  std::vector<double> neg(half), pos(half + 1);
  for (std::size_t i = 0; i < half; ++i) {
    const double p = half == 1 ? delta : delta + (0.5 - delta) * static_cast<double>(i) / static_cast<double>(half - 1);
    neg[i] = detail::kvq_norm_ppf(p);
  }
  for (std::size_t i = 0; i <= half; ++i)
    pos[i] = detail::kvq_norm_ppf(0.5 + (0.5 - delta) * static_cast<double>(i) / static_cast<double>(half));
  std::vector<float> lut;
  const double nmax = std::fabs(neg[0]), pmax = pos[half];
  for (double v : neg) lut.push_back(static_cast<float>(v / nmax));
  for (std::size_t i = 1; i <= half; ++i) lut.push_back(static_cast<float>(pos[i] / pmax));
  if (half > 1) lut[half - 1] = 0.0f;  // Φ⁻¹(0.5) = 0 exactly (1-bit: {−1, +1})
  return lut;
}

/// Calibrates KVQuant from captured activations, one entry per layer (algorithm in the file
/// comment). Throws InvalidArgument for empty input, a null k/v, bad options, a non-finite
/// activation or too few non-outlier samples for 2^bits clusters.
inline KVQuantCalibration calibrate_kvquant(int num_kv_heads, int head_dim,
                                            const std::vector<KVQuantLayerActivations>& layers,
                                            const KVQuantCalibrationOptions& o = {}) {
  constexpr const char* where = "quant::calibrate_kvquant";
  kvcompress::detail::require(!layers.empty(), where, "layers", 0, "at least one layer");
  kvcompress::detail::require(num_kv_heads >= 1, where, "num_kv_heads", num_kv_heads, ">= 1");
  kvcompress::detail::require(head_dim >= 2 && head_dim <= 65535, where, "head_dim", head_dim, "in [2, 65535]");
  kvcompress::detail::require(o.bits >= 1 && o.bits <= 8, where, "bits", o.bits, "in [1, 8]");
  kvcompress::detail::require(o.outlier_fraction > 0.0f && o.outlier_fraction < 0.5f, where, "outlier_fraction",
                              o.outlier_fraction, "in (0, 0.5)");
  kvcompress::detail::require(o.n_sink >= 0, where, "n_sink", o.n_sink, ">= 0");
  const std::size_t H = static_cast<std::size_t>(num_kv_heads), d = static_cast<std::size_t>(head_dim);
  const double p = o.outlier_fraction;
  KVQuantCalibration c;
  c.bits = o.bits;
  c.num_layers = static_cast<int>(layers.size());
  c.num_kv_heads = num_kv_heads;
  c.head_dim = head_dim;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KVQuantLayerActivations& a = layers[l];
    const std::string lname = "layers[" + std::to_string(l) + "]";
    kvcompress::detail::require(a.k != nullptr && a.v != nullptr, where, (lname + ".k/v").c_str(), "nullptr",
                                "captured [tokens][Hkv][d] activations");
    kvcompress::detail::require(a.tokens >= 1, where, (lname + ".tokens").c_str(), a.tokens, ">= 1");
    for (std::size_t i = 0; i < a.tokens * H * d; ++i)
      kvcompress::detail::require(std::isfinite(a.k[i]) && std::isfinite(a.v[i]), where, (lname + ".k/v").c_str(),
                                  "a non-finite value", "finite activations");
    auto is_sink = [&](std::size_t t) {
      const std::int64_t pos = a.pos ? a.pos[t] : static_cast<std::int64_t>(t);
      return pos < o.n_sink;
    };
    auto weight = [&](const float* fisher, std::size_t i, float hr) {
      if (!fisher) return 1.0f;
      return o.fisher_scale_sq ? fisher[i] * hr * hr : fisher[i];
    };
    // Keys: per-channel thresholds, then normalized non-outlier samples.
    std::vector<float> xs, ws, col;
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t ch = 0; ch < d; ++ch) {
        col.clear();
        for (std::size_t t = 0; t < a.tokens; ++t)
          if (o.sink_in_thresholds || !is_sink(t)) col.push_back(a.k[(t * H + h) * d + ch]);
        float lo = 0.0f, hi = 0.0f;
        if (!col.empty()) {
          std::sort(col.begin(), col.end());
          lo = static_cast<float>(detail::kvq_quantile_sorted(col, p / 2));
          hi = static_cast<float>(detail::kvq_quantile_sorted(col, 1.0 - p / 2));
        }
        c.t_lo.push_back(lo);
        c.t_hi.push_back(hi);
        const common::LutNormalization nrm = common::lut_normalization(lo, hi);
        if (nrm.half_range == 0.0f) continue;
        for (std::size_t t = 0; t < a.tokens; ++t) {
          const std::size_t i = (t * H + h) * d + ch;
          const float x = a.k[i];
          if (is_sink(t) || x > hi || x < lo) continue;
          xs.push_back((x - nrm.offset) / nrm.half_range);
          ws.push_back(weight(a.fisher_k, i, nrm.half_range));
        }
      }
    std::vector<float> lk = detail::kvq_fit_lut(xs, ws, o, (lname + " key samples").c_str());
    // Values: per token and head, own percentile thresholds.
    xs.clear();
    ws.clear();
    std::vector<float> row;
    for (std::size_t t = 0; t < a.tokens; ++t) {
      if (is_sink(t)) continue;
      for (std::size_t h = 0; h < H; ++h) {
        const float* x = a.v + (t * H + h) * d;
        row.assign(x, x + d);
        std::sort(row.begin(), row.end());
        const float lo = static_cast<float>(detail::kvq_quantile_sorted(row, p / 2));
        const float hi = static_cast<float>(detail::kvq_quantile_sorted(row, 1.0 - p / 2));
        const common::LutNormalization nrm = common::lut_normalization(lo, hi);
        if (nrm.half_range == 0.0f) continue;
        for (std::size_t ch = 0; ch < d; ++ch) {
          if (x[ch] >= hi || x[ch] <= lo) continue;
          xs.push_back((x[ch] - nrm.offset) / nrm.half_range);
          ws.push_back(weight(a.fisher_v, (t * H + h) * d + ch, nrm.half_range));
        }
      }
    }
    std::vector<float> lv = detail::kvq_fit_lut(xs, ws, o, (lname + " value samples").c_str());
    c.lut_k.insert(c.lut_k.end(), lk.begin(), lk.end());
    c.lut_v.insert(c.lut_v.end(), lv.begin(), lv.end());
  }
  c.validate(where);
  return c;
}

}  // namespace quant
KVCOMPRESS_NAMESPACE_END
