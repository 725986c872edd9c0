// SPDX-License-Identifier: Apache-2.0
/// \file
/// kvc_evict_quality: every eviction method of evict_methods.hpp on the synthetic multimodal
/// workload (tools/synthetic/multimodal_workload.hpp: system/text/image/video/question prompt,
/// then decode tokens), at budgets of 5, 10, 20 and 50 % of the prompt length.
///
/// Protocol per (method, budget): the prompt is appended in chunks with its per-token modality
/// labels, each chunk's queries attend (score-based policies accumulate), end_prefill(); then
/// each decode token is appended (kGenerated) and its query attends — the "future queries".
/// Measured over the decode steps, layers and query heads, against the full context computed
/// in double from the workload's K/V (= the full fp32 cache):
///  * recall: attention-mass recall of the kept slots, Σ_{j kept} p_full(j), where p_full is the
///    full-context attention of the decode query and "kept" the live slots of its KV head after
///    the decode token's append (1 = nothing attended was lost);
///  * visual recall: the same restricted to image and video tokens (kept visual mass / visual
///    mass), for methods that treat modalities differently;
///  * out err: ‖o − o_full‖/‖o_full‖ of attend() outputs vs the full-context outputs;
///  * live: mean live slots per (layer, KV head) during decode;
///  * kept text/image/video: fraction of the prompt's text-like (system, text, question) /
///    image / video tokens still live after the last decode step.
/// Output: a Markdown table, to stdout and with --out FILE to FILE.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "quality/attention_math.hpp"
#include "quality/evict_methods.hpp"
#include "synthetic/multimodal_workload.hpp"

namespace {

using kvsynth::MultimodalWorkload;

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

void usage() {
  std::puts(
      "usage: kvc_evict_quality [--quick] [--chunk N] [--out FILE.md]\n"
      "  --quick     tiny workload (CI smoke test)\n"
      "  --chunk N   prefill chunk length (default 256, quick 32)\n"
      "  --out FILE  also write the Markdown table to FILE");
}

kvsynth::MultimodalConfig workload_config(bool quick) {
  kvsynth::MultimodalConfig c;  // defaults: LLaVA-like 576-patch image + 8 frames × 64, 64 decode tokens
  if (quick) {
    c.num_layers = 1;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.system_tokens = 8;
    c.text_tokens = 24;
    c.image_tokens = 64;
    c.image_regions = 8;
    c.video_frames = 2;
    c.frame_tokens = 16;
    c.question_tokens = 16;
    c.decode_tokens = 8;
  }
  c.seed = 2026;
  return c;
}

/// Full-context attention of every decode query: weights [step][L][Hq][n_total] (zero past
/// the causal limit) and outputs [step][L][Hq][d], in double.
struct FullReference {
  std::vector<double> p, out;
};

FullReference full_reference(const MultimodalWorkload& w) {
  const auto& c = w.config;
  const std::size_t d = static_cast<std::size_t>(c.head_dim), hq = static_cast<std::size_t>(c.num_q_heads);
  const std::size_t hkv = static_cast<std::size_t>(c.num_kv_heads), L = static_cast<std::size_t>(c.num_layers);
  const std::size_t rep = hq / hkv, n = w.n_total, steps = w.n_total - w.n_prompt;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  FullReference r;
  r.p.assign(steps * L * hq * n, 0.0);
  r.out.assign(steps * L * hq * d, 0.0);
  std::vector<double> p;
  for (std::size_t s = 0; s < steps; ++s)
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t g = 0; g < hq; ++g) {
        const std::size_t t = w.n_prompt + s, h = g / rep;
        const auto& X = w.layers[l];
        kvquality::attention_weights(X.q.data() + (t * hq + g) * d, X.k.data() + h * d, t + 1, hkv * d, d, scale, p);
        const std::size_t row = (s * L + l) * hq + g;
        std::copy(p.begin(), p.end(), r.p.begin() + static_cast<std::ptrdiff_t>(row * n));
        double* o = r.out.data() + row * d;
        for (std::size_t j = 0; j <= t; ++j)
          for (std::size_t x = 0; x < d; ++x) o[x] += p[j] * X.v[(j * hkv + h) * d + x];
      }
  return r;
}

struct Row {
  std::string label;
  double budget_pct = 0, live = 0, recall = 0, visual_recall = 0, out_err = 0, kept[3] = {0, 0, 0};
};

Row evaluate(const std::string& label, double pct, const kvquality::EvictRun& run, const MultimodalWorkload& w,
             const FullReference& ref) {
  const auto& c = w.config;
  const std::size_t hq = static_cast<std::size_t>(c.num_q_heads);
  const std::size_t hkv = static_cast<std::size_t>(c.num_kv_heads), L = static_cast<std::size_t>(c.num_layers);
  const std::size_t rep = hq / hkv, n = w.n_total, steps = w.n_total - w.n_prompt;
  Row row;
  row.label = label;
  row.budget_pct = pct;
  kvquality::RelativeError err;
  err.add(run.out.data(), ref.out.data(), ref.out.size());
  row.out_err = err.value();
  double recall = 0, live = 0, vis_kept = 0, vis_all = 0;
  for (std::size_t s = 0; s < steps; ++s)
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t h = 0; h < hkv; ++h) {
        const auto& kept = run.kept[(s * L + l) * hkv + h];
        live += static_cast<double>(kept.size());
        for (std::size_t g = h * rep; g < (h + 1) * rep; ++g) {
          const double* p = ref.p.data() + ((s * L + l) * hq + g) * n;
          for (std::int32_t j : kept) {
            recall += p[j];
            if (w.group[static_cast<std::size_t>(j)] != MultimodalWorkload::kTextGroup) vis_kept += p[j];
          }
          for (std::size_t j = 0; j < n; ++j)
            if (w.group[j] != MultimodalWorkload::kTextGroup) vis_all += p[j];
        }
      }
  row.recall = recall / static_cast<double>(steps * L * hq);
  row.visual_recall = vis_all > 0 ? vis_kept / vis_all : 1.0;
  row.live = live / static_cast<double>(steps * L * hkv);
  std::size_t count[3] = {0, 0, 0};
  for (std::size_t j = 0; j < w.n_prompt; ++j) ++count[w.group[j]];
  double kept[3] = {0, 0, 0};
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t h = 0; h < hkv; ++h)
      for (std::int32_t j : run.kept[((steps - 1) * L + l) * hkv + h])
        if (static_cast<std::size_t>(j) < w.n_prompt) kept[w.group[static_cast<std::size_t>(j)]] += 1;
  for (int g = 0; g < 3; ++g)
    row.kept[g] = count[g] ? kept[g] / static_cast<double>(L * hkv * count[g]) : 0.0;
  return row;
}

std::string describe(const MultimodalWorkload& w, std::size_t chunk) {
  const auto& c = w.config;
  std::ostringstream s;
  s << "Workload (tools/synthetic/multimodal_workload.hpp, seed " << c.seed << "): " << c.num_layers
    << " layer(s), Hq " << c.num_q_heads << ", Hkv " << c.num_kv_heads << ", d " << c.head_dim << "; prompt "
    << w.n_prompt << " tokens = system " << c.system_tokens << " + text " << c.text_tokens << " + image "
    << c.image_tokens << " (" << c.image_regions << " regions of near-duplicate patches) + video " << c.video_frames
    << "×" << c.frame_tokens << " (" << c.frame_change * 100 << " % of patches change per frame) + question "
    << c.question_tokens << "; then " << c.decode_tokens << " decode tokens whose queries are measured. Prefill in "
    << "chunks of " << chunk << " tokens.\n";
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string out;
  std::size_t chunk_opt = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else if (a == "--chunk" && i + 1 < argc) chunk_opt = std::stoul(argv[++i]);
    else if (a == "-h" || a == "--help") { usage(); return 0; }
    else { std::fprintf(stderr, "kvc_evict_quality: bad argument '%s'\n", a.c_str()); usage(); return 2; }
  }
  try {
    const MultimodalWorkload w = kvsynth::make_multimodal_workload(workload_config(quick));
    const FullReference ref = full_reference(w);
    const std::size_t chunk = chunk_opt ? chunk_opt : (quick ? 32 : 256);
    std::vector<Row> rows;
    rows.push_back(evaluate("full cache", 100.0, kvquality::full_cache_method().run(w, w.n_prompt, chunk), w, ref));
    // Self-check of the plumbing: without eviction the cache must reproduce the full context.
    if (!(rows[0].recall > 0.9999 && rows[0].out_err < 1e-4))
      throw std::runtime_error("self-check failed: the full cache gives recall " + fmt("%.6f", rows[0].recall) +
                               " and output error " + fmt("%.2e", rows[0].out_err) + " vs the double reference");
    const double fractions[] = {0.05, 0.10, 0.20, 0.50};
    for (const auto& m : kvquality::evict_methods())
      for (double f : fractions) {
        const std::size_t budget = std::max<std::size_t>(8, static_cast<std::size_t>(std::lround(f * static_cast<double>(w.n_prompt))));
        rows.push_back(evaluate(m.label, f * 100.0, m.run(w, budget, chunk), w, ref));
      }
    std::ostringstream md;
    md << "## Eviction quality on a synthetic multimodal workload (kvc_evict_quality)\n\n" << describe(w, chunk)
       << "\nBudget: % of the prompt length (tokens per layer and KV head). recall: attention mass of the decode "
          "queries (full context, double) on the kept slots; visual recall: the same for image + video tokens only. out err: relative L2 error of attend() outputs vs the "
          "full context. live: mean live slots during decode. kept text/image/video: fraction of the prompt's "
          "tokens of that kind still live at the end.\n\n"
       << "| method | budget | live | recall | visual recall | out err | kept text | kept image | kept video |\n"
       << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const Row& r : rows)
      md << "| " << r.label << " | " << fmt("%.0f %%", r.budget_pct) << " | " << fmt("%.1f", r.live) << " | "
         << fmt("%.4f", r.recall) << " | " << fmt("%.4f", r.visual_recall) << " | " << fmt("%.2e", r.out_err) << " | " << fmt("%.3f", r.kept[0]) << " | "
         << fmt("%.3f", r.kept[1]) << " | " << fmt("%.3f", r.kept[2]) << " |\n";
    md << "\n";
    std::cout << md.str();
    if (!out.empty()) {
      std::ofstream f(out);
      if (!(f << md.str())) throw std::runtime_error("cannot write " + out);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc_evict_quality: %s\n", e.what());
    return 1;
  }
  return 0;
}
