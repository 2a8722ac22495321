// shapes-eval: metrics of the shipped shapes-world models on fresh held-out scenes.
//
//   build/bin/shapes-eval --models=models/shapes-world --seed=1000000 --count=1000 [--json] [--breakdown]
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/models/cpu_threads.h"
#include "tools/eval/shapes_eval.h"
#include "tools/gen_eval/cutout_flags.h"

ABSL_FLAG(std::string, models, "models/shapes-world", "directory with clip/ and/or vqgan/");
ABSL_FLAG(uint64_t, seed, 1000000, "evaluation seed (>= 1000000: disjoint from training seeds)");
ABSL_FLAG(int, count, 1000, "held-out images");
ABSL_FLAG(bool, json, false, "print one JSON object");
ABSL_FLAG(bool, generation_cutouts, false,
          "show the CLIP every picture through generation's cutout augmentations (--cut_* flags; defaults: the "
          "server's)");
ABSL_FLAG(double, attack_epsilon, 0,
          "> 0: zero-shot accuracy under a PGD attack of this L-infinity radius in [0, 1] pixel units (8/255 = "
          "0.0314) against each picture's true prompt (robust accuracy; retrieval stays clean)");
ABSL_FLAG(int, attack_steps, 10, "signed-gradient steps of the attack (step 2.5 epsilon / steps, random start)");
ABSL_FLAG(bool, breakdown, false, "add shape accuracy per shape and per size class, and the shape confusions");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "shapes-eval --models=DIR --seed=S --count=N [--json] [--breakdown] [--generation_cutouts [--cut_*=X]]\n"
      "            [--attack_epsilon=E [--attack_steps=K]]");
  absl::ParseCommandLine(argc, argv);
  clipserve::ConfigureCpuThreads({});
  clipserve::shapes_eval::EvalOptions options{.models = absl::GetFlag(FLAGS_models),
                                              .seed = absl::GetFlag(FLAGS_seed),
                                              .count = absl::GetFlag(FLAGS_count)};
  if (absl::GetFlag(FLAGS_generation_cutouts)) options.cutouts = clipserve::tools::CutoutOptionsFromFlags();
  if (absl::GetFlag(FLAGS_attack_epsilon) > 0) {
    options.attack = {.epsilon = absl::GetFlag(FLAGS_attack_epsilon), .steps = absl::GetFlag(FLAGS_attack_steps)};
  }
  auto result = clipserve::shapes_eval::Evaluate(options);
  if (!result.ok()) {
    std::fprintf(stderr, "shapes-eval: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  std::cout << result->ToJson(absl::GetFlag(FLAGS_breakdown)).dump(absl::GetFlag(FLAGS_json) ? -1 : 2) << "\n";
  return 0;
}
