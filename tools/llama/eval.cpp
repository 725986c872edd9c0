// SPDX-License-Identifier: Apache-2.0
/// \file
/// kvc_eval: what each kvcompress policy does to a real model's next-token predictions and speed.
///
///   kvc_eval [--model PATH] [--text FILE] [--contexts 512,2048,max] [--speed-contexts 2048,8192]
///            [--policies SUBSTR,...] [--chunk 256] [--out-md FILE] [--out-png FILE] [--quick]
///            [--speed-only]
///
/// Model: SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by scripts/fetch_model.sh). Text: the license
/// texts of /usr/share/common-licenses (inputs.hpp), or --text. "max" is the longest context the
/// text allows, capped at 8192 (the model's trained context).
///
/// Quality protocol (teacher forcing, teacher_forcing.hpp), for each context length N, on tokens
/// [0, N], every policy's cache fed the same tokens in lockstep (one Session, see model.hpp):
///   1. prefill tokens [0, N/2) in chunks of --chunk tokens, then end_prefill() (eviction
///      policies select their budget here);
///   2. decode tokens [N/2, N) one at a time, so the decode path of every policy is exercised;
///   3. score each decode step's logits against the next text token: perplexity over these N/2
///      predictions (each conditioned on ≥ N/2 tokens of context), KL(reference ‖ policy) of the
///      full next-token distribution (mean and p99 over positions), and top-1 agreement with the
///      reference, which is the dense fp32 cache (first row).
///   Bits per KV element = 8·memory_bytes() / (2·layers·kv_heads·head_dim·N) at the end, i.e. the
///   cache's whole footprint (quantization metadata, fp16 windows, slot metadata) per element of
///   the N tokens seen.
/// Speed protocol, at the contexts of --contexts that --speed-contexts lists, per policy alone: prefill N − D tokens in chunks (prefill
/// tok/s, end_prefill included), then decode D = 32 tokens one at a time (decode tok/s, logits
/// included), single thread. --quick runs N = 512 only (both passes, D = 16), for CI;
/// --speed-only skips the quality pass (measure speed on a quiet machine).
///
/// Output: the table on stdout (markdown), --out-md writes it with the protocol, --out-png plots
/// mean KL against bits per element with gnuplot (the .dat and .gp files stay beside the PNG).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "inputs.hpp"
#include "metrics.hpp"
#include "model.hpp"
#include "policy_table.hpp"
#include "teacher_forcing.hpp"
#include "tokenizer.hpp"

namespace {

using namespace kvllama;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Options {
  std::string model = default_model_path();
  std::string text_file;  // empty: the license texts
  std::vector<std::string> contexts{"512", "2048", "max"};
  std::vector<std::string> speed_contexts{"2048", "8192"};
  std::vector<std::string> policy_filter;
  int chunk = 256;
  int speed_decode = 32;
  std::string out_md, out_png;
  bool speed_only = false;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") o.model = value();
    else if (a == "--text") o.text_file = value();
    else if (a == "--contexts") o.contexts = split_commas(value());
    else if (a == "--speed-contexts") o.speed_contexts = split_commas(value());
    else if (a == "--policies") o.policy_filter = split_commas(value());
    else if (a == "--chunk") o.chunk = std::max(1, std::atoi(value().c_str()));
    else if (a == "--out-md") o.out_md = value();
    else if (a == "--out-png") o.out_png = value();
    else if (a == "--speed-only") o.speed_only = true;
    else if (a == "--quick") {
      o.contexts = {"512"};
      o.speed_contexts = {"512"};
      o.speed_decode = 16;
    } else if (a == "-h" || a == "--help") {
      std::puts("usage: kvc_eval [--model PATH] [--text FILE] [--contexts 512,2048,max] [--speed-contexts 2048,8192]\n"
                "                [--policies SUBSTR,...] [--chunk 256] [--out-md FILE] [--out-png FILE] [--quick] [--speed-only]");
      std::exit(0);
    } else {
      throw std::runtime_error("unknown argument '" + a + "' (see --help)");
    }
  }
  return o;
}

/// Context lengths from "512", "max", …: each ≤ the text's longest (tokens − 1, capped at 8192),
/// sorted, without duplicates.
std::vector<int> resolve_contexts(const std::vector<std::string>& specs, std::size_t n_tokens) {
  const int longest = static_cast<int>(std::min<std::size_t>(8192, n_tokens - 1));
  std::vector<int> out;
  for (const std::string& s : specs) {
    const int n = s == "max" ? longest : std::atoi(s.c_str());
    if (n < 4 || n % 2 != 0) throw std::runtime_error("context '" + s + "' must be an even number ≥ 4 or 'max'");
    out.push_back(std::min(n, longest));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

struct Row {
  int context = 0;
  std::string policy;
  double bits = NAN, ppl = NAN, ppl_ref = NAN, mean_kl = NAN, p99_kl = NAN, top1 = NAN;  // NaN: not measured
  double prefill_tps = -1, decode_tps = -1;  // < 0: not measured at this context
};

/// Quality protocol (see the file comment) for context n; fills one Row per policy.
std::vector<Row> run_quality(const Model& model, const std::vector<int>& tokens, int n, int chunk,
                             const std::vector<PolicyEntry>& policies) {
  const kvcompress::CacheShape shape = model.cache_shape(static_cast<std::size_t>(n));
  std::vector<std::unique_ptr<AnyCache>> owned;
  std::vector<AnyCache*> caches;
  for (const PolicyEntry& p : policies) {
    owned.push_back(p.make(shape, static_cast<std::size_t>(n)));
    caches.push_back(owned.back().get());
  }
  const auto t0 = Clock::now();
  const std::vector<QualityStats> stats = teacher_forced_quality(model, tokens, n, chunk, caches);
  std::fprintf(stderr, "[context %d: %zu policies in lockstep, %.1f s]\n", n, policies.size(), seconds_since(t0));
  const ModelConfig& c = model.config();
  const double elements = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * n;
  std::vector<Row> rows;
  for (std::size_t s = 0; s < policies.size(); ++s) {
    Row r;
    r.context = n;
    r.policy = policies[s].label;
    r.bits = 8.0 * static_cast<double>(caches[s]->memory_bytes()) / elements;
    r.ppl = stats[s].perplexity();
    r.ppl_ref = stats[0].perplexity();
    r.mean_kl = stats[s].mean_kl();
    r.p99_kl = stats[s].p99_kl();
    r.top1 = stats[s].top1_agreement();
    rows.push_back(r);
  }
  return rows;
}

/// Speed protocol for one policy at context n: {prefill tok/s, decode tok/s}.
std::pair<double, double> run_speed(const Model& model, const std::vector<int>& tokens, int n, int chunk,
                                    int decode, const PolicyEntry& policy) {
  std::unique_ptr<AnyCache> cache = policy.make(model.cache_shape(static_cast<std::size_t>(n)), static_cast<std::size_t>(n));
  Session<AnyCache> session(model, {cache.get()});
  const int prefill = n - decode;
  auto t0 = Clock::now();
  for (int i = 0; i < prefill; i += chunk) {
    const int m = std::min(chunk, prefill - i);
    session.feed(tokens.data() + i, m, i + m == prefill ? Logits::kLast : Logits::kNone);
  }
  session.end_prefill();
  const double t_prefill = seconds_since(t0);
  t0 = Clock::now();
  for (int t = prefill; t < n; ++t) session.feed(&tokens[static_cast<std::size_t>(t)], 1, Logits::kLast);
  return {prefill / t_prefill, decode / seconds_since(t0)};
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string table_header() {
  return "| context | policy | bits/elem | PPL | ΔPPL | mean KL | p99 KL | top-1 | prefill tok/s | decode tok/s |\n"
         "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
}

std::string table_row(const Row& r) {
  const auto cell = [](const char* f, double v) { return std::isnan(v) || v < 0 ? std::string("—") : fmt(f, v); };
  return "| " + std::to_string(r.context) + " | " + r.policy + " | " + cell("%.2f", r.bits) + " | " +
         cell("%.3f", r.ppl) + " | " + (std::isnan(r.ppl) ? "—" : fmt("%+.2f%%", 100.0 * (r.ppl / r.ppl_ref - 1.0))) +
         " | " + cell("%.2e", r.mean_kl) + " | " + cell("%.2e", r.p99_kl) + " | " + cell("%.2f%%", 100.0 * r.top1) +
         " | " + cell("%.0f", r.prefill_tps) + " | " + cell("%.0f", r.decode_tps) + " |\n";
}

void write_markdown(const std::string& path, const std::vector<Row>& rows, const std::string& text_desc,
                    std::size_t n_tokens, int chunk) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << "# Real-model evaluation of kvcompress policies\n\n"
      << "Model: SmolLM2-135M-Instruct (Q4_1 GGUF, weights dequantized to fp32). Text: " << text_desc << " ("
      << n_tokens << " tokens). Generated by `kvc_eval`.\n\n"
      << "Protocol, per context N: prefill tokens [0, N/2) in chunks of " << chunk
      << ", `end_prefill()`, then decode tokens [N/2, N) one at a time with teacher forcing; PPL, KL and top-1 are "
         "over those N/2 decode predictions. KL = KL(dense fp32 ‖ policy) of the next-token distribution, in nats. "
         "Bits/elem = 8·memory_bytes() / (2·layers·kv_heads·head_dim·N). Speeds: each policy alone, single "
         "thread, prefill of N − 32 tokens then 32 decode steps at context ≈ N (— = not measured at this N).\n\n"
      << table_header();
  for (const Row& r : rows) out << table_row(r);
}

/// Writes <png>.dat and <png>.gp and runs gnuplot; throws if gnuplot fails.
void plot(const std::string& png, const std::vector<Row>& rows) {
  const std::string base = png.size() > 4 && png.substr(png.size() - 4) == ".png" ? png.substr(0, png.size() - 4) : png;
  const std::string dat = base + ".dat", gp = base + ".gp";
  std::map<int, std::vector<const Row*>> by_context;
  for (const Row& r : rows)
    if (r.mean_kl > 0) by_context[r.context].push_back(&r);  // NaN compares false too  // the reference (KL = 0) has no place on a log axis
  if (by_context.empty()) throw std::runtime_error("nothing to plot: no quality results (--speed-only?)");
  {
    std::ofstream d(dat);
    for (const auto& [ctx, rs] : by_context) {
      d << "\"context " << ctx << "\"\n";
      for (const Row* r : rs) d << r->bits << " " << r->mean_kl << " \"" << r->policy << "\"\n";
      d << "\n\n";
    }
  }
  {
    std::ofstream g(gp);
    g << "set terminal pngcairo size 1000,650 font ',10'\n"
      << "set output '" << png << "'\n"
      << "set title 'SmolLM2-135M-Instruct: next-token KL divergence vs dense fp32 cache'\n"
      << "set xlabel 'bits per KV element (memory\\_bytes)'\nset ylabel 'mean KL (nats/token)'\n"
      << "set logscale y\nset format y '10^{%L}'\nset grid\nset key top right\n"
      << "plot for [i=0:" << by_context.size() - 1 << "] '" << dat
      << "' index i using 1:2 with points pt 7 ps 1.4 title columnheader(1), \\\n"
      << "     for [i=0:" << by_context.size() - 1 << "] '" << dat
      << "' index i using 1:2:3 with labels left offset 0.8,0.3 font ',8' noenhanced notitle\n";
  }
  const std::string cmd = "gnuplot '" + gp + "'";
  if (std::system(cmd.c_str()) != 0)
    throw std::runtime_error("gnuplot failed on '" + gp + "' (is it installed? apt-get install gnuplot-nox)");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    if (!file_exists(o.model))
      throw std::runtime_error("model not found at '" + o.model + "'; run scripts/fetch_model.sh");
    const GgufFile file = GgufFile::open(o.model);
    const Tokenizer tok(file);
    const Model model(file);
    const std::string text = o.text_file.empty() ? load_eval_text() : read_text_file(o.text_file);
    const std::string text_desc = o.text_file.empty()
        ? "GPL-3, Apache-2.0, MPL-2.0, GFDL-1.3, Artistic, CC0-1.0 from /usr/share/common-licenses"
        : o.text_file;
    const std::vector<int> tokens = tok.encode(text);
    if (tokens.size() < 8) throw std::runtime_error("evaluation text too short");

    std::vector<PolicyEntry> policies;
    for (PolicyEntry& p : evaluation_policies()) {
      bool keep = policies.empty() || o.policy_filter.empty();  // the reference always runs
      for (const std::string& f : o.policy_filter) keep |= p.label.find(f) != std::string::npos;
      if (keep) policies.push_back(std::move(p));
    }
    const std::vector<int> contexts = resolve_contexts(o.contexts, tokens.size());
    const std::vector<int> speed = resolve_contexts(o.speed_contexts, tokens.size());

    std::fputs(table_header().c_str(), stdout);
    std::vector<Row> all;
    for (int n : contexts) {
      std::vector<Row> rows(policies.size());
      if (o.speed_only) {
        for (std::size_t s = 0; s < policies.size(); ++s) {
          rows[s].context = n;
          rows[s].policy = policies[s].label;
        }
      } else {
        rows = run_quality(model, tokens, n, o.chunk, policies);
      }
      if (std::find(speed.begin(), speed.end(), n) != speed.end())
        for (std::size_t s = 0; s < policies.size(); ++s)
          std::tie(rows[s].prefill_tps, rows[s].decode_tps) =
              run_speed(model, tokens, n, o.chunk, std::min(o.speed_decode, n / 2), policies[s]);
      for (const Row& r : rows) std::fputs(table_row(r).c_str(), stdout);
      std::fflush(stdout);
      all.insert(all.end(), rows.begin(), rows.end());
    }
    if (!o.out_md.empty()) write_markdown(o.out_md, all, text_desc, tokens.size(), o.chunk);
    if (!o.out_png.empty()) plot(o.out_png, all);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc_eval: %s\n", e.what());
    return 1;
  }
}
