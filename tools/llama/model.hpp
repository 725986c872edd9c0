// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Llama-architecture forward pass (SmolLM2) whose attention runs through a kvcompress cache.
///
/// Per layer: x += Wo·attn(RoPE(Wq·n(x)), RoPE(Wk·n(x)), Wv·n(x)); x += Wdown·(silu(Wgate·n(x)) ⊙
/// Wup·n(x)), with n() = RMSNorm (eps `llama.attention.layer_norm_rms_epsilon`) times a learned
/// gain; then a final RMSNorm and logits = Wout·n(x), where Wout is `output.weight` or, when the
/// file has none (SmolLM2 ties them), the token embedding.
///
/// RoPE uses ggml's NORM mode — rotation of adjacent pairs (x[2i], x[2i+1]) by pos·base^(-2i/d)
/// with base `llama.rope.freq_base` — because llama.cpp's HF→GGUF converter permutes the rows of
/// Wq and Wk so that this mode reproduces the Hugging Face half-split rotation. (Checked: on the
/// first 256 tokens of the evaluation text, perplexity is 21.7 with NORM and 180 with half-split.)
///
/// Attention: keys are appended to the cache after RoPE (the cache assigns positions, in the same
/// order as the engine's own counter), then `cache.attend` computes causal softmax attention of the
/// new queries over what the cache holds. The engine is a template on the cache type, so every
/// kvcompress policy plugs in; any type with the KVCache members append/attend/end_prefill works.
///
/// Weights are dequantized once to fp32 and multiplied with Eigen (GEMM for prefill chunks, GEMV
/// for decode): 135M parameters take 540 MB, and one decode step streams them once. Q/K/V and
/// gate/up are fused into one matrix each, so a decode step makes 4 weight passes per layer.
///
/// A Session feeds one token stream to several caches at once ("lockstep"): the rows of all
/// caches go through each weight matrix together, so comparing P cache policies under teacher
/// forcing reads the weights once per step instead of P times. With one cache it is plain
/// single-sequence inference.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf.hpp"
#include "kvcompress/core/cache_shape.hpp"
#include "kvcompress/core/modality.hpp"

namespace kvllama {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Hyper-parameters read from `llama.*` metadata.
struct ModelConfig {
  int n_layers = 0, n_embd = 0, n_ff = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int vocab = 0, context_length = 0;
  float rms_eps = 1e-5f;
  double rope_base = 10000.0;

  static ModelConfig from_gguf(const GgufFile& f) {
    const std::string arch = f.get_string("general.architecture");
    if (arch != "llama") throw std::runtime_error("model: architecture '" + arch + "' is not 'llama'");
    ModelConfig c;
    c.n_layers = static_cast<int>(f.get_int("llama.block_count"));
    c.n_embd = static_cast<int>(f.get_int("llama.embedding_length"));
    c.n_ff = static_cast<int>(f.get_int("llama.feed_forward_length"));
    c.n_heads = static_cast<int>(f.get_int("llama.attention.head_count"));
    c.n_kv_heads = f.has_key("llama.attention.head_count_kv")
                       ? static_cast<int>(f.get_int("llama.attention.head_count_kv")) : c.n_heads;
    c.context_length = static_cast<int>(f.get_int("llama.context_length"));
    c.rms_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon"));
    if (f.has_key("llama.rope.freq_base")) c.rope_base = f.get_float("llama.rope.freq_base");
    c.vocab = static_cast<int>(f.get_string_array("tokenizer.ggml.tokens").size());
    if (c.n_layers < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0 ||
        c.n_embd % c.n_heads != 0 || c.n_ff < 1)
      throw std::runtime_error("model: inconsistent llama.* hyper-parameters");
    c.head_dim = c.n_embd / c.n_heads;
    if (f.has_key("llama.rope.dimension_count") && f.get_int("llama.rope.dimension_count") != c.head_dim)
      throw std::runtime_error("model: partial RoPE (rope.dimension_count != head_dim) is not supported");
    return c;
  }
};

/// What the engine passes to an observer after each (layer, cache) attention call; pointers are
/// row-major [n][heads][head_dim] and valid only during the call.
struct AttentionTrace {
  int layer;
  int seq;              ///< index of the cache in the session
  int n;                ///< tokens in this call
  const float* q;       ///< post-RoPE queries [n][n_heads][d]
  const float* k_pre;   ///< keys before RoPE [n][n_kv_heads][d]
  const float* k;       ///< keys after RoPE, as appended [n][n_kv_heads][d]
  const float* v;       ///< values [n][n_kv_heads][d]
  const float* out;     ///< attention output from the cache [n][n_heads][d]
};
using AttentionObserver = std::function<void(const AttentionTrace&)>;

/// fp32 weights of a Llama model.
class Model {
 public:
  /// Reads and dequantizes every weight; throws on a missing or mis-shaped tensor.
  explicit Model(const GgufFile& f) : cfg_(ModelConfig::from_gguf(f)) {
    const int e = cfg_.n_embd, kv = cfg_.n_kv_heads * cfg_.head_dim;
    embd_ = matrix(f, "token_embd.weight", cfg_.vocab, e);
    out_norm_ = vector(f, "output_norm.weight", e);
    if (f.has_tensor("output.weight")) output_ = matrix(f, "output.weight", cfg_.vocab, e);
    layers_.resize(static_cast<std::size_t>(cfg_.n_layers));
    for (int l = 0; l < cfg_.n_layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      Layer& L = layers_[static_cast<std::size_t>(l)];
      L.attn_norm = vector(f, p + "attn_norm.weight", e);
      L.ffn_norm = vector(f, p + "ffn_norm.weight", e);
      L.wqkv.resize(e + 2 * kv, e);
      L.wqkv.topRows(e) = matrix(f, p + "attn_q.weight", e, e);
      L.wqkv.middleRows(e, kv) = matrix(f, p + "attn_k.weight", kv, e);
      L.wqkv.bottomRows(kv) = matrix(f, p + "attn_v.weight", kv, e);
      L.wo = matrix(f, p + "attn_output.weight", e, e);
      L.wgu.resize(2 * cfg_.n_ff, e);
      L.wgu.topRows(cfg_.n_ff) = matrix(f, p + "ffn_gate.weight", cfg_.n_ff, e);
      L.wgu.bottomRows(cfg_.n_ff) = matrix(f, p + "ffn_up.weight", cfg_.n_ff, e);
      L.wdown = matrix(f, p + "ffn_down.weight", e, cfg_.n_ff);
    }
  }

  const ModelConfig& config() const { return cfg_; }

  /// Cache geometry for this model with room for `capacity` tokens per (layer, KV head).
  kvcompress::CacheShape cache_shape(std::size_t capacity) const {
    return {cfg_.n_layers, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim, capacity};
  }

  /// Output projection (tied to the embedding when the file has no output.weight).
  const RowMatrix& output_weight() const { return output_.size() ? output_ : embd_; }

  struct Layer {
    Eigen::VectorXf attn_norm, ffn_norm;
    RowMatrix wqkv;   ///< [q; k; v] rows × n_embd
    RowMatrix wo;     ///< n_embd × n_embd
    RowMatrix wgu;    ///< [gate; up] rows × n_embd
    RowMatrix wdown;  ///< n_embd × n_ff
  };
  const Layer& layer(int l) const { return layers_[static_cast<std::size_t>(l)]; }
  const RowMatrix& embedding() const { return embd_; }
  const Eigen::VectorXf& output_norm() const { return out_norm_; }

 private:
  static RowMatrix matrix(const GgufFile& f, const std::string& name, int rows, int cols) {
    const TensorInfo& t = f.tensor(name);
    if (t.ne.size() != 2 || t.ne[0] != cols || t.ne[1] != rows)
      throw std::runtime_error("model: tensor '" + name + "' has the wrong shape");
    RowMatrix m(rows, cols);
    dequantize_row(t.type, f.data(t), m.data(), t.n_elements);
    return m;
  }
  static Eigen::VectorXf vector(const GgufFile& f, const std::string& name, int n) {
    const TensorInfo& t = f.tensor(name);
    if (t.n_elements != n) throw std::runtime_error("model: tensor '" + name + "' has the wrong size");
    Eigen::VectorXf v(n);
    dequantize_row(t.type, f.data(t), v.data(), n);
    return v;
  }

  ModelConfig cfg_;
  RowMatrix embd_, output_;
  Eigen::VectorXf out_norm_;
  std::vector<Layer> layers_;
};

/// out = x · wᵀ for row-major activations x [R × K] and weights w [N × K]. Eigen's GEMM packs w on
/// every call, which for the few rows of a decode step (R = number of lockstep caches) costs more
/// than the product; below kSmallBatch rows each weight row is instead read once and dotted with
/// every activation row while it sits in L1, so a decode step streams the weights exactly once.
inline void matmul_nt(const RowMatrix& x, const RowMatrix& w, RowMatrix& out) {
  constexpr Eigen::Index kSmallBatch = 16;
  if (x.rows() >= kSmallBatch) {
    out.noalias() = x * w.transpose();
    return;
  }
  out.resize(x.rows(), w.rows());
  for (Eigen::Index n = 0; n < w.rows(); ++n)
    for (Eigen::Index r = 0; r < x.rows(); ++r) out(r, n) = x.row(r).dot(w.row(n));
}

/// Which rows of logits a feed computes.
enum class Logits { kNone, kLast, kAll };

/// One token stream fed to one or more caches (see the file comment). Not thread-safe.
template <class Cache>
class Session {
 public:
  Session(const Model& model, std::vector<Cache*> caches) : m_(model), caches_(std::move(caches)) {
    if (caches_.empty()) throw std::invalid_argument("Session: no cache");
  }

  int num_caches() const { return static_cast<int>(caches_.size()); }
  void set_observer(AttentionObserver obs) { observer_ = std::move(obs); }

  /// Feeds `n` tokens to every cache. Returns logits: with kAll, rows [seq·n + t]; with kLast,
  /// row [seq] for each cache's last token; with kNone, an empty matrix.
  const RowMatrix& feed(const int* tokens, int n, Logits which,
                        kvcompress::Modality modality = kvcompress::Modality::kText) {
    const ModelConfig& c = m_.config();
    const int S = num_caches(), R = S * n, e = c.n_embd, d = c.head_dim;
    const int qd = c.n_heads * d, kvd = c.n_kv_heads * d;
    for (int t = 0; t < n; ++t) {
      if (tokens[t] < 0 || tokens[t] >= c.vocab) throw std::out_of_range("Session::feed: token id out of range");
    }
    x_.resize(R, e);
    for (int s = 0; s < S; ++s)
      for (int t = 0; t < n; ++t) x_.row(s * n + t) = m_.embedding().row(tokens[t]);
    rope_table(n);
    q_.resize(R, qd);
    k_.resize(R, kvd);
    v_.resize(R, kvd);
    att_.resize(R, qd);
    for (int l = 0; l < c.n_layers; ++l) {
      const Model::Layer& L = m_.layer(l);
      rms_norm(x_, L.attn_norm, xn_);
      matmul_nt(xn_, L.wqkv, qkv_);
      q_ = qkv_.leftCols(qd);
      k_ = qkv_.middleCols(qd, kvd);
      v_ = qkv_.rightCols(kvd);
      if (observer_) k_pre_ = k_;
      rope(q_, n, c.n_heads);
      rope(k_, n, c.n_kv_heads);
      for (int s = 0; s < S; ++s) {
        const long r0 = static_cast<long>(s) * n;
        caches_[static_cast<std::size_t>(s)]->append(l, k_.data() + r0 * kvd, v_.data() + r0 * kvd, n, modality);
        caches_[static_cast<std::size_t>(s)]->attend(l, q_.data() + r0 * qd, n, att_.data() + r0 * qd);
        if (observer_) {
          observer_(AttentionTrace{l, s, n, q_.data() + r0 * qd, k_pre_.data() + r0 * kvd,
                                   k_.data() + r0 * kvd, v_.data() + r0 * kvd, att_.data() + r0 * qd});
        }
      }
      matmul_nt(att_, L.wo, proj_);
      x_ += proj_;
      rms_norm(x_, L.ffn_norm, xn_);
      matmul_nt(xn_, L.wgu, gu_);
      h_ = gu_.leftCols(c.n_ff).array() / (1.0f + (-gu_.leftCols(c.n_ff).array()).exp()) *
           gu_.rightCols(c.n_ff).array();
      matmul_nt(h_, L.wdown, proj_);
      x_ += proj_;
    }
    pos_ += n;
    if (which == Logits::kNone) {
      logits_.resize(0, c.vocab);
      return logits_;
    }
    if (which == Logits::kLast) {
      RowMatrix last(S, e);
      for (int s = 0; s < S; ++s) last.row(s) = x_.row(s * n + n - 1);
      x_.swap(last);
    }
    rms_norm(x_, m_.output_norm(), xn_);
    matmul_nt(xn_, m_.output_weight(), logits_);
    return logits_;
  }

  /// Feeds a prompt in chunks of `chunk` tokens (logits of the last token only), then ends the
  /// prefill phase of every cache.
  const RowMatrix& prefill(const std::vector<int>& tokens, int chunk = 256) {
    for (std::size_t i = 0; i < tokens.size(); i += static_cast<std::size_t>(chunk)) {
      const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), tokens.size() - i));
      feed(tokens.data() + i, n, i + static_cast<std::size_t>(n) == tokens.size() ? Logits::kLast : Logits::kNone);
    }
    end_prefill();
    return logits_;
  }

  void end_prefill() {
    for (Cache* c : caches_) c->end_prefill();
  }

 private:
  /// out = rownorm(in) ⊙ w, rownorm(x) = x / sqrt(mean(x²) + eps).
  void rms_norm(const RowMatrix& in, const Eigen::VectorXf& w, RowMatrix& out) const {
    out.resize(in.rows(), in.cols());
    for (Eigen::Index r = 0; r < in.rows(); ++r) {
      const float ms = in.row(r).squaredNorm() / static_cast<float>(in.cols());
      out.row(r) = in.row(r).cwiseProduct(w.transpose()) * (1.0f / std::sqrt(ms + m_.config().rms_eps));
    }
  }

  /// cos/sin of pos·base^(-2i/d) for the n positions of this feed.
  void rope_table(int n) {
    const int half = m_.config().head_dim / 2;
    cos_.resize(n, half);
    sin_.resize(n, half);
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < half; ++i) {
        const double theta = static_cast<double>(pos_ + t) *
                             std::pow(m_.config().rope_base, -2.0 * i / m_.config().head_dim);
        cos_(t, i) = static_cast<float>(std::cos(theta));
        sin_(t, i) = static_cast<float>(std::sin(theta));
      }
    }
  }

  /// ggml NORM-mode RoPE in place on rows [seq·n + t] holding `heads` heads of head_dim.
  void rope(RowMatrix& a, int n, int heads) const {
    const int d = m_.config().head_dim, half = d / 2;
    for (Eigen::Index r = 0; r < a.rows(); ++r) {
      const int t = static_cast<int>(r % n);
      float* row = a.row(r).data();
      for (int h = 0; h < heads; ++h) {
        float* x = row + h * d;
        for (int i = 0; i < half; ++i) {
          const float x0 = x[2 * i], x1 = x[2 * i + 1], cs = cos_(t, i), sn = sin_(t, i);
          x[2 * i] = x0 * cs - x1 * sn;
          x[2 * i + 1] = x0 * sn + x1 * cs;
        }
      }
    }
  }

  const Model& m_;
  std::vector<Cache*> caches_;
  AttentionObserver observer_;
  int pos_ = 0;
  RowMatrix x_, xn_, qkv_, q_, k_, k_pre_, v_, att_, proj_, gu_, h_, logits_, cos_, sin_;
};

}  // namespace kvllama
