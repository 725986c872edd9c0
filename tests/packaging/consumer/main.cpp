// SPDX-License-Identifier: Apache-2.0
// Downstream smoke test: include the umbrella header, append a few tokens, attend one query.
// Every value row is the same vector c, so whatever the attention weights are, the output of
// each query head must be c (softmax weights sum to 1); c is exactly representable in fp16.
#include <kvcompress/kvcompress.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  constexpr int kQHeads = 4, kKvHeads = 2, kDim = 64, kTokens = 16;
  kvcompress::CacheShape shape{/*num_layers*/ 1, /*num_q_heads*/ kQHeads, /*num_kv_heads*/ kKvHeads,
                               /*head_dim*/ kDim, /*capacity*/ 64};
  kvcompress::SerialExecutor exec;
  kvcompress::KVCache<kvcompress::Policy<>> cache(shape, {}, &exec);

  std::vector<float> k(kTokens * kKvHeads * kDim), v(k.size());
  auto c = [](int h, int d) { return 0.25f * static_cast<float>((h * 7 + d) % 9) - 1.0f; };
  for (int t = 0; t < kTokens; ++t)
    for (int h = 0; h < kKvHeads; ++h)
      for (int d = 0; d < kDim; ++d) {
        const int i = (t * kKvHeads + h) * kDim + d;
        k[i] = 0.01f * static_cast<float>((t * 13 + h * 5 + d * 3) % 17) - 0.08f;
        v[i] = c(h, d);
      }
  cache.append(0, k.data(), v.data(), kTokens);
  if (cache.size(0, 0) != static_cast<decltype(cache.size(0, 0))>(kTokens)) {
    std::fprintf(stderr, "consumer: size %ld after appending %d tokens\n",
                 static_cast<long>(cache.size(0, 0)), kTokens);
    return 1;
  }

  std::vector<float> q(kQHeads * kDim, 0.1f), out(q.size(), -99.0f);
  cache.attend(0, q.data(), 1, out.data());
  const int group = kQHeads / kKvHeads;
  for (int h = 0; h < kQHeads; ++h)
    for (int d = 0; d < kDim; ++d) {
      const float want = c(h / group, d), got = out[h * kDim + d];
      if (!(std::fabs(got - want) <= 1e-3f)) {
        std::fprintf(stderr, "consumer: out[%d][%d] = %g, expected %g\n", h, d, got, want);
        return 1;
      }
    }
  std::printf("kvcompress consumer OK (%zu bytes)\n", static_cast<std::size_t>(cache.memory_bytes()));
  return 0;
}
