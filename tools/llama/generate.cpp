// SPDX-License-Identifier: Apache-2.0
/// \file
/// kvc_generate: greedy generation with SmolLM2-135M-Instruct through a kvcompress cache.
///
///   kvc_generate [--model PATH] [--cache dense|kivi2|kivi4] [--max-tokens N] [--raw] "prompt"
///
/// The prompt is wrapped in the model's chat template (ChatML, as SmolLM2-Instruct's
/// `tokenizer.chat_template` writes it, with the template's default system message) unless --raw
/// is given. The prompt is prefilled in chunks of 256 tokens, then tokens are decoded one at a time
/// (argmax) until <|im_end|>/EOS or --max-tokens, and printed as they come.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "inputs.hpp"
#include "kvcompress/kvcompress.hpp"
#include "model.hpp"
#include "tokenizer.hpp"

namespace {

using namespace kvllama;
namespace kvc = kvcompress;

/// ChatML with SmolLM2-Instruct's default system message (its GGUF chat_template).
std::string chat_prompt(const std::string& user) {
  return "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
         "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
}

template <class Cache>
int run(const Model& model, const Tokenizer& tok, const std::vector<int>& prompt, int max_tokens) {
  Cache cache(model.cache_shape(prompt.size() + static_cast<std::size_t>(max_tokens)));
  Session<Cache> session(model, {&cache});
  const auto t0 = std::chrono::steady_clock::now();
  const RowMatrix* logits = &session.prefill(prompt);
  const auto t1 = std::chrono::steady_clock::now();
  const int im_end = tok.find("<|im_end|>");
  int generated = 0;
  for (; generated < max_tokens; ++generated) {
    Eigen::Index best;
    logits->row(0).maxCoeff(&best);
    const int id = static_cast<int>(best);
    if (id == tok.eos_id() || id == im_end) break;
    std::cout << tok.token_bytes(id) << std::flush;
    logits = &session.feed(&id, 1, Logits::kLast, kvc::Modality::kGenerated);
  }
  const auto t2 = std::chrono::steady_clock::now();
  const double pre = std::chrono::duration<double>(t1 - t0).count();
  const double dec = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "\n[%zu prompt tokens in %.2f s (%.1f tok/s); %d generated in %.2f s (%.1f tok/s); cache %zu bytes]\n",
               prompt.size(), pre, static_cast<double>(prompt.size()) / pre, generated, dec,
               generated / (dec > 0 ? dec : 1), cache.memory_bytes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = default_model_path(), cache_kind = "dense", prompt;
  int max_tokens = 128;
  bool raw = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--model") model_path = value();
    else if (a == "--cache") cache_kind = value();
    else if (a == "--max-tokens") max_tokens = std::atoi(value().c_str());
    else if (a == "--raw") raw = true;
    else if (a == "-h" || a == "--help") {
      std::puts("usage: kvc_generate [--model PATH] [--cache dense|kivi2|kivi4] [--max-tokens N] [--raw] \"prompt\"");
      return 0;
    } else prompt = a;
  }
  if (prompt.empty()) prompt = "What is the capital of France?";
  try {
    if (!file_exists(model_path))
      throw std::runtime_error("model not found at '" + model_path + "'; run scripts/fetch_model.sh");
    const GgufFile file = GgufFile::open(model_path);
    const Tokenizer tok(file);
    const Model model(file);
    const std::vector<int> ids = tok.encode(raw ? prompt : chat_prompt(prompt), /*parse_special=*/!raw);
    using Dense = kvc::KVCache<kvc::Policy<>>;
    using Kivi2 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<2, 2, 32, 128>>>;
    using Kivi4 = kvc::KVCache<kvc::Policy<kvc::evict::None, kvc::merge::None, kvc::quant::Kivi<4, 4, 32, 128>>>;
    if (cache_kind == "dense") return run<Dense>(model, tok, ids, max_tokens);
    if (cache_kind == "kivi2") return run<Kivi2>(model, tok, ids, max_tokens);
    if (cache_kind == "kivi4") return run<Kivi4>(model, tok, ids, max_tokens);
    throw std::runtime_error("unknown --cache '" + cache_kind + "' (dense, kivi2, kivi4)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvc_generate: %s\n", e.what());
    return 1;
  }
}
