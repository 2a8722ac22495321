#include "client/args.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

VerbSpec Spec() {
  return {"classify",
          "...",
          "",
          "",
          {{"image", FlagType::kCsv, "FILE", ""},
           {"labels", FlagType::kCsv, "a,b", ""},
           {"text", FlagType::kList, "TEXT", ""},
           {"template", FlagType::kValue, "T", ""},
           {"top_k", FlagType::kValue, "K", ""},
           {"raw", FlagType::kBool, "", ""}}};
}

TEST(Args, ParsesEqualsAndSpaceSeparatedValues) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      Args a, Args::Parse(Spec(), {"--image=a.jpg,b.jpg", "--labels", "cat, dog,,bird", "--template=a photo of a {}",
                                   "--top-k=2", "--json", "--model", "m"}));
  EXPECT_THAT(a.GetList("image"), ElementsAre("a.jpg", "b.jpg"));
  EXPECT_THAT(a.GetList("labels"), ElementsAre("cat", "dog", "bird"));
  EXPECT_EQ(a.Get("template"), "a photo of a {}");
  EXPECT_EQ(a.GetInt("top_k", 0, 0, 10).value_or(-1), 2);
  EXPECT_TRUE(a.GetBool("json"));
  EXPECT_FALSE(a.GetBool("raw"));
  EXPECT_EQ(a.Get("model"), "m");
  EXPECT_EQ(a.Get("target", "localhost:8500"), "localhost:8500");
}

TEST(Args, RepeatedListFlagsKeepOrderAndTextsKeepCommas) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      Args a, Args::Parse(Spec(), {"--text=a, b", "--image=x.jpg", "--text", "c", "--image=y.jpg,z.jpg"}));
  EXPECT_THAT(a.GetList("text"), ElementsAre("a, b", "c"));
  EXPECT_THAT(a.GetList("image"), ElementsAre("x.jpg", "y.jpg", "z.jpg"));
  EXPECT_THAT(a.Ordered({"text", "image"}), ElementsAre(Pair("text", "a, b"), Pair("image", "x.jpg"), Pair("text", "c"),
                                                        Pair("image", "y.jpg"), Pair("image", "z.jpg")));
}

TEST(Args, BoolFlagsAcceptExplicitValues) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Args a, Args::Parse(Spec(), {"--json=false", "--raw=true"}));
  EXPECT_FALSE(a.GetBool("json"));
  EXPECT_TRUE(a.GetBool("raw"));
  EXPECT_THAT(Args::Parse(Spec(), {"--json=yes"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--json")));
}

TEST(Args, RejectsUnknownFlagsPositionalsMissingValuesAndRepeats) {
  EXPECT_THAT(Args::Parse(Spec(), {"--imgae=a.jpg"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag '--imgae' for 'classify'")));
  EXPECT_THAT(Args::Parse(Spec(), {"a.jpg"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 'a.jpg'")));
  EXPECT_THAT(Args::Parse(Spec(), {"--labels"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--labels needs a value")));
  EXPECT_THAT(Args::Parse(Spec(), {"--top_k=1", "--top_k=2"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--top_k is given more than once")));
}

TEST(Args, ABareArgumentIsTheValueOfTheVerbsPositionalFlag) {
  VerbSpec spec{"watch", "JOB", "", "", {{"job", FlagType::kValue, "JOB", ""}, {"out", FlagType::kValue, "DIR", ""}}};
  spec.positional = "job";
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Args a, Args::Parse(spec, {"--json", "gen-1", "--out", "d"}));
  EXPECT_EQ(a.Get("job"), "gen-1");
  EXPECT_EQ(a.Get("out"), "d");
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Args b, Args::Parse(spec, {"--job=gen-2"}));
  EXPECT_EQ(b.Get("job"), "gen-2");
  EXPECT_THAT(Args::Parse(spec, {"gen-1", "--job=gen-2"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--job is given more than once")));
  EXPECT_THAT(Args::Parse(spec, {"gen-1", "gen-2"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--job is given more than once")));
}

TEST(Args, NumericFlagsAreValidated) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Args a, Args::Parse(Spec(), {"--top_k=-1", "--timeout=abc"}));
  EXPECT_THAT(a.GetInt("top_k", 0, 0, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--top_k must be")));
  EXPECT_THAT(a.GetDouble("timeout", 30, 0.001, 1e6),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--timeout must be a number")));
  EXPECT_EQ(a.GetDouble("absent", 1.5, 0, 2).value_or(-1), 1.5);
}

TEST(Args, VerbMayRedefineAGlobalFlag) {
  VerbSpec spec = Spec();
  spec.flags.push_back({"model", FlagType::kValue, "DIR", "the directory"});
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Args a, Args::Parse(spec, {"--model=/tmp/m"}));
  EXPECT_EQ(a.Get("model"), "/tmp/m");
  const std::string usage = VerbUsage(spec);
  EXPECT_THAT(usage, HasSubstr("--model=DIR"));
  EXPECT_THAT(usage, ::testing::Not(HasSubstr("--model=NAME")));
  EXPECT_THAT(usage, HasSubstr("--target=HOST:PORT"));
}

TEST(SplitVerb, GlobalFlagsMayPrecedeTheVerb) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CommandLine c,
                                 SplitVerb({"--target", "h:1", "--json", "classify", "--image=a.jpg", "rank"}));
  EXPECT_EQ(c.verb, "classify");
  EXPECT_THAT(c.rest, ElementsAre("--target", "h:1", "--json", "--image=a.jpg", "rank"));
  EXPECT_THAT(SplitVerb({"--json"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no command")));
}

TEST(UsageError, IsMarked) {
  EXPECT_TRUE(IsUsageError(UsageError("x")));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("x")));
  EXPECT_THAT(UsageError("bad"), StatusIs(absl::StatusCode::kInvalidArgument, "bad"));
}

TEST(SplitCsv, TrimsAndDropsEmptyPieces) {
  EXPECT_THAT(SplitCsv(" a ,b,, c "), ElementsAre("a", "b", "c"));
  EXPECT_THAT(SplitCsv(""), ElementsAre());
}

}  // namespace
}  // namespace clipserve::client
