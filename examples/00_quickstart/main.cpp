// SPDX-License-Identifier: Apache-2.0
// Quick start: how an inference engine drives kvcompress.
//
// A toy 4-layer model (32 query heads, 8 KV heads, head_dim 128; random activations with a few
// outlier key channels and RoPE applied, like a real Llama layer) prefills a 2048-token prompt in
// chunks of 256, then decodes 256 tokens. The same activations go into a dense fp16 cache and a
// KIVI-2 cache; the program prints the memory each holds and how far KIVI's attention output is
// from the dense one.
//
//   ./00_quickstart [--steps N]

#include <kvcompress/kvcompress.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int kLayers = 4, kQHeads = 32, kKvHeads = 8, kHeadDim = 128;

// Rotary embedding (rotate-half convention, base 10000) of `heads` vectors at position `pos`.
void rope(float* x, int heads, long pos) {
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < kHeadDim / 2; ++i) {
      const double theta = pos * std::pow(10000.0, -2.0 * i / kHeadDim);
      float* a = x + h * kHeadDim + i;
      float* b = a + kHeadDim / 2;
      const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
      const float x0 = *a, x1 = *b;
      *a = x0 * c - x1 * s;
      *b = x0 * s + x1 * c;
    }
}

// Stand-in for a transformer layer's Q/K/V projections, with the structure real activations
// have: keys carry a few large channels (what per-channel key quantization is designed for),
// queries are large enough that attention concentrates on a few tokens, and values share a
// per-channel offset.
struct Activations {
  std::mt19937 rng{42};
  std::normal_distribution<float> normal{0.0f, 1.0f};
  void fill(std::vector<float>& x, int heads, std::size_t tokens, float scale, bool outliers, bool offset) {
    x.resize(tokens * heads * kHeadDim);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const std::size_t c = i % kHeadDim;
      x[i] = normal(rng) * scale * ((outliers && c % 29 == 5) ? 6.0f : 1.0f) +
             (offset ? 0.5f * static_cast<float>(c % 7) - 1.5f : 0.0f);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  int steps = 256;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--steps") steps = std::max(1, std::atoi(argv[i + 1]));
  const std::size_t prompt = 2048, chunk = 256;

  // 1. Describe the model and reserve the caches once (nothing allocates after this).
  const kvcompress::CacheShape shape{kLayers, kQHeads, kKvHeads, kHeadDim, prompt + steps};
  kvcompress::ThreadPoolExecutor pool(2);
  kvcompress::KVCache<kvcompress::Policy<>> dense(shape, {}, &pool);  // fp16 baseline
  kvcompress::KVCache<kvcompress::Policy<kvcompress::evict::None, kvcompress::merge::None,
                                         kvcompress::quant::Kivi2>>
      kivi(shape, {}, &pool);

  Activations act;
  std::vector<float> q, k, v, out_dense, out_kivi;
  double err_sum = 0, err_max = 0;
  long n_err = 0;
  auto step = [&](std::size_t n, long pos0, bool measure) {
    for (int layer = 0; layer < kLayers; ++layer) {
      act.fill(q, kQHeads, n, 3.0f, false, false);
      act.fill(k, kKvHeads, n, 1.0f, true, false);
      act.fill(v, kKvHeads, n, 1.0f, false, true);
      for (std::size_t t = 0; t < n; ++t) {
        rope(q.data() + t * kQHeads * kHeadDim, kQHeads, pos0 + static_cast<long>(t));
        rope(k.data() + t * kKvHeads * kHeadDim, kKvHeads, pos0 + static_cast<long>(t));
      }
      out_dense.resize(q.size());
      out_kivi.resize(q.size());
      // 2. Per layer: append this chunk's K/V, then attend with its queries (causal).
      dense.append(layer, k.data(), v.data(), n);
      dense.attend(layer, q.data(), n, out_dense.data());
      kivi.append(layer, k.data(), v.data(), n);
      kivi.attend(layer, q.data(), n, out_kivi.data());
      if (!measure) continue;
      for (std::size_t r = 0; r < n * kQHeads; ++r) {
        double num = 0, den = 0;
        for (int c = 0; c < kHeadDim; ++c) {
          const double a = out_dense[r * kHeadDim + c], b = out_kivi[r * kHeadDim + c];
          num += (a - b) * (a - b);
          den += a * a;
        }
        const double rel = std::sqrt(num / den);
        err_sum += rel;
        err_max = std::max(err_max, rel);
        ++n_err;
      }
    }
  };
  for (std::size_t t = 0; t < prompt; t += chunk) step(chunk, static_cast<long>(t), false);
  // 3. Eviction policies act here, once every layer holds the prompt (no-op for these two).
  dense.end_prefill();
  kivi.end_prefill();
  for (int s = 0; s < steps; ++s) step(1, static_cast<long>(prompt) + s, true);

  const double tokens = static_cast<double>(prompt + steps);
  const double elems = 2.0 * kLayers * kKvHeads * kHeadDim * tokens;
  std::printf("kvcompress quick start: %d layers, %d query / %d KV heads, head_dim %d, %zu prompt + %d decoded tokens\n",
              kLayers, kQHeads, kKvHeads, kHeadDim, prompt, steps);
  std::printf("%-10s %12s %14s\n", "cache", "memory (MiB)", "bits/element");
  std::printf("%-10s %12.2f %14.2f\n", "dense_f16", dense.memory_bytes() / 1048576.0, dense.memory_bytes() * 8 / elems);
  std::printf("%-10s %12.2f %14.2f\n", "kivi2", kivi.memory_bytes() / 1048576.0, kivi.memory_bytes() * 8 / elems);
  std::printf("memory saved by KIVI-2: %.1f%% (%.2fx smaller)\n",
              100.0 * (1.0 - static_cast<double>(kivi.memory_bytes()) / static_cast<double>(dense.memory_bytes())),
              static_cast<double>(dense.memory_bytes()) / static_cast<double>(kivi.memory_bytes()));
  std::printf("decode attention output, KIVI-2 vs dense: mean relative error %.4f, max %.4f (%ld head outputs)\n",
              err_sum / static_cast<double>(n_err), err_max, n_err);
  return 0;
}
