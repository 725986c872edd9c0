// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Synthetic multimodal (VLM / VLA) prompt + decode workload for eviction and merging policies
/// (eviction spec: modality labels are supplied by the engine, never inferred — here they are
/// an explicit per-token array). Deterministic: same config and seed ⇒ same bytes everywhere.
///
/// Token layout (positions 0 … n_total − 1, one span each, in this order):
///   system (kSystem) | text (kText) | image (kImage) | video frames (kVideo) | question (kText)
///   ‖ decode (kGenerated)
/// The prompt is everything before ‖ (n_prompt tokens); the decode tokens are the "future
/// queries" an eviction method must serve after end_prefill.
///
/// Generative model, independently per layer and KV head (content vectors are unit vectors in
/// R^d; keys are k_j = √d·s_m·c_j so each coordinate is O(1), s_m = 1 except for the sink):
///  * Text-like tokens (system, text, question, decode): c_j uniform on the sphere; values
///    v_j ~ N(0, I).
///  * Attention sink: token 0 (system) has key norm `sink_key_scale`·√d and every query adds
///    `sink_logit` along it (StreamingLLM's sinks).
///  * Image: `image_tokens` patches in `image_regions` regions (contiguous runs of the raster
///    order). Patch j of region r: c_j = normalize(p_r + image_noise·ξ/√d), value
///    v_j = w_r + image_noise·ξ' — patches of one region are near-duplicates (cosine ≈
///    1/(1 + image_noise²)), the redundancy token-merging methods exploit.
///  * Video: `video_frames` frames of `frame_tokens` patches. Frame 0 is built like an image (its
///    own `image_regions` regions). In frame f > 0 each patch is, with probability
///    `frame_change`, re-drawn (a new random unit key and N(0, I) value: "something moved";
///    changed[j] = 1), otherwise copied from the same patch of frame f − 1 plus relative jitter
///    `frame_jitter` (VLA-Cache's static tokens). changed[] is token-level (shared by layers and
///    heads), as motion is.
///  * Salient tokens: a random `salient_fraction` of each group (text-like, image, video) is
///    marked salient (token-level); queries come back to them repeatedly — the heavy hitters
///    H2O-style scores should find.
///  * Queries: every token t (prompt and decode) has a query per query head g (GQA: KV head
///    g / (Hq/Hkv)): q = sink_logit·c_0 + Σ_{a<targets_per_query} L_a·c_{j_a} + query_noise·ξ,
///    so the logit q·k_j/√d of key j is ≈ L_a·cos(c_{j_a}, c_j) + N(0, query_noise²) (+ the sink
///    term). Target j_a < t is drawn as: with `local_prob` uniform among the `local_window` tokens
///    before t; otherwise a group (text-like / image / video) with probability ∝ its affinity
///    (`text_affinity`, `image_affinity`, `video_affinity`; groups with no token before t are
///    skipped), then within the group a salient token with probability `salient_prob`, else any.
///    L_a = `text_logit` for text-like targets and `visual_logit` for image/video targets: image
///    tokens receive less attention per token than text (FastV's observation), but a hit on a
///    patch spreads over its whole region of near-duplicates.
///  No RoPE is applied (eviction only sees scores and positions; keys are used as given).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvcompress/core/modality.hpp"
#include "sampling.hpp"

namespace kvsynth {

/// Knobs of make_multimodal_workload (defaults: a LLaVA-1.5-like image of 24×24 patches and a
/// short video, total 1,328 tokens).
struct MultimodalConfig {
  int num_layers = 2;
  int num_q_heads = 8;
  int num_kv_heads = 2;
  int head_dim = 64;
  std::size_t system_tokens = 32;   ///< ≥ 1 (token 0 is the sink)
  std::size_t text_tokens = 96;
  std::size_t image_tokens = 576;
  int image_regions = 16;           ///< regions of near-duplicate patches (≥ 1)
  float image_noise = 0.15f;        ///< within-region relative spread
  std::size_t video_frames = 8;
  std::size_t frame_tokens = 64;
  float frame_change = 0.1f;        ///< fraction of patches re-drawn between consecutive frames
  float frame_jitter = 0.02f;       ///< relative jitter of unchanged patches
  std::size_t question_tokens = 48;
  std::size_t decode_tokens = 64;   ///< future queries (kGenerated tokens)
  float sink_key_scale = 1.0f;
  float sink_logit = 6.0f;
  int targets_per_query = 3;
  float text_logit = 8.0f;          ///< logit boost of a text-like target
  float visual_logit = 3.0f;        ///< logit boost of an image/video target
  float text_affinity = 0.6f;
  float image_affinity = 0.25f;
  float video_affinity = 0.15f;
  float salient_fraction = 0.1f;
  float salient_prob = 0.6f;
  float local_prob = 0.3f;
  std::size_t local_window = 16;
  float query_noise = 0.5f;
  std::uint64_t seed = 0;

  std::size_t n_prompt() const {
    return system_tokens + text_tokens + image_tokens + video_frames * frame_tokens + question_tokens;
  }
  std::size_t n_total() const { return n_prompt() + decode_tokens; }

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& m) { throw std::invalid_argument("kvsynth::MultimodalConfig: " + m); };
    if (num_layers < 1) fail("num_layers must be >= 1");
    if (num_kv_heads < 1 || num_q_heads < num_kv_heads || num_q_heads % num_kv_heads != 0)
      fail("num_q_heads must be a positive multiple of num_kv_heads");
    if (head_dim < 4) fail("head_dim must be >= 4");
    if (system_tokens < 1) fail("system_tokens must be >= 1 (token 0 is the attention sink)");
    if (image_regions < 1) fail("image_regions must be >= 1");
    if (frame_change < 0 || frame_change > 1) fail("frame_change must be in [0, 1]");
    if (targets_per_query < 0) fail("targets_per_query must be >= 0");
    if (text_affinity < 0 || image_affinity < 0 || video_affinity < 0 || text_affinity + image_affinity + video_affinity <= 0)
      fail("affinities must be >= 0 and not all 0");
    if (local_window < 1) fail("local_window must be >= 1");
  }
};

/// The generated workload. Token-level arrays are [n_total]; per layer q is [n_total][Hq][d],
/// k and v are [n_total][Hkv][d].
struct MultimodalWorkload {
  struct Span {
    kvcompress::Modality modality;
    std::size_t begin, end;  ///< [begin, end) positions
  };
  struct Layer {
    std::vector<float> q, k, v;
  };
  enum Group : std::uint8_t { kTextGroup = 0, kImageGroup = 1, kVideoGroup = 2 };

  MultimodalConfig config;
  std::size_t n_prompt = 0, n_total = 0;
  std::vector<Span> spans;
  std::vector<kvcompress::Modality> modality;  ///< explicit per-token labels
  std::vector<std::uint8_t> group;             ///< Group of each token
  std::vector<int> region;                     ///< image/video region id (video: of frame 0's patch) or −1
  std::vector<int> frame;                      ///< video frame index or −1
  std::vector<std::uint8_t> changed;           ///< video: re-drawn vs the previous frame (frame 0: 1); else 0
  std::vector<std::uint8_t> salient;           ///< 1 for the salient (heavy-hitter) tokens
  std::vector<Layer> layers;
};

/// Builds the workload documented at the top of this file.
inline MultimodalWorkload make_multimodal_workload(const MultimodalConfig& cfg) {
  cfg.validate();
  using kvcompress::Modality;
  MultimodalWorkload w;
  w.config = cfg;
  w.n_prompt = cfg.n_prompt();
  w.n_total = cfg.n_total();
  const std::size_t n = w.n_total, d = static_cast<std::size_t>(cfg.head_dim);
  const std::size_t hkv = static_cast<std::size_t>(cfg.num_kv_heads), hq = static_cast<std::size_t>(cfg.num_q_heads);
  const std::size_t rep = hq / hkv;

  // Layout and token-level labels.
  std::size_t p = 0;
  auto span = [&](Modality m, std::size_t len) {
    if (len == 0) return;
    w.spans.push_back({m, p, p + len});
    p += len;
  };
  span(Modality::kSystem, cfg.system_tokens);
  span(Modality::kText, cfg.text_tokens);
  span(Modality::kImage, cfg.image_tokens);
  span(Modality::kVideo, cfg.video_frames * cfg.frame_tokens);
  span(Modality::kText, cfg.question_tokens);
  span(Modality::kGenerated, cfg.decode_tokens);
  w.modality.resize(n);
  w.group.resize(n);
  w.region.assign(n, -1);
  w.frame.assign(n, -1);
  w.changed.assign(n, 0);
  w.salient.assign(n, 0);
  for (const auto& s : w.spans)
    for (std::size_t j = s.begin; j < s.end; ++j) {
      w.modality[j] = s.modality;
      w.group[j] = s.modality == Modality::kImage ? MultimodalWorkload::kImageGroup
                   : s.modality == Modality::kVideo ? MultimodalWorkload::kVideoGroup
                                                    : MultimodalWorkload::kTextGroup;
    }
  const std::size_t img0 = cfg.system_tokens + cfg.text_tokens;
  const std::size_t vid0 = img0 + cfg.image_tokens;
  const std::size_t regions = static_cast<std::size_t>(cfg.image_regions);
  for (std::size_t i = 0; i < cfg.image_tokens; ++i) w.region[img0 + i] = static_cast<int>(i * regions / cfg.image_tokens);
  Sampler tok(derive_seed(cfg.seed, 1));
  for (std::size_t f = 0; f < cfg.video_frames; ++f)
    for (std::size_t i = 0; i < cfg.frame_tokens; ++i) {
      const std::size_t j = vid0 + f * cfg.frame_tokens + i;
      w.frame[j] = static_cast<int>(f);
      w.region[j] = static_cast<int>(i * regions / cfg.frame_tokens);
      w.changed[j] = static_cast<std::uint8_t>(f == 0 || tok.uniform() < cfg.frame_change);
    }
  for (std::size_t j = 0; j < n; ++j) w.salient[j] = static_cast<std::uint8_t>(tok.uniform() < cfg.salient_fraction);

  // Members of each group in position order (for target draws).
  std::vector<std::size_t> members[3], salient_members[3];
  for (std::size_t j = 0; j < n; ++j) {
    members[w.group[j]].push_back(j);
    if (w.salient[j]) salient_members[w.group[j]].push_back(j);
  }
  const double affinity[3] = {cfg.text_affinity, cfg.image_affinity, cfg.video_affinity};
  // Number of members of `list` before position t.
  auto before = [](const std::vector<std::size_t>& list, std::size_t t) {
    return static_cast<std::size_t>(std::lower_bound(list.begin(), list.end(), t) - list.begin());
  };

  const double sqrt_d = std::sqrt(static_cast<double>(d));
  w.layers.resize(static_cast<std::size_t>(cfg.num_layers));
  std::vector<float> c(n * d), proto(2 * regions * d), vproto(2 * regions * d), xi(d);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    L.k.assign(n * hkv * d, 0.0f);
    L.v.assign(n * hkv * d, 0.0f);
    L.q.assign(n * hq * d, 0.0f);
    for (std::size_t h = 0; h < hkv; ++h) {
      Sampler s(derive_seed(cfg.seed, 1000 + l * hkv + h));
      // Region prototypes: [0, regions) image, [regions, 2·regions) video frame 0.
      for (std::size_t r = 0; r < 2 * regions; ++r) {
        s.unit_vector(proto.data() + r * d, d);
        for (std::size_t x = 0; x < d; ++x) vproto[r * d + x] = static_cast<float>(s.normal());
      }
      auto noisy_unit = [&](const float* base, float rel, float* out) {
        double n2 = 0.0;
        for (std::size_t x = 0; x < d; ++x) {
          out[x] = base[x] + rel * static_cast<float>(s.normal() / sqrt_d);
          n2 += static_cast<double>(out[x]) * out[x];
        }
        const float inv = static_cast<float>(1.0 / std::sqrt(n2));
        for (std::size_t x = 0; x < d; ++x) out[x] *= inv;
      };
      for (std::size_t j = 0; j < n; ++j) {
        float* cj = c.data() + j * d;
        float* vj = L.v.data() + (j * hkv + h) * d;
        const bool video = w.group[j] == MultimodalWorkload::kVideoGroup;
        if (w.group[j] == MultimodalWorkload::kImageGroup || (video && w.frame[j] == 0)) {
          const std::size_t r = static_cast<std::size_t>(w.region[j]) + (video ? regions : 0);
          noisy_unit(proto.data() + r * d, cfg.image_noise, cj);
          for (std::size_t x = 0; x < d; ++x) vj[x] = vproto[r * d + x] + cfg.image_noise * static_cast<float>(s.normal());
        } else if (video && !w.changed[j]) {
          const std::size_t prev = j - cfg.frame_tokens;
          noisy_unit(c.data() + prev * d, cfg.frame_jitter, cj);
          const float* vp = L.v.data() + (prev * hkv + h) * d;
          for (std::size_t x = 0; x < d; ++x) vj[x] = vp[x] + cfg.frame_jitter * static_cast<float>(s.normal());
        } else {
          s.unit_vector(cj, d);
          for (std::size_t x = 0; x < d; ++x) vj[x] = static_cast<float>(s.normal());
        }
        const double scale = sqrt_d * (j == 0 ? cfg.sink_key_scale : 1.0f);
        float* kj = L.k.data() + (j * hkv + h) * d;
        for (std::size_t x = 0; x < d; ++x) kj[x] = static_cast<float>(scale * cj[x]);
      }
      // Queries of the query heads reading this KV head.
      for (std::size_t g = h * rep; g < (h + 1) * rep; ++g) {
        Sampler qs(derive_seed(cfg.seed, 1000000 + l * hq + g));
        for (std::size_t t = 0; t < n; ++t) {
          float* q = L.q.data() + (t * hq + g) * d;
          for (std::size_t x = 0; x < d; ++x) q[x] = cfg.sink_logit * c[x] + cfg.query_noise * static_cast<float>(qs.normal());
          if (t == 0) continue;
          for (int a = 0; a < cfg.targets_per_query; ++a) {
            std::size_t j;
            if (qs.uniform() < cfg.local_prob) {
              const std::size_t lo = t > cfg.local_window ? t - cfg.local_window : 0;
              j = lo + qs.index(t - lo);
            } else {
              std::vector<double> wg(3);
              for (int gr = 0; gr < 3; ++gr) wg[gr] = before(members[gr], t) > 0 ? affinity[gr] : 0.0;
              if (wg[0] + wg[1] + wg[2] <= 0.0) wg[0] = 1.0;  // only text-like tokens exist before t
              const std::size_t gr = qs.categorical(wg);
              const std::size_t ns = before(salient_members[gr], t);
              if (ns > 0 && qs.uniform() < cfg.salient_prob) {
                j = salient_members[gr][qs.index(ns)];
              } else {
                j = members[gr][qs.index(before(members[gr], t))];
              }
            }
            const float boost = w.group[j] == MultimodalWorkload::kTextGroup ? cfg.text_logit : cfg.visual_logit;
            for (std::size_t x = 0; x < d; ++x) q[x] += boost * c[j * d + x];
          }
        }
      }
    }
  }
  return w;
}

}  // namespace kvsynth
