// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Shared store engine of the methods that put KIVI's codec (§1: keys per channel in groups of G
/// tokens, values per token in groups of Gv channels, 2/4/8-bit asymmetric min–max with fp16
/// metadata, kernels/kivi.hpp) under the BB-13 "G-of-(G+R)" flush and protect a few tokens in
/// fp16 (BB-12): OTT (§8) and SubKV (§9). A method supplies a Hooks object:
///   std::size_t window_target(std::size_t n) const   R for n held slots (may grow with n)
///   std::size_t protect_capacity() const              table capacity
///   void on_flush(const float* k, std::size_t s0, int G, int d, ProtectedTokens& table,
///                 std::uint8_t* protect)              choose tokens of the candidate group
///       (k: its keys [G][d], fp16 values in fp32; slots s0..s0+G−1): protect[t] = category + 1
///       for a token to keep in fp16 (0 = quantize); may re-categorize existing entries.
///   void reset()                                      forget tracing state (clear())
///
/// Slots: [quantized groups: nq slots, one pool block per group][fp16 window: n − nq slots].
/// Flush: whenever the window holds ≥ G + window_target(n) slots, its oldest G slots form the
/// candidate group C; the hooks pick protected tokens of C; their K and V go to the table
/// (fp16, bit exact) and in C are replaced by C's per-channel mean (over all G tokens) before
/// both K and V of C are quantized ([rec] OTT §8 step 3). Their slots stay in the group as
/// placeholders: the fused kernels take the protected copy for their logit and skip the
/// placeholder value row, so a placeholder contributes no probability mass of its own.
///
/// Attention (BB-15): KIVI key logits per group, protected logits overwritten by fp16 dots; value
/// accumulation over runs of unprotected rows plus fp16 protected rows; dense fp16 window.
/// Eviction (BB-16): a group is retained whole while any slot lives (dead slots stay masked by
/// the cache); protected entries of dropped slots are removed, none promoted. A dead slot inside a
/// retained group keeps its table entry (masked by the cache). truncate() into a group decodes its
/// survivors (protected ones from their exact copies) back into the window.
/// The window is a linear array (a flush moves the remaining ≤ window_target rows down once per
/// G appended tokens).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvcompress/core/block_pool.hpp"
#include "kvcompress/core/float16.hpp"
#include "kvcompress/kernels/convert.hpp"
#include "kvcompress/kernels/dense_attention.hpp"
#include "kvcompress/kernels/kivi.hpp"
#include "kvcompress/policies/quant/common/protected_tokens.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Codec parameters of a GroupFlushStore.
struct GroupFlushParams {
  int bits;          ///< 2, 4 or 8 (keys and values)
  int group;         ///< G: tokens per key group and per flush (multiple of 16)
  int value_group;   ///< Gv: channels per value group (divides d, multiple of 32/bits)
  std::size_t window_capacity;  ///< largest window: max window_target + G

  std::size_t key_group_bytes(int d) const { return kernels::kivi_key_group_bytes(group, d, bits); }
  std::size_t value_row_bytes(int d) const { return kernels::kivi_value_row_bytes(d, value_group, bits); }
  /// One pool block = one group: the key group blob, then G value row blobs.
  std::size_t block_bytes(int d) const {
    return key_group_bytes(d) + static_cast<std::size_t>(group) * value_row_bytes(d);
  }
  std::size_t window_bytes(int d) const { return 2 * window_capacity * static_cast<std::size_t>(d) * sizeof(half); }
  std::size_t scratch_floats(int d) const { return 2 * static_cast<std::size_t>(group) * static_cast<std::size_t>(d); }
};

template <class Hooks>
class GroupFlushStore {
 public:
  GroupFlushStore(int d, const GroupFlushParams& p, Hooks hooks, BlockTable table)
      : d_(d), p_(p), hooks_(std::move(hooks)), table_(std::move(table)),
        win_k_(p.window_capacity * static_cast<std::size_t>(d)), win_v_(p.window_capacity * static_cast<std::size_t>(d)),
        prot_(hooks_.protect_capacity(), d), kg_(p.key_group_bytes(d)), vr_(p.value_row_bytes(d)) {}

  std::size_t size() const { return n_; }
  /// Slots in quantized groups (placeholders included) and in the fp16 window.
  std::size_t quantized() const { return nq_; }
  std::size_t window() const { return n_ - nq_; }
  const ProtectedTokens& protected_tokens() const { return prot_; }
  const Hooks& hooks() const { return hooks_; }

  void append(const float* k, const float* v, std::size_t ld, std::size_t n, float* scratch) {
    for (std::size_t t = 0; t < n; ++t) {
      const std::size_t w = n_ - nq_;
      kernels::convert(k + t * ld, win_k_.data() + w * ud(), ud(), best_isa{});
      kernels::convert(v + t * ld, win_v_.data() + w * ud(), ud(), best_isa{});
      ++n_;
      while (n_ - nq_ >= G() + hooks_.window_target(n_)) flush(scratch);
    }
  }

  void logits(const float* q, int rows, float* out, std::size_t ldl) const {
    for (std::size_t g = 0; g < nq_ / G(); ++g)
      kernels::kivi_key_logits(block(g), 1, p_.group, d_, p_.bits, q, rows, out + g * G(), ldl, best_isa{});
    for (std::size_t i = 0; i < prot_.size(); ++i) {
      const std::size_t j = prot_.slot(i);
      kernels::dense_logits(prot_.key(i), ud(), 1, d_, q, rows, out + j, ldl, best_isa{});
    }
    if (n_ > nq_) kernels::dense_logits(win_k_.data(), ud(), n_ - nq_, d_, q, rows, out + nq_, ldl, best_isa{});
  }

  void accumulate(const float* p, std::size_t ldp, int rows, float* out) const {
    std::size_t e = 0;
    for (std::size_t g = 0; g < nq_ / G(); ++g) {
      const std::uint8_t* vrows = block(g) + kg_;
      const std::size_t j0 = g * G(), j1 = j0 + G();
      std::size_t j = j0;
      while (j < j1) {
        const std::size_t stop = (e < prot_.size() && prot_.slot(e) < j1) ? prot_.slot(e) : j1;
        if (stop > j)
          kernels::kivi_value_accumulate(vrows + (j - j0) * vr_, stop - j, d_, p_.value_group, p_.bits, p + j, ldp,
                                         rows, out, best_isa{});
        if (stop < j1) {
          kernels::dense_accumulate(prot_.value(e), ud(), 1, d_, p + stop, ldp, rows, out, best_isa{});
          ++e;
        }
        j = stop + 1;
      }
    }
    if (n_ > nq_) kernels::dense_accumulate(win_v_.data(), ud(), n_ - nq_, d_, p + nq_, ldp, rows, out, best_isa{});
  }

  void read(std::size_t j0, std::size_t j1, float* k, float* v, std::size_t ld, float* scratch) const {
    std::size_t decoded = SIZE_MAX;
    for (std::size_t j = j0; j < j1; ++j) {
      float* kd = k + (j - j0) * ld;
      float* vd = v + (j - j0) * ld;
      if (j < nq_) {
        const std::size_t g = j / G();
        if (g != decoded) {
          decode_group(g, scratch, scratch + G() * ud());
          decoded = g;
        }
        std::copy(scratch + (j % G()) * ud(), scratch + (j % G() + 1) * ud(), kd);
        std::copy(scratch + (G() + j % G()) * ud(), scratch + (G() + j % G() + 1) * ud(), vd);
      } else {
        kernels::convert(win_k_.data() + (j - nq_) * ud(), kd, ud(), best_isa{});
        kernels::convert(win_v_.data() + (j - nq_) * ud(), vd, ud(), best_isa{});
      }
    }
  }

  std::size_t plan_compact(const std::uint8_t* keep, std::uint8_t* retained) const {
    std::size_t count = 0;
    for (std::size_t g0 = 0; g0 < nq_; g0 += G()) {
      const bool any = std::any_of(keep + g0, keep + g0 + G(), [](std::uint8_t x) { return x != 0; });
      std::fill(retained + g0, retained + g0 + G(), static_cast<std::uint8_t>(any));
      count += any ? G() : 0;
    }
    for (std::size_t j = nq_; j < n_; ++j) {
      retained[j] = keep[j] ? 1 : 0;
      count += retained[j];
    }
    return count;
  }

  void compact(const std::uint8_t* retained, float*) {
    prot_.compact(retained, n_);
    std::size_t ng = 0;
    for (std::size_t g = 0; g < nq_ / G(); ++g) {
      if (!retained[g * G()]) continue;
      if (ng != g) std::memcpy(table_.block(ng), table_.block(g), p_.block_bytes(d_));
      ++ng;
    }
    std::size_t o = 0;
    for (std::size_t j = nq_; j < n_; ++j) {
      if (!retained[j]) continue;
      const std::size_t src = j - nq_;
      if (src != o) move_window_row(src, o);
      ++o;
    }
    nq_ = ng * G();
    n_ = nq_ + o;
    table_.shrink_to(ng);
  }

  void truncate(std::size_t m, float* scratch) {
    if (m >= n_) return;
    if (m >= nq_) {
      n_ = m;
      return;
    }
    const std::size_t g = m / G(), keep = m - g * G();
    if (keep > 0) {
      decode_group(g, scratch, scratch + G() * ud());
      kernels::convert(scratch, win_k_.data(), keep * ud(), best_isa{});
      kernels::convert(scratch + G() * ud(), win_v_.data(), keep * ud(), best_isa{});
    }
    nq_ = g * G();
    n_ = m;
    prot_.truncate(nq_);
    table_.shrink_to(g);
  }

  void clear() {
    n_ = nq_ = 0;
    prot_.clear();
    hooks_.reset();
    table_.shrink_to(0);
  }

  /// Pool blocks + window + protected table (all fixed parts are allocated at construction).
  std::size_t memory_bytes() const {
    return table_.size() * align_up(p_.block_bytes(d_)) + p_.window_bytes(d_) +
           ProtectedTokens::bytes(prot_.capacity(), d_);
  }

 private:
  std::size_t ud() const { return static_cast<std::size_t>(d_); }
  std::size_t G() const { return static_cast<std::size_t>(p_.group); }
  const std::uint8_t* block(std::size_t g) const { return reinterpret_cast<const std::uint8_t*>(table_.block(g)); }
  std::uint8_t* block(std::size_t g) { return reinterpret_cast<std::uint8_t*>(table_.block(g)); }

  void move_window_row(std::size_t from, std::size_t to) {
    std::memcpy(win_k_.data() + to * ud(), win_k_.data() + from * ud(), ud() * sizeof(half));
    std::memcpy(win_v_.data() + to * ud(), win_v_.data() + from * ud(), ud() * sizeof(half));
  }

  /// Group g dequantized into k, v [G][d], protected slots from their exact copies.
  void decode_group(std::size_t g, float* k, float* v) const {
    kernels::kivi_dequantize_key_group(block(g), p_.group, d_, p_.bits, k, ud(), best_isa{});
    kernels::kivi_dequantize_value_rows(block(g) + kg_, G(), d_, p_.value_group, p_.bits, v, ud(), best_isa{});
    for (std::size_t i = 0; i < prot_.size(); ++i) {
      const std::size_t j = prot_.slot(i);
      if (j / G() != g) continue;
      kernels::convert(prot_.key(i), k + (j % G()) * ud(), ud(), best_isa{});
      kernels::convert(prot_.value(i), v + (j % G()) * ud(), ud(), best_isa{});
    }
  }

  /// Quantizes the window's oldest G slots as a new group (see the file comment).
  void flush(float* scratch) {
    float* ck = scratch;
    float* cv = scratch + G() * ud();
    kernels::convert(win_k_.data(), ck, G() * ud(), best_isa{});
    kernels::convert(win_v_.data(), cv, G() * ud(), best_isa{});
    std::uint8_t protect[256];  // G ≤ 256 (checked by the methods' configs)
    std::fill(protect, protect + G(), std::uint8_t{0});
    hooks_.on_flush(ck, nq_, p_.group, d_, prot_, protect);
    bool any = false;
    for (std::size_t t = 0; t < G(); ++t)
      if (protect[t] && prot_.size() < prot_.capacity()) {
        prot_.insert(nq_ + t, static_cast<std::uint8_t>(protect[t] - 1), ck + t * ud(), cv + t * ud());
        any = true;
      } else {
        protect[t] = 0;
      }
    if (any) {
      for (float* x : {ck, cv})
        for (std::size_t c = 0; c < ud(); ++c) {
          double s = 0.0;
          for (std::size_t t = 0; t < G(); ++t) s += x[t * ud() + c];
          const float mean = static_cast<float>(s / static_cast<double>(G()));
          for (std::size_t t = 0; t < G(); ++t)
            if (protect[t]) x[t * ud() + c] = mean;
        }
    }
    const std::size_t g = nq_ / G();
    table_.grow_to(g + 1);
    kernels::kivi_quantize_key_group(ck, ud(), p_.group, d_, p_.bits, block(g), best_isa{});
    kernels::kivi_quantize_value_rows(cv, ud(), G(), d_, p_.value_group, p_.bits, block(g) + kg_, best_isa{});
    const std::size_t rest = n_ - nq_ - G();
    std::memmove(win_k_.data(), win_k_.data() + G() * ud(), rest * ud() * sizeof(half));
    std::memmove(win_v_.data(), win_v_.data() + G() * ud(), rest * ud() * sizeof(half));
    nq_ += G();
  }

  int d_;
  GroupFlushParams p_;
  Hooks hooks_;
  BlockTable table_;
  std::vector<half> win_k_, win_v_;  // [window_capacity][d]: slots [nq_, n_)
  ProtectedTokens prot_;
  std::size_t kg_, vr_;
  std::size_t n_ = 0, nq_ = 0;
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
