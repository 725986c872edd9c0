// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Synthetic LLM-like queries, keys and values of one attention layer, for quantizer tests and
/// the quality tool (tools/quality/quant_quality.cpp). Deterministic: the same config and seed
/// give the same bytes on every platform (draws from sampling.hpp).
///
/// Generative model (per KV head h, token t at position t, head_dim d, R_t = RoPE at position t,
/// rotate_half layout, quant/common/rope.hpp):
///  * Pre-RoPE keys with outlier channels (KIVI §3 / KVQuant §3.1: a few key channels carry a
///    large, consistent magnitude): k_pre[t][h][c] = μ_{h,c} + σ_{h,c}·z, z ~ N(0, 1).
///    Ordinary channels: μ ~ N(0, 0.25²), σ = 1. `outlier_channels` channels per head: μ = ±A,
///    σ = A/4 with A = `outlier_scale`. They are drawn among the low-frequency rotation pairs
///    (pair index i ≥ d/4, channel i or i + d/2) — where real models have them, and where RoPE
///    turns slowly, so they stay channel-aligned after RoPE as in real post-RoPE keys.
///  * Keys: k[t] = R_t · k_pre[t] (what engines hand the cache); k_pre is kept for pre-RoPE
///    stores (KVQuant, CQ), with the positions `pos`.
///  * Values: heavy-tailed, no outlier channels (KIVI §3): v = `value_scale`·t_ν, Student-t with
///    ν = `value_dof` degrees of freedom (excess kurtosis 6/(ν−4) for ν > 4).
///  * Queries (GQA: query head g reads KV head g / (Hq/Hkv)): each query row attends to an
///    attention sink (token 0), one recent token (uniform in the last `local_window` tokens up to
///    t) and one global token (uniform in [0, t]). With u_j = R_j·(k_pre[j] − μ_h) (the centred
///    key of j after RoPE), q[t] = Σ_targets (√d·L/‖u_j‖²)·u_j + σ_q·ξ, ξ ~ N(0, I), so each
///    target gets a logit ≈ L above the per-query constant (L = `sink_logit` for the sink,
///    `target_logit` for the others) and the noise adds ≈ σ_q·‖k‖/√d. q_pre = R_t⁻¹·q.
///    Attention is therefore concentrated but not one-hot, as in real heads.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvcompress/policies/quant/common/rope.hpp"
#include "sampling.hpp"

namespace kvsynth {

/// Knobs of make_llm_kv (defaults: a Llama-3-8B-like GQA head geometry).
struct LlmKvConfig {
  std::size_t n_tokens = 1024;
  int num_q_heads = 32;          ///< Hq, a multiple of num_kv_heads
  int num_kv_heads = 8;          ///< Hkv
  int head_dim = 128;            ///< d, even
  double rope_base = 10000.0;    ///< RoPE θ base (rotate_half layout)
  int outlier_channels = 4;      ///< outlier key channels per KV head (< d/4)
  float outlier_scale = 12.0f;   ///< A: |mean| of an outlier channel, in units of an ordinary channel's std
  int value_dof = 5;             ///< ν of the Student-t values (≥ 1)
  float value_scale = 1.0f;      ///< scale of the values
  float sink_logit = 4.0f;       ///< logit boost of token 0 in every query
  float target_logit = 5.0f;     ///< logit boost of each query's local and global targets
  std::size_t local_window = 32; ///< the local target lies in the last local_window tokens
  float query_noise = 0.4f;      ///< σ_q
  std::uint64_t seed = 0;

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument("kvsynth::LlmKvConfig: " + m); };
    if (n_tokens < 1) fail("n_tokens must be >= 1");
    if (num_kv_heads < 1 || num_q_heads < num_kv_heads || num_q_heads % num_kv_heads != 0)
      fail("num_q_heads must be a positive multiple of num_kv_heads");
    if (head_dim < 8 || head_dim % 2 != 0) fail("head_dim must be even and >= 8");
    if (outlier_channels < 0 || outlier_channels > head_dim / 4) fail("outlier_channels must be in [0, head_dim/4]");
    if (value_dof < 1) fail("value_dof must be >= 1");
    if (local_window < 1) fail("local_window must be >= 1");
    if (!(rope_base > 1.0)) fail("rope_base must be > 1");
  }
};

/// One layer of synthetic activations. Layouts: q, q_pre [n][Hq][d]; k_pre, k, v [n][Hkv][d].
struct LlmKv {
  LlmKvConfig config;
  kvcompress::quant::common::RopeParams rope;  ///< the rotation applied (rotate_half, no scaling)
  std::vector<float> q, q_pre, k_pre, k, v;
  std::vector<std::int32_t> pos;               ///< [n] absolute positions (token t at t)
  std::vector<int> outlier_channel;            ///< [Hkv][outlier_channels] channel indices
  std::vector<float> key_channel_mean;         ///< [Hkv][d] μ_{h,c} of the pre-RoPE keys
};

/// Builds one layer as documented at the top of this file.
inline LlmKv make_llm_kv(const LlmKvConfig& cfg) {
  cfg.validate();
  namespace qc = kvcompress::quant::common;
  LlmKv out;
  out.config = cfg;
  const std::size_t n = cfg.n_tokens, d = static_cast<std::size_t>(cfg.head_dim);
  const std::size_t hkv = static_cast<std::size_t>(cfg.num_kv_heads), hq = static_cast<std::size_t>(cfg.num_q_heads);
  const std::size_t rep = hq / hkv, half = d / 2;
  out.rope.head_dim = d;
  out.rope.base = cfg.rope_base;
  out.rope.layout = qc::RopeLayout::kRotateHalf;
  out.pos.resize(n);
  for (std::size_t t = 0; t < n; ++t) out.pos[t] = static_cast<std::int32_t>(t);

  // Channel statistics per KV head.
  Sampler chan(derive_seed(cfg.seed, 1));
  std::vector<float> sigma(hkv * d, 1.0f);
  out.key_channel_mean.assign(hkv * d, 0.0f);
  out.outlier_channel.clear();
  for (std::size_t h = 0; h < hkv; ++h) {
    float* mu = out.key_channel_mean.data() + h * d;
    for (std::size_t c = 0; c < d; ++c) mu[c] = static_cast<float>(0.25 * chan.normal());
    std::vector<char> used(half, 0);
    for (int o = 0; o < cfg.outlier_channels; ++o) {
      std::size_t pair;
      do pair = half / 2 + chan.index(half - half / 2); while (used[pair]);
      used[pair] = 1;
      const std::size_t c = pair + (chan.uniform() < 0.5 ? 0 : half);
      mu[c] = (chan.uniform() < 0.5 ? -1.0f : 1.0f) * cfg.outlier_scale;
      sigma[h * d + c] = cfg.outlier_scale / 4.0f;
      out.outlier_channel.push_back(static_cast<int>(c));
    }
  }

  // Keys and values.
  Sampler kv(derive_seed(cfg.seed, 2));
  out.k_pre.resize(n * hkv * d);
  out.v.resize(n * hkv * d);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t h = 0; h < hkv; ++h)
      for (std::size_t c = 0; c < d; ++c) {
        const std::size_t i = (t * hkv + h) * d + c;
        out.k_pre[i] = out.key_channel_mean[h * d + c] + sigma[h * d + c] * static_cast<float>(kv.normal());
        out.v[i] = cfg.value_scale * static_cast<float>(kv.student_t(cfg.value_dof));
      }
  out.k = out.k_pre;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t h = 0; h < hkv; ++h) qc::rope_apply(out.k.data() + (t * hkv + h) * d, out.rope, out.pos[t]);

  // Queries: targeted sums of centred post-RoPE keys plus noise.
  Sampler qs(derive_seed(cfg.seed, 3));
  out.q.assign(n * hq * d, 0.0f);
  std::vector<float> u(d);
  const double sqrt_d = std::sqrt(static_cast<double>(d));
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t g = 0; g < hq; ++g) {
      const std::size_t h = g / rep;
      float* q = out.q.data() + (t * hq + g) * d;
      const std::size_t lo = t + 1 > cfg.local_window ? t + 1 - cfg.local_window : 0;
      const std::size_t targets[3] = {0, lo + qs.index(t + 1 - lo), qs.index(t + 1)};
      const float logits[3] = {cfg.sink_logit, cfg.target_logit, cfg.target_logit};
      for (int a = 0; a < 3; ++a) {
        const std::size_t j = targets[a];
        double n2 = 0.0;
        for (std::size_t c = 0; c < d; ++c) {
          u[c] = out.k_pre[(j * hkv + h) * d + c] - out.key_channel_mean[h * d + c];
        }
        qc::rope_apply(u.data(), out.rope, out.pos[j]);
        for (std::size_t c = 0; c < d; ++c) n2 += static_cast<double>(u[c]) * u[c];
        const double w = sqrt_d * logits[a] / n2;
        for (std::size_t c = 0; c < d; ++c) q[c] += static_cast<float>(w * u[c]);
      }
      for (std::size_t c = 0; c < d; ++c) q[c] += cfg.query_noise * static_cast<float>(qs.normal());
    }
  out.q_pre = out.q;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t g = 0; g < hq; ++g) qc::rope_unapply(out.q_pre.data() + (t * hq + g) * d, out.rope, out.pos[t]);
  return out;
}

}  // namespace kvsynth
