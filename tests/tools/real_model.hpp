// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Shared access to SmolLM2-135M-Instruct for the real-model tests: loaded once per test binary,
/// or absent (then KVC_REQUIRE_MODEL() skips the test, saying how to fetch it).

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "gguf.hpp"
#include "inputs.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

namespace kvtest {

struct RealModel {
  kvllama::GgufFile file;
  kvllama::Tokenizer tokenizer;
  kvllama::Model model;
  std::string eval_text;
  std::vector<int> eval_tokens;

  explicit RealModel(const std::string& path)
      : file(kvllama::GgufFile::open(path)), tokenizer(file), model(file),
        eval_text(kvllama::load_eval_text()), eval_tokens(tokenizer.encode(eval_text)) {}
};

/// The model, or nullptr when the GGUF file is not in kvllama::model_dir().
inline const RealModel* real_model() {
  static const std::unique_ptr<RealModel> m =
      kvllama::file_exists(kvllama::default_model_path()) ? std::make_unique<RealModel>(kvllama::default_model_path())
                                                          : nullptr;
  return m.get();
}

}  // namespace kvtest

/// Skips the current test when the model is absent.
#define KVC_REQUIRE_MODEL()                                                                       \
  do {                                                                                            \
    if (!kvtest::real_model())                                                                    \
      GTEST_SKIP() << "SmolLM2 model not found at " << kvllama::default_model_path()              \
                   << "; run scripts/fetch_model.sh (or set KVCOMPRESS_MODEL_DIR) to enable this test"; \
  } while (0)
