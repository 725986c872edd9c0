// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Loader of the real activation fixture tests/data/smollm2_activations_v1.bin: queries and keys
/// (before and after RoPE) and values of SmolLM2-135M-Instruct layers 0, 15 and 29 on the first
/// 256 tokens of the evaluation text, written by tools/llama/dump_activations.cpp. Quantization
/// and eviction tests use it beside synthetic data: real K has outlier channels, real attention
/// has sinks.
///
/// Format, version 1, little endian:
///   char magic[8] = "KVCACT\0\0"; u32 version = 1;
///   u32 n_layers, n_tokens, n_q_heads, n_kv_heads, head_dim; f32 rope_base;
///   u32 name_len; char model_name[name_len];
///   u32 layer_index[n_layers]; i32 token_id[n_tokens];
///   per layer, fp16 (IEEE binary16): q [n_tokens][n_q_heads][head_dim] (post-RoPE),
///     k_pre [n_tokens][n_kv_heads][head_dim], k [same] (post-RoPE), v [same];
///   u64 FNV-1a hash of every preceding byte.
/// Token t sits at position t. Any deviation (magic, version, sizes, hash) throws
/// std::runtime_error naming the file and the problem.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvcompress/core/float16.hpp"

#ifndef KVCOMPRESS_TEST_DATA_DIR
#define KVCOMPRESS_TEST_DATA_DIR "tests/data"
#endif

namespace kvtest {

inline constexpr char kActivationMagic[8] = {'K', 'V', 'C', 'A', 'C', 'T', '\0', '\0'};
inline constexpr std::uint32_t kActivationVersion = 1;

/// FNV-1a, 64 bit: the fixture's integrity hash.
inline std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

struct ActivationFixture {
  /// One dumped layer, decoded to fp32; shapes as in the file comment.
  struct Layer {
    int index = 0;
    std::vector<float> q, k_pre, k, v;
  };

  int n_tokens = 0, n_q_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rope_base = 0;
  std::string model_name;
  std::vector<int> token_ids;
  std::vector<Layer> layers;

  static std::string default_path() { return std::string(KVCOMPRESS_TEST_DATA_DIR) + "/smollm2_activations_v1.bin"; }

  /// The layer with model layer index `index`; throws if it was not dumped.
  const Layer& layer(int index) const {
    for (const Layer& l : layers)
      if (l.index == index) return l;
    throw std::out_of_range("activation fixture: layer " + std::to_string(index) + " not in the fixture");
  }

  static ActivationFixture load(const std::string& path = default_path()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("activation fixture '" + path + "': cannot open");
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return parse(bytes, path);
  }

  static ActivationFixture parse(const std::vector<std::uint8_t>& bytes, const std::string& name) {
    std::size_t pos = 0;
    const auto fail = [&](const std::string& what) -> void {
      throw std::runtime_error("activation fixture '" + name + "': " + what);
    };
    const auto take = [&](std::size_t n, const char* what) {
      if (n > bytes.size() - pos)
        fail(std::string("truncated while reading ") + what + " at offset " + std::to_string(pos));
      const std::uint8_t* p = bytes.data() + pos;
      pos += n;
      return p;
    };
    const auto u32 = [&](const char* what) {
      std::uint32_t v;
      std::memcpy(&v, take(4, what), 4);
      return v;
    };
    if (bytes.size() < 8 || std::memcmp(bytes.data(), kActivationMagic, 8) != 0) fail("bad magic (not an activation fixture)");
    pos = 8;
    const std::uint32_t version = u32("version");
    if (version != kActivationVersion)
      fail("unsupported version " + std::to_string(version) + " (this loader reads version 1)");
    if (bytes.size() < 8 + 8) fail("truncated (no hash)");
    std::uint64_t stored;
    std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
    if (stored != fnv1a64(bytes.data(), bytes.size() - 8)) fail("hash mismatch (file corrupt or truncated)");

    ActivationFixture f;
    const std::uint32_t n_layers = u32("n_layers");
    f.n_tokens = static_cast<int>(u32("n_tokens"));
    f.n_q_heads = static_cast<int>(u32("n_q_heads"));
    f.n_kv_heads = static_cast<int>(u32("n_kv_heads"));
    f.head_dim = static_cast<int>(u32("head_dim"));
    std::memcpy(&f.rope_base, take(4, "rope_base"), 4);
    if (n_layers < 1 || n_layers > 1024 || f.n_tokens < 1 || f.n_tokens > (1 << 20) || f.n_q_heads < 1 ||
        f.n_q_heads > 1024 || f.n_kv_heads < 1 || f.n_q_heads % f.n_kv_heads != 0 || f.head_dim < 1 || f.head_dim > 1024)
      fail("implausible shape in the header");
    const std::uint32_t name_len = u32("name length");
    const std::uint8_t* nm = take(name_len, "model name");
    f.model_name.assign(reinterpret_cast<const char*>(nm), name_len);
    std::vector<int> indices(n_layers);
    for (auto& i : indices) i = static_cast<int>(u32("layer index"));
    f.token_ids.resize(static_cast<std::size_t>(f.n_tokens));
    for (auto& t : f.token_ids) t = static_cast<int>(u32("token id"));
    const auto halves = [&](std::size_t n, const char* what) {
      const std::uint8_t* p = take(2 * n, what);
      std::vector<float> out(n);
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = kvcompress::f16_bits_to_f32(h);
      }
      return out;
    };
    const std::size_t nq = static_cast<std::size_t>(f.n_tokens) * f.n_q_heads * f.head_dim;
    const std::size_t nk = static_cast<std::size_t>(f.n_tokens) * f.n_kv_heads * f.head_dim;
    for (std::uint32_t l = 0; l < n_layers; ++l) {
      Layer L;
      L.index = indices[l];
      L.q = halves(nq, "q");
      L.k_pre = halves(nk, "k_pre");
      L.k = halves(nk, "k");
      L.v = halves(nk, "v");
      f.layers.push_back(std::move(L));
    }
    if (pos + 8 != bytes.size()) fail("unexpected trailing bytes");
    return f;
  }
};

}  // namespace kvtest
