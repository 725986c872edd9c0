// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// BB-12 of methods/quantization.md: `PrecisionPlan`, the mixed-precision map of one (layer, KV
/// head, K or V): which codec encodes a token, and which codec encodes a channel. It serves the
/// per-channel bit map of VidKV keys (2-bit high-range channels, 1-bit FFT channels), the
/// per-token precision classes of AKVQ-VL (TSA text 4-bit, other 2-bit), VidKV STP and
/// CalibQuant's modality spans, and protected fp16 token sets (attention sinks, AKVQ-VL pivots,
/// OTT pools).
///
/// Codec ids are small integers that the owning method defines (typically an enum class with
/// std::uint8_t underlying type); the plan never interprets them. Tokens are keyed by their
/// absolute position pos[j], which eviction never renumbers (eviction spec §0 rule 3), so evicting
/// a slot leaves the plan valid. Token assignments are half-open position ranges; a later
/// assignment overrides earlier ones where they overlap; positions not covered get the default.
/// Windows that move with the sequence (recent tokens) are the flush policy's business (BB-13),
/// not the plan's. How a token codec and a channel codec combine is the method's decision.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kvcompress/config.hpp"
#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN
namespace quant {
namespace common {

/// Method-defined codec identifier.
using CodecId = std::uint8_t;

/// Token ranges and channel sets → codec ids for one (layer, KV head, K or V).
class PrecisionPlan {
 public:
  /// A half-open range of absolute positions [begin, end) and its codec.
  struct TokenRange {
    std::int32_t begin;
    std::int32_t end;
    CodecId codec;
  };

  /// \param head_dim      channels of the head (d ≥ 1).
  /// \param default_codec codec of every token and channel until assigned otherwise.
  PrecisionPlan(std::size_t head_dim, CodecId default_codec)
      : default_codec_(default_codec), channel_codec_(head_dim, default_codec) {
    kvcompress::detail::require(head_dim >= 1, "quant::common::PrecisionPlan", "head_dim", head_dim, "≥ 1");
  }

  /// Assigns codec to the positions [begin, end), overriding earlier assignments there.
  /// Throws InvalidArgument unless 0 ≤ begin < end.
  void assign_tokens(std::int32_t begin, std::int32_t end, CodecId codec) {
    constexpr const char* where = "quant::common::PrecisionPlan::assign_tokens";
    kvcompress::detail::require(begin >= 0, where, "begin", begin, "a position ≥ 0");
    kvcompress::detail::require(end > begin, where, "end", end, "> begin = " + std::to_string(begin));
    ranges_.push_back({begin, end, codec});
  }

  /// Assigns codec to one position.
  void assign_token(std::int32_t pos, CodecId codec) {
    kvcompress::detail::require(pos >= 0 && pos < std::numeric_limits<std::int32_t>::max(), "quant::common::PrecisionPlan::assign_token", "pos",
                                pos, "a position in [0, 2^31 − 1)");
    assign_tokens(pos, pos + 1, codec);
  }

  /// Assigns codec to channels[0..n). Throws InvalidArgument (plan unchanged) for a channel
  /// ≥ head_dim.
  void assign_channels(const std::uint16_t* channels, std::size_t n, CodecId codec) {
    for (std::size_t i = 0; i < n; ++i)
      kvcompress::detail::require(channels[i] < channel_codec_.size(), "quant::common::PrecisionPlan::assign_channels",
                                  ("channels[" + std::to_string(i) + "]").c_str(), channels[i],
                                  "< head_dim = " + std::to_string(channel_codec_.size()));
    for (std::size_t i = 0; i < n; ++i) channel_codec_[channels[i]] = codec;
  }

  /// Codec of the token at absolute position pos (the last assignment covering it).
  CodecId token_codec(std::int32_t pos) const {
    for (std::size_t i = ranges_.size(); i-- > 0;)
      if (pos >= ranges_[i].begin && pos < ranges_[i].end) return ranges_[i].codec;
    return default_codec_;
  }

  /// Codec of channel c. Throws InvalidArgument for c ≥ head_dim.
  CodecId channel_codec(std::size_t c) const {
    kvcompress::detail::require(c < channel_codec_.size(), "quant::common::PrecisionPlan::channel_codec", "c", c,
                                "< head_dim = " + std::to_string(channel_codec_.size()));
    return channel_codec_[c];
  }

  /// Number of channels assigned codec (bpe accounting, e.g. VidKV's k·d 2-bit channels).
  std::size_t channels_with(CodecId codec) const {
    std::size_t n = 0;
    for (CodecId c : channel_codec_) n += c == codec ? 1 : 0;
    return n;
  }

  std::size_t head_dim() const { return channel_codec_.size(); }
  CodecId default_codec() const { return default_codec_; }
  /// Token assignments in the order made (later entries win).
  const std::vector<TokenRange>& token_ranges() const { return ranges_; }

 private:
  CodecId default_codec_;
  std::vector<CodecId> channel_codec_;  // [head_dim]
  std::vector<TokenRange> ranges_;
};

}  // namespace common
}  // namespace quant
KVCOMPRESS_NAMESPACE_END
