// SPDX-License-Identifier: Apache-2.0
/// \file
/// kvc_quant_quality: every quantizer of quant_methods.hpp on the same K/V/Q, against the dense
/// fp32 cache. Data: synthetic LLM-like activations (tools/synthetic/llm_kv.hpp; always) and,
/// with `--activations tests/data/smollm2_activations_v1.bin`, real SmolLM2-135M activations
/// (layers 0, 15, 29; 256 tokens).
///
/// Protocol per method: one KVCache per data set with one cache layer per data layer; all n
/// tokens appended in one chunk (keys post-RoPE, or pre-RoPE for stores that declare it),
/// end_prefill(), then the last n_eval query rows of each layer attend (causal: row t sees keys
/// 0..t). Measured:
///  * bits/elem = 8·memory_bytes() / (2·L·Hkv·d·n): the cache's whole footprint (quantized
///    blocks, scales/zero points, full-precision windows, slot metadata) per stored K or V
///    element;
///  * K err, V err: ‖x̂ − x‖/‖x‖ of the decoded (materialize) keys / values;
///  * out err: ‖o − o_ref‖/‖o_ref‖ of the attention outputs of attend() (the fused kernels over
///    the compressed storage) vs the dense fp32 cache's outputs, over all evaluated rows and
///    query heads;
///  * KL mean / p99: KL(p_ref ‖ p) in nats per (layer, row, query head), where p_ref =
///    softmax(q·k/√d) over the fp32 reference's keys and p = the same over the method's decoded
///    keys (materialize(), in double). That is the attention distribution the compressed keys
///    imply; the fused kernels compute the same logits up to fp32 summation order.
/// Output: one Markdown table per data set, to stdout and, with --out FILE, to FILE.

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

#include "activation_fixture.hpp"
#include "quality/attention_math.hpp"
#include "quality/quant_methods.hpp"
#include "synthetic/llm_kv.hpp"

namespace {

using kvquality::KvqData;

struct Options {
  bool quick = false;
  std::string activations, out;
  std::size_t tokens = 0, eval = 0;  // 0 = default of the mode
};

void usage() {
  std::puts(
      "usage: kvc_quant_quality [--quick] [--activations FILE] [--tokens N] [--eval N] [--out FILE.md]\n"
      "  --quick          tiny synthetic shapes (CI smoke test)\n"
      "  --activations F  also measure on real activations (tests/data/smollm2_activations_v1.bin)\n"
      "  --tokens N       synthetic tokens (default 1024, quick 256)\n"
      "  --eval N         query rows evaluated per layer (default 128, quick 32)\n"
      "  --out FILE       also write the Markdown tables to FILE");
}

KvqData synthetic_data(const Options& o) {
  kvsynth::LlmKvConfig c;
  c.n_tokens = o.tokens ? o.tokens : (o.quick ? 256 : 1024);
  if (o.quick) {
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 64;
  }
  const int layers = o.quick ? 1 : 2;
  KvqData d;
  d.num_q_heads = c.num_q_heads;
  d.num_kv_heads = c.num_kv_heads;
  d.head_dim = c.head_dim;
  d.n_tokens = c.n_tokens;
  for (int l = 0; l < layers; ++l) {
    c.seed = kvsynth::derive_seed(2026, static_cast<std::uint64_t>(l));
    auto s = kvsynth::make_llm_kv(c);
    d.rope = s.rope;
    d.layers.push_back({std::move(s.q), std::move(s.k_pre), std::move(s.k), std::move(s.v)});
  }
  std::ostringstream name;
  name << "synthetic LLM-like K/V/Q (tools/synthetic/llm_kv.hpp: " << c.outlier_channels
       << " outlier key channels of magnitude " << c.outlier_scale << ", RoPE, Student-t(" << c.value_dof
       << ") values), " << layers << " layer(s), Hq " << c.num_q_heads << ", Hkv " << c.num_kv_heads << ", d "
       << c.head_dim << ", " << c.n_tokens << " tokens";
  d.name = name.str();
  return d;
}

KvqData fixture_data(const std::string& path) {
  const auto f = kvtest::ActivationFixture::load(path);
  KvqData d;
  d.num_q_heads = f.n_q_heads;
  d.num_kv_heads = f.n_kv_heads;
  d.head_dim = f.head_dim;
  d.n_tokens = static_cast<std::size_t>(f.n_tokens);
  d.rope.head_dim = static_cast<std::size_t>(f.head_dim);
  d.rope.base = f.rope_base;
  // The engine applies ggml NORM-mode RoPE (adjacent channel pairs) to GGUF-permuted weights.
  d.rope.layout = kvcompress::quant::common::RopeLayout::kInterleaved;
  std::ostringstream name;
  name << "real activations of " << f.model_name << " (" << path << "; stored as fp16, so dense fp16 is lossless here), layers";
  for (const auto& L : f.layers) {
    d.layers.push_back({L.q, L.k_pre, L.k, L.v});
    name << ' ' << L.index;
  }
  name << ", Hq " << f.n_q_heads << ", Hkv " << f.n_kv_heads << ", d " << f.head_dim << ", " << f.n_tokens << " tokens";
  d.name = name.str();
  return d;
}

struct Row {
  std::string label;
  double bits, k_err, v_err, out_err, kl_mean, kl_p99;
};

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

std::string measure(const KvqData& data, std::size_t n_eval) {
  const std::size_t n = data.n_tokens, d = static_cast<std::size_t>(data.head_dim);
  const std::size_t hq = static_cast<std::size_t>(data.num_q_heads), hkv = static_cast<std::size_t>(data.num_kv_heads);
  const std::size_t rep = hq / hkv, L = data.layers.size();
  n_eval = std::min(n_eval, n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const double elems = 2.0 * static_cast<double>(L * hkv * d * n);

  const kvquality::QuantRun ref = kvquality::reference_method().run(data, n_eval);
  // Reference attention weights, [L][Hq][n_eval] rows of n (zero past the causal limit).
  std::vector<double> p_ref(L * hq * n_eval * n, 0.0);
  std::vector<double> p;
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t g = 0; g < hq; ++g)
      for (std::size_t i = 0; i < n_eval; ++i) {
        const std::size_t t = n - n_eval + i;
        const float* q = data.layers[l].q.data() + (t * hq + g) * d;
        kvquality::attention_weights(q, ref.keys.data() + (l * hkv + g / rep) * n * d, t + 1, d, d, scale, p);
        std::copy(p.begin(), p.end(), p_ref.begin() + static_cast<std::ptrdiff_t>(((l * hq + g) * n_eval + i) * n));
      }

  // Self-check of the plumbing (layouts, query offsets): the fp32 cache's attend() must match
  // p_ref·V computed here in double.
  {
    kvquality::RelativeError e;
    std::vector<double> o(d);
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t i = 0; i < n_eval; ++i)
        for (std::size_t g = 0; g < hq; ++g) {
          const std::size_t t = n - n_eval + i, h = g / rep;
          const double* pr = p_ref.data() + ((l * hq + g) * n_eval + i) * n;
          std::fill(o.begin(), o.end(), 0.0);
          for (std::size_t j = 0; j <= t; ++j)
            for (std::size_t c = 0; c < d; ++c) o[c] += pr[j] * data.layers[l].v[(j * hkv + h) * d + c];
          e.add(ref.out.data() + ((l * n_eval + i) * hq + g) * d, o.data(), d);
        }
    if (!(e.value() < 1e-4))
      throw std::runtime_error("self-check failed: the fp32 cache's attention output differs from the double "
                               "reference by " + fmt("%.2e", e.value()) + " (relative)");
  }

  std::vector<Row> rows;
  auto evaluate = [&](const std::string& label, const kvquality::QuantRun& r) {
    Row row{label, 8.0 * static_cast<double>(r.memory_bytes) / elems, 0, 0, 0, 0, 0};
    kvquality::RelativeError ek, ev, eo;
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t h = 0; h < hkv; ++h) {
        // Original layout [n][Hkv][d] vs decoded [Hkv][n][d].
        for (std::size_t t = 0; t < n; ++t) {
          const std::size_t o = (l * hkv + h) * n * d + t * d, s = (t * hkv + h) * d;
          ek.add(r.keys.data() + o, data.layers[l].k.data() + s, d);
          ev.add(r.values.data() + o, data.layers[l].v.data() + s, d);
        }
      }
    eo.add(r.out.data(), ref.out.data(), ref.out.size());
    std::vector<double> kls;
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t g = 0; g < hq; ++g)
        for (std::size_t i = 0; i < n_eval; ++i) {
          const std::size_t t = n - n_eval + i;
          const float* q = data.layers[l].q.data() + (t * hq + g) * d;
          kvquality::attention_weights(q, r.keys.data() + (l * hkv + g / rep) * n * d, t + 1, d, d, scale, p);
          const double* pr = p_ref.data() + ((l * hq + g) * n_eval + i) * n;
          kls.push_back(kvquality::kl_divergence(std::vector<double>(pr, pr + t + 1), p));
        }
    row.k_err = ek.value();
    row.v_err = ev.value();
    row.out_err = eo.value();
    row.kl_mean = kvquality::mean(kls);
    row.kl_p99 = kvquality::quantile(kls, 0.99);
    for (double x : {row.bits, row.k_err, row.v_err, row.out_err, row.kl_mean, row.kl_p99})
      if (!std::isfinite(x)) throw std::runtime_error("non-finite metric for " + label);
    rows.push_back(row);
  };
  evaluate("dense fp32 (reference)", ref);
  for (const auto& m : kvquality::quant_methods()) evaluate(m.label, m.run(data, n_eval));

  std::ostringstream md;
  md << "### " << data.name << "\n\n"
     << "Last " << n_eval << " query rows of each layer; KL in nats per (layer, row, query head).\n\n"
     << "| method | bits/elem | K err | V err | out err | KL mean | KL p99 |\n"
     << "|---|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows)
    md << "| " << r.label << " | " << fmt("%.2f", r.bits) << " | " << fmt("%.2e", r.k_err) << " | "
       << fmt("%.2e", r.v_err) << " | " << fmt("%.2e", r.out_err) << " | " << fmt("%.2e", r.kl_mean) << " | "
       << fmt("%.2e", r.kl_p99) << " |\n";
  md << "\n";
  return md.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kvc_quant_quality: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--quick") o.quick = true;
    else if (a == "--activations") o.activations = value();
    else if (a == "--out") o.out = value();
    else if (a == "--tokens") o.tokens = std::stoul(value());
    else if (a == "--eval") o.eval = std::stoul(value());
    else if (a == "-h" || a == "--help") { usage(); return 0; }
    else { std::fprintf(stderr, "kvc_quant_quality: unknown argument '%s'\n", a.c_str()); usage(); return 2; }
  }
  try {
    const std::size_t n_eval = o.eval ? o.eval : (o.quick ? 32 : 128);
    std::string md =
        "## Quantization quality vs the dense fp32 cache (kvc_quant_quality)\n\n"
        "bits/elem = 8·memory_bytes()/(2·L·Hkv·d·n), metadata and full-precision windows included. "
        "K/V err: relative L2 error of the decoded keys/values. out err: relative L2 error of attend() "
        "outputs vs the fp32 cache. KL(p_ref ‖ p) of attention weights computed from the decoded keys.\n\n";
    md += measure(synthetic_data(o), n_eval);
    if (!o.activations.empty()) md += measure(fixture_data(o.activations), n_eval);
    std::cout << md;
    if (!o.out.empty()) {
      std::ofstream f(o.out);
      if (!(f << md)) throw std::runtime_error("cannot write " + o.out);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc_quant_quality: %s\n", e.what());
    return 1;
  }
  return 0;
}
