// SPDX-License-Identifier: Apache-2.0
/// \file
/// kvc_dump_activations: writes the real activation fixture used by quantization and eviction
/// tests (format: tests/tools/activation_fixture.hpp, version 1).
///
///   kvc_dump_activations [--model PATH] [--tokens 256] [--out tests/data/smollm2_activations_v1.bin]
///
/// Runs the first --tokens tokens of the evaluation text (inputs.hpp) through the model in one
/// prefill chunk with the dense fp32 cache and records, for layers 0, 15 and 29 (first, middle,
/// last), the post-RoPE queries, the keys before and after RoPE and the values, stored as fp16.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../../tests/tools/activation_fixture.hpp"
#include "inputs.hpp"
#include "kvcompress/kvcompress.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

namespace {

using namespace kvllama;

void put(std::vector<std::uint8_t>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) { put(out, &v, 4); }

/// Appends n floats as fp16; throws if one does not fit.
void put_halves(std::vector<std::uint8_t>& out, const std::vector<float>& x) {
  for (float f : x) {
    if (!(std::fabs(f) <= kvcompress::kHalfMax)) throw std::runtime_error("activation out of fp16 range");
    const std::uint16_t h = kvcompress::f32_to_f16_bits(f);
    put(out, &h, 2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = default_model_path(), out_path = "tests/data/smollm2_activations_v1.bin";
  int n_tokens = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model_path = argv[i + 1];
    else if (a == "--out") out_path = argv[i + 1];
    else if (a == "--tokens") n_tokens = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "unknown argument '%s'\n", a.c_str()); return 2; }
  }
  try {
    const GgufFile file = GgufFile::open(model_path);
    const Tokenizer tok(file);
    const Model model(file);
    const ModelConfig& c = model.config();
    std::vector<int> tokens = tok.encode(load_eval_text());
    if (n_tokens < 1 || static_cast<std::size_t>(n_tokens) > tokens.size()) throw std::runtime_error("bad --tokens");
    tokens.resize(static_cast<std::size_t>(n_tokens));
    const std::vector<int> layers{0, c.n_layers / 2, c.n_layers - 1};

    struct Dump { std::vector<float> q, k_pre, k, v; };
    std::vector<Dump> dumps(layers.size());
    using Cache = kvcompress::KVCache<kvcompress::Policy<kvcompress::evict::None, kvcompress::merge::None, kvcompress::quant::DenseF32>>;
    Cache cache(model.cache_shape(tokens.size()));
    Session<Cache> session(model, {&cache});
    session.set_observer([&](const AttentionTrace& t) {
      for (std::size_t i = 0; i < layers.size(); ++i) {
        if (layers[i] != t.layer) continue;
        const std::size_t nq = static_cast<std::size_t>(t.n) * c.n_heads * c.head_dim;
        const std::size_t nk = static_cast<std::size_t>(t.n) * c.n_kv_heads * c.head_dim;
        dumps[i] = {{t.q, t.q + nq}, {t.k_pre, t.k_pre + nk}, {t.k, t.k + nk}, {t.v, t.v + nk}};
      }
    });
    session.feed(tokens.data(), n_tokens, Logits::kNone);

    std::vector<std::uint8_t> out;
    put(out, kvtest::kActivationMagic, 8);
    put_u32(out, kvtest::kActivationVersion);
    put_u32(out, static_cast<std::uint32_t>(layers.size()));
    for (int v : {n_tokens, c.n_heads, c.n_kv_heads, c.head_dim}) put_u32(out, static_cast<std::uint32_t>(v));
    const float base = static_cast<float>(c.rope_base);
    put(out, &base, 4);
    const std::string name = kModelFileName;
    put_u32(out, static_cast<std::uint32_t>(name.size()));
    put(out, name.data(), name.size());
    for (int l : layers) put_u32(out, static_cast<std::uint32_t>(l));
    for (int t : tokens) put_u32(out, static_cast<std::uint32_t>(t));
    for (const Dump& d : dumps) {
      put_halves(out, d.q);
      put_halves(out, d.k_pre);
      put_halves(out, d.k);
      put_halves(out, d.v);
    }
    const std::uint64_t h = kvtest::fnv1a64(out.data(), out.size());
    put(out, &h, 8);
    std::ofstream f(out_path, std::ios::binary);
    if (!f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size())))
      throw std::runtime_error("cannot write '" + out_path + "'");
    std::printf("wrote %s (%zu bytes, layers 0/%d/%d, %d tokens)\n", out_path.c_str(), out.size(), layers[1], layers[2], n_tokens);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc_dump_activations: %s\n", e.what());
    return 1;
  }
}
