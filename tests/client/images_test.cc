#include "client/images.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ImagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::clipserve::testing::ScratchDir("images");
    fs::create_directories(dir_ / "photos" / "nested");
    Write("photos/b.png", "png-bytes");
    Write("photos/a.JPG", "jpg-bytes");
    Write("photos/notes.txt", "not an image");
    Write("photos/nested/c.webp", "webp");
    Write("single.bmp", "bmp");
    Write("raw.dat", "data");
    Write("empty.jpg", "");
  }

  void Write(const std::string& rel, const std::string& bytes) { std::ofstream(dir_ / rel, std::ios::binary) << bytes; }
  std::string P(const std::string& rel) const { return (dir_ / rel).string(); }

  fs::path dir_;
};

TEST_F(ImagesTest, FileIsKeptWhateverItsExtension) {
  auto paths = ExpandImagePaths({P("single.bmp"), P("raw.dat")});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_THAT(*paths, ElementsAre(P("single.bmp"), P("raw.dat")));
}

TEST_F(ImagesTest, DirectoryGivesItsImagesSortedNotRecursively) {
  auto paths = ExpandImagePaths({P("photos")});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_THAT(*paths, ElementsAre(P("photos/a.JPG"), P("photos/b.png")));
}

TEST_F(ImagesTest, GlobGivesSortedMatchesAndKeepsSpecOrder) {
  auto paths = ExpandImagePaths({P("single.bmp"), P("photos/*.[Jp]*"), P("photos/nested/*")});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_THAT(*paths, ElementsAre(P("single.bmp"), P("photos/a.JPG"), P("photos/b.png"), P("photos/nested/c.webp")));
}

TEST_F(ImagesTest, MissingFileEmptyDirectoryAndUnmatchedPatternAreClearErrors) {
  EXPECT_THAT(ExpandImagePaths({P("nope.jpg")}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.jpg': no such file or directory")));
  fs::create_directories(dir_ / "empty_dir");
  EXPECT_THAT(ExpandImagePaths({P("empty_dir")}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("holds no JPEG, PNG, WebP or BMP files")));
  EXPECT_THAT(ExpandImagePaths({P("photos/*.gif")}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("*.gif' matches no files")));
}

TEST_F(ImagesTest, LoadImagesReadsBytesInOrder) {
  std::vector<std::string> paths;
  auto images = LoadImages({P("photos"), P("single.bmp")}, &paths);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 3u);
  EXPECT_EQ((*images)[0].encoded(), "jpg-bytes");
  EXPECT_EQ((*images)[1].encoded(), "png-bytes");
  EXPECT_EQ((*images)[2].encoded(), "bmp");
  EXPECT_THAT(paths, ElementsAre(P("photos/a.JPG"), P("photos/b.png"), P("single.bmp")));
}

TEST_F(ImagesTest, EmptyFileIsRejected) {
  EXPECT_THAT(LoadImage(P("empty.jpg")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty file")));
}

TEST(HasImageExtension, KnowsTheDecodedFormats) {
  EXPECT_TRUE(HasImageExtension("x.jpeg"));
  EXPECT_TRUE(HasImageExtension("X.WEBP"));
  EXPECT_FALSE(HasImageExtension("x.gif"));
  EXPECT_FALSE(HasImageExtension("jpg"));
}

}  // namespace
}  // namespace clipserve::client
