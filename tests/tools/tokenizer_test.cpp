// SPDX-License-Identifier: Apache-2.0
// SmolLM2's byte-level BPE tokenizer: exact round trip of the evaluation text, and token ids equal
// to Hugging Face `tokenizers` (BPE from the same vocabulary/merges, pre-tokenizer
// Digits(individual) + ByteLevel) on text exercising every branch of the pre-tokenizer.
#include "real_model.hpp"

#include <gtest/gtest.h>

namespace {

TEST(Tokenizer, RoundTripsTheEvaluationTextExactly) {
  KVC_REQUIRE_MODEL();
  const auto& m = *kvtest::real_model();
  EXPECT_GT(m.eval_tokens.size(), 8193u);  // enough for the 8192-token context
  EXPECT_EQ(m.tokenizer.decode(m.eval_tokens), m.eval_text);
}

TEST(Tokenizer, MatchesHuggingFaceTokenizers) {
  KVC_REQUIRE_MODEL();
  const auto& tok = kvtest::real_model()->tokenizer;
  // Contractions, multiple spaces, digits split one by one, punctuation runs, tabs/newlines,
  // accented Latin, CJK, circled numbers (\p{N} outside ASCII), NBSP and trailing spaces.
  const std::string text =
      "Hello  world!! It's 2024; they'll pay 3.14 dollars...\n\n\t\xC3\x89t\xC3\xA9 \xC3\xA0 Paris: "
      "na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE2\x91\xA0\xE2\x91\xA1 don't  \xC2\xA0" "end   ";
  const std::vector<int> expected{19556, 216, 905, 10095, 657, 506, 216, 34, 32, 34, 36, 43, 502, 3060,
                                  2290, 216, 35, 30, 33, 36, 8358, 2026, 1116, 197, 39614, 100, 2756,
                                  25782, 7042, 42, 15486, 46494, 37366, 17097, 241, 115, 40993, 179,
                                  120, 248, 216, 173, 235, 250, 173, 235, 111, 1326, 982, 256, 15442,
                                  486, 333};
  EXPECT_EQ(tok.encode(text), expected);
  EXPECT_EQ(tok.decode(expected), text);
}

TEST(Tokenizer, ParsesControlTokensOnlyWhenAsked) {
  KVC_REQUIRE_MODEL();
  const auto& tok = kvtest::real_model()->tokenizer;
  const std::string s = "<|im_start|>user\nhi<|im_end|>\n";
  const std::vector<int> special = tok.encode(s, /*parse_special=*/true);
  ASSERT_GE(special.size(), 3u);
  EXPECT_EQ(special.front(), tok.find("<|im_start|>"));
  EXPECT_EQ(special.front(), 1);
  EXPECT_EQ(tok.decode(special), s);
  const std::vector<int> plain = tok.encode(s);
  EXPECT_GT(plain.size(), special.size());
  EXPECT_EQ(tok.decode(plain), s);
}

TEST(Tokenizer, RejectsBytesTheVocabularyLacks) {
  KVC_REQUIRE_MODEL();
  EXPECT_THROW(kvtest::real_model()->tokenizer.encode(std::string("a\x04" "b")), std::runtime_error);
}

}  // namespace
