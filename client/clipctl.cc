// clipctl — clipserve's command-line client: `clipctl [--target=HOST:PORT] VERB [FLAGS]`. The verbs that talk to a
// server live in the clipserve_client library (client/commands.h); `compare`, which runs a model in-process,
// lives beside this file because it links the model code.
#include <iostream>
#include <string>
#include <vector>

#include "client/commands.h"
#include "client/compare.h"

int main(int argc, char** argv) {
  std::vector<clipserve::client::Verb> verbs = clipserve::client::RemoteVerbs();
  verbs.push_back(clipserve::client::CompareVerb());
  const int rc = clipserve::client::RunClipctl({argv + 1, argv + argc}, verbs, std::cout, std::cerr);
  std::cout.flush();
  return rc;
}
