// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// GPT-2 style byte-level BPE tokenizer built from a GGUF vocabulary (`tokenizer.ggml.tokens`,
/// `tokenizer.ggml.token_type`, `tokenizer.ggml.merges`), as SmolLM2 uses it.
///
/// Encoding, as in Hugging Face `tokenizers` and llama.cpp for the "smollm" pre-tokenizer:
///   1. (optional) control tokens such as `<|im_start|>` written literally in the text become
///      their ids;
///   2. pre-tokenization: every Unicode number code point (\p{N}) is split off on its own, then the
///      GPT-2 regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
///      splits the rest — implemented by hand below, following llama.cpp's
///      unicode_regex_split_custom_gpt2;
///   3. each piece's bytes are mapped to printable code points (GPT-2's bytes_to_unicode) and
///      merged by BPE, lowest merge rank first (leftmost on ties).
/// Decoding maps the code points back to bytes, so decode(encode(s)) == s for every byte string
/// whose bytes the vocabulary covers (invalid UTF-8 included: such bytes are classified as
/// punctuation but kept verbatim). SmolLM2's vocabulary lacks 21 byte tokens (rare control bytes
/// and bytes that never occur in UTF-8, e.g. 0x04, 0xC0, 0xFF); Hugging Face and llama.cpp
/// silently drop such bytes, this encoder throws instead so no text is lost unnoticed.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gguf.hpp"
#include "unicode_tables.hpp"

namespace kvllama {

class Tokenizer {
 public:
  /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata; throws if the model is
  /// not a byte-level BPE ("gpt2") model or the vocabulary is inconsistent.
  explicit Tokenizer(const GgufFile& f) {
    if (f.get_string("tokenizer.ggml.model") != "gpt2")
      throw std::runtime_error("tokenizer: only byte-level BPE (tokenizer.ggml.model = gpt2) is supported");
    tokens_ = f.get_string_array("tokenizer.ggml.tokens");
    const std::vector<std::int64_t> types = f.has_key("tokenizer.ggml.token_type")
                                                ? f.get_int_array("tokenizer.ggml.token_type")
                                                : std::vector<std::int64_t>(tokens_.size(), kNormal);
    if (types.size() != tokens_.size())
      throw std::runtime_error("tokenizer: token_type and tokens have different lengths");
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      id_of_.emplace(tokens_[i], static_cast<int>(i));
      if (types[i] == kControl || types[i] == kUserDefined) special_.push_back(static_cast<int>(i));
    }
    is_special_.assign(tokens_.size(), false);
    for (int id : special_) is_special_[static_cast<std::size_t>(id)] = true;
    const std::vector<std::string>& merges = f.get_string_array("tokenizer.ggml.merges");
    for (std::size_t r = 0; r < merges.size(); ++r) merge_rank_.emplace(merges[r], static_cast<int>(r));
    for (int b = 0; b < 256; ++b) {
      byte_char_[b] = utf8(byte_to_codepoint(b));
      char_byte_.emplace(byte_to_codepoint(b), static_cast<std::uint8_t>(b));
    }
    eos_ = f.has_key("tokenizer.ggml.eos_token_id") ? static_cast<int>(f.get_int("tokenizer.ggml.eos_token_id")) : -1;
  }

  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  int eos_id() const { return eos_; }
  /// The id of a token given by its exact vocabulary text, or -1.
  int find(const std::string& token_text) const {
    auto it = id_of_.find(token_text);
    return it == id_of_.end() ? -1 : it->second;
  }

  /// Token ids of `text`. With `parse_special`, control tokens written literally become their ids;
  /// otherwise they are ordinary text.
  std::vector<int> encode(const std::string& text, bool parse_special = false) const {
    std::vector<int> ids;
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t hit = std::string::npos;
      int hit_id = -1;
      if (parse_special) {
        for (int id : special_) {  // earliest occurrence; the longest token on ties
          const std::string& s = tokens_[static_cast<std::size_t>(id)];
          const std::size_t p = text.find(s, start);
          if (p != std::string::npos &&
              (p < hit || (p == hit && s.size() > tokens_[static_cast<std::size_t>(hit_id)].size()))) {
            hit = p;
            hit_id = id;
          }
        }
      }
      const std::size_t end = hit == std::string::npos ? text.size() : hit;
      encode_plain(text.substr(start, end - start), ids);
      if (hit == std::string::npos) break;
      ids.push_back(hit_id);
      start = hit + tokens_[static_cast<std::size_t>(hit_id)].size();
    }
    return ids;
  }

  /// The bytes of one token: control tokens render as their text, others through the byte map.
  std::string token_bytes(int id) const {
    if (id < 0 || id >= vocab_size()) throw std::out_of_range("tokenizer: token id " + std::to_string(id));
    const std::string& s = tokens_[static_cast<std::size_t>(id)];
    return is_special_[static_cast<std::size_t>(id)] ? s : decode_symbol(s);
  }

  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (int id : ids) out += token_bytes(id);
    return out;
  }

 private:
  static constexpr std::int64_t kNormal = 1, kControl = 3, kUserDefined = 4;
  static constexpr std::uint32_t kInvalid = 0xFFFFFFFFu;  ///< an undecodable byte

  /// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
  /// U+0100 onwards, in byte order.
  static std::uint32_t byte_to_codepoint(int b) {
    const auto printable = [](int c) { return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255); };
    if (printable(b)) return static_cast<std::uint32_t>(b);
    int n = 0;
    for (int c = 0; c < b; ++c) n += !printable(c);
    return 256u + static_cast<std::uint32_t>(n);
  }

  /// Bytes of a byte-level encoded symbol (its code points through the inverse byte map).
  std::string decode_symbol(const std::string& s) const {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
      auto it = char_byte_.find(next_codepoint(s, i));
      if (it == char_byte_.end()) throw std::runtime_error("tokenizer: '" + s + "' is not byte-level encoded");
      out.push_back(static_cast<char>(it->second));
    }
    return out;
  }

  static std::string hex(unsigned v) {
    const char* digits = "0123456789ABCDEF";
    return {digits[(v >> 4) & 0xF], digits[v & 0xF]};
  }

  static std::string utf8(std::uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return s;
  }

  /// Decodes the code point at s[i] and advances i; a malformed sequence consumes one byte and
  /// yields kInvalid.
  static std::uint32_t next_codepoint(const std::string& s, std::size_t& i) {
    const auto byte = [&](std::size_t k) { return static_cast<std::uint8_t>(s[k]); };
    const std::uint8_t c = byte(i);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + static_cast<std::size_t>(len) > s.size()) {
      ++i;
      return kInvalid;
    }
    std::uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int k = 1; k < len; ++k) {
      const std::uint8_t cc = byte(i + static_cast<std::size_t>(k));
      if ((cc >> 6) != 0x2) {
        ++i;
        return kInvalid;
      }
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    i += static_cast<std::size_t>(len);
    return cp;
  }

  template <std::size_t N>
  static bool in_ranges(const CodepointRange (&r)[N], std::uint32_t cp) {
    std::size_t lo = 0, hi = N;
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (r[mid].last < cp) lo = mid + 1;
      else hi = mid;
    }
    return lo < N && r[lo].first <= cp;
  }

  enum Class : std::uint8_t { kEnd, kLetter, kNumber, kSpace, kOther };
  static Class classify(std::uint32_t cp) {
    if (cp == kInvalid) return kOther;
    if (in_ranges(kLetterRanges, cp)) return kLetter;
    if (in_ranges(kNumberRanges, cp)) return kNumber;
    if (in_ranges(kWhitespaceRanges, cp)) return kSpace;
    return kOther;
  }

  /// Pre-tokenizes and BPE-encodes text that contains no special tokens, appending to `ids`.
  void encode_plain(const std::string& text, std::vector<int>& ids) const {
    // Code points with their byte offsets (offsets has one extra entry: text.size()).
    std::vector<std::uint32_t> cps;
    std::vector<std::size_t> offsets;
    for (std::size_t i = 0; i < text.size();) {
      offsets.push_back(i);
      cps.push_back(next_codepoint(text, i));
    }
    offsets.push_back(text.size());
    const std::size_t n = cps.size();
    std::vector<Class> cls(n);
    for (std::size_t i = 0; i < n; ++i) cls[i] = classify(cps[i]);
    const auto emit = [&](std::size_t a, std::size_t b) {
      bpe(text.substr(offsets[a], offsets[b] - offsets[a]), ids);
    };
    // Step 1: each number code point is a piece of its own; the runs between go to the regex.
    std::size_t run = 0;
    for (std::size_t i = 0; i <= n; ++i) {
      if (i == n || cls[i] == kNumber) {
        gpt2_split(cps, cls, run, i, emit);
        if (i < n) emit(i, i + 1);
        run = i + 1;
      }
    }
  }

  /// The GPT-2 regex over code points [begin, end), calling emit(a, b) for each match.
  template <class Emit>
  static void gpt2_split(const std::vector<std::uint32_t>& cps, const std::vector<Class>& cls,
                         std::size_t begin, std::size_t end, Emit&& emit) {
    const auto cls_at = [&](std::size_t k) { return k < end ? cls[k] : kEnd; };
    const auto cp_at = [&](std::size_t k) { return k < end ? cps[k] : 0u; };
    std::size_t pos = begin;
    while (pos < end) {
      const std::size_t start = pos;
      const std::uint32_t c = cps[pos];
      // 's|'t|'re|'ve|'m|'ll|'d
      if (c == '\'' && pos + 1 < end) {
        const std::uint32_t c1 = cp_at(pos + 1), c2 = cp_at(pos + 2);
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
          emit(start, pos + 2);
          pos += 2;
          continue;
        }
        if (pos + 2 < end && ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))) {
          emit(start, pos + 3);
          pos += 3;
          continue;
        }
      }
      const Class here = cls_at(pos);
      const Class after_space = c == ' ' ? cls_at(pos + 1) : here;
      //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
      if (after_space == kLetter || after_space == kNumber || after_space == kOther) {
        pos += (c == ' ');
        while (cls_at(pos) == after_space) ++pos;
        emit(start, pos);
        continue;
      }
      // \s+(?!\S) | \s+
      std::size_t spaces = 0;
      while (cls_at(pos + spaces) == kSpace) ++spaces;
      if (spaces > 1 && pos + spaces < end) {
        pos += spaces - 1;  // leave the last space to prefix the next piece
      } else if (spaces > 0) {
        pos += spaces;
      } else {
        ++pos;
      }
      emit(start, pos);
    }
  }

  /// BPE of one pre-tokenized piece (raw bytes), appending its token ids.
  void bpe(const std::string& piece, std::vector<int>& ids) const {
    std::vector<std::string> sym;
    sym.reserve(piece.size());
    for (unsigned char b : piece) sym.push_back(byte_char_[b]);
    while (sym.size() > 1) {
      int best = -1;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
        auto it = merge_rank_.find(sym[i] + ' ' + sym[i + 1]);
        if (it != merge_rank_.end() && (best < 0 || it->second < best)) {
          best = it->second;
          at = i;
        }
      }
      if (best < 0) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    for (const std::string& s : sym) {
      auto it = id_of_.find(s);
      if (it == id_of_.end()) {  // only a lone byte can be missing: every merge result is a token
        const std::string bytes = decode_symbol(s);
        throw std::runtime_error("tokenizer: the vocabulary cannot represent byte 0x" +
                                 hex(static_cast<unsigned char>(bytes.empty() ? 0 : bytes[0])));
      }
      ids.push_back(it->second);
    }
  }

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int> id_of_;
  std::unordered_map<std::string, int> merge_rank_;
  std::vector<int> special_;
  std::vector<bool> is_special_;
  std::string byte_char_[256];
  std::unordered_map<std::uint32_t, std::uint8_t> char_byte_;
  int eos_ = -1;
};

}  // namespace kvllama
