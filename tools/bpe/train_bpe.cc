// train-bpe: trains a byte-level BPE vocabulary on a caption corpus and writes it in the CLIP layout
// (vocab.json + merges.txt), loadable by clip::Tokenizer like OpenAI's.
//
//   build/bin/train-bpe --corpus=FILE --vocab_size=N [--min_frequency=2] --out=DIR
//
// --corpus holds one caption per line (UTF-8). The vocabulary has at most --vocab_size entries (the 512 byte
// symbols and the two special tokens included); it is smaller when no pair occurs --min_frequency times.
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/common/status_macros.h"
#include "tools/bpe/bpe_trainer.h"

ABSL_FLAG(std::string, corpus, "", "text file, one caption per line");
ABSL_FLAG(int, vocab_size, 0, "vocabulary entries, byte symbols and special tokens included (at least 514)");
ABSL_FLAG(int64_t, min_frequency, 2, "merge only pairs that occur at least this often");
ABSL_FLAG(std::string, out, "", "output directory for vocab.json and merges.txt");

namespace clipserve {
namespace {

absl::Status Run() {
  const std::string corpus = absl::GetFlag(FLAGS_corpus);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (corpus.empty() || out.empty() || absl::GetFlag(FLAGS_vocab_size) == 0) {
    return absl::InvalidArgumentError("--corpus, --vocab_size and --out are required");
  }
  bpe::BpeTrainerOptions options;
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  options.min_frequency = absl::GetFlag(FLAGS_min_frequency);
  CLIPSERVE_ASSIGN_OR_RETURN(auto trainer, bpe::BpeTrainer::Create(options));

  const absl::Time start = absl::Now();
  CLIPSERVE_RETURN_IF_ERROR(trainer->AddCorpusFile(corpus));
  const absl::Time counted = absl::Now();
  const bpe::BpeCorpusStats& stats = trainer->stats();
  std::printf("corpus: %lld captions, %lld words, %zu distinct (%.2f s)\n", static_cast<long long>(stats.texts),
              static_cast<long long>(stats.words), stats.distinct_words, absl::ToDoubleSeconds(counted - start));

  CLIPSERVE_ASSIGN_OR_RETURN(const bpe::BpeVocabulary vocab, trainer->Train());
  const absl::Time trained = absl::Now();
  std::printf(
      "trained: %zu merges, vocabulary of %zu tokens, last merge frequency %lld, %lld pairs skipped as "
      "duplicates (%.2f s)\n",
      vocab.merges.size(), vocab.tokens.size(), static_cast<long long>(vocab.last_merge_frequency),
      static_cast<long long>(vocab.skipped_pairs), absl::ToDoubleSeconds(trained - counted));
  if (vocab.tokens.size() < static_cast<size_t>(options.vocab_size)) {
    std::printf("note: stopped below --vocab_size=%d: no pair left with frequency >= %lld\n", options.vocab_size,
                static_cast<long long>(options.min_frequency));
  }
  return bpe::WriteBpeVocabulary(vocab, out);
}

}  // namespace
}  // namespace clipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "trains a byte-level BPE in the CLIP layout: --corpus=FILE --vocab_size=N [--min_frequency=2] --out=DIR");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = clipserve::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "train-bpe: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s/vocab.json and %s/merges.txt\n", absl::GetFlag(FLAGS_out).c_str(),
              absl::GetFlag(FLAGS_out).c_str());
  return 0;
}
