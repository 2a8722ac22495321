#include "server/models/clip/image_decode.h"

#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace clipserve {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
std::string ToString(const std::vector<uchar>& v) { return std::string(v.begin(), v.end()); }

// ---- building image files by hand ----

uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (const unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

void PutBe32(std::string* s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s->push_back(static_cast<char>((v >> shift) & 0xFF));
}
void PutBe16(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>((v >> 8) & 0xFF));
  s->push_back(static_cast<char>(v & 0xFF));
}
void PutLe32(std::string* s, uint32_t v) {
  for (int shift = 0; shift < 32; shift += 8) s->push_back(static_cast<char>((v >> shift) & 0xFF));
}

std::string PngChunk(const std::string& type, const std::string& data) {
  std::string out;
  PutBe32(&out, static_cast<uint32_t>(data.size()));
  out += type + data;
  PutBe32(&out, Crc32(type + data));
  return out;
}

// A zlib stream of stored (uncompressed) deflate blocks.
std::string ZlibStored(const std::string& raw) {
  std::string out = "\x78\x01";
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    out.push_back(last ? 1 : 0);
    out.push_back(static_cast<char>(n & 0xFF));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(~n & 0xFF));
    out.push_back(static_cast<char>((~n >> 8) & 0xFF));
    out += raw.substr(pos, n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1;
  uint32_t b = 0;
  for (const unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  PutBe32(&out, (b << 16) | a);
  return out;
}

std::string PngHeader(uint32_t width, uint32_t height, int depth, int color_type) {
  std::string ihdr;
  PutBe32(&ihdr, width);
  PutBe32(&ihdr, height);
  ihdr += {static_cast<char>(depth), static_cast<char>(color_type), 0, 0, 0};
  return "\x89PNG\r\n\x1a\n" + PngChunk("IHDR", ihdr);
}

// `rows` are the raw scanlines without the filter byte; `extra` chunks go between IHDR and IDAT.
std::string MakePng(uint32_t width, uint32_t height, int depth, int color_type, const std::vector<std::string>& rows,
                    const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  std::string png = PngHeader(width, height, depth, color_type);
  for (const auto& [type, data] : extra) png += PngChunk(type, data);
  std::string raw;
  for (const std::string& row : rows) raw += '\0' + row;
  return png + PngChunk("IDAT", ZlibStored(raw)) + PngChunk("IEND", "");
}

// A 16×8 BGR image with four distinct blocks (so every orientation is distinguishable, even after JPEG).
cv::Mat Quadrants() {
  cv::Mat bgr(8, 16, CV_8UC3);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 16; ++x) {
      const int q = (y < 4 ? 0 : 2) + (x < 8 ? 0 : 1);
      const cv::Vec3b colours[4] = {{0, 0, 255}, {0, 255, 0}, {255, 0, 0}, {255, 255, 255}};
      bgr.at<cv::Vec3b>(y, x) = colours[q];
    }
  }
  return bgr;
}

cv::Mat RandomImage(int rows, int cols, int type, uint32_t seed) {
  cv::Mat m(rows, cols, type);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < m.total() * m.elemSize(); ++i) m.data[i] = static_cast<uint8_t>(rng());
  return m;
}

// OpenCV BGR(A)/grey Mat → packed RGB(A)/grey, the DecodedImage layout.
std::vector<uint8_t> Packed(const cv::Mat& m) {
  std::vector<uint8_t> out;
  const int c = m.channels();
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* row = m.ptr<uint8_t>(y);
    for (int x = 0; x < m.cols; ++x) {
      const uint8_t* p = row + x * c;
      if (c == 1) {
        out.push_back(p[0]);
      } else {
        out.insert(out.end(), {p[2], p[1], p[0]});
        if (c == 4) out.push_back(p[3]);
      }
    }
  }
  return out;
}

std::string Encode(const std::string& ext, const cv::Mat& m, const std::vector<int>& params = {}) {
  std::vector<uchar> buffer;
  EXPECT_TRUE(cv::imencode(ext, m, buffer, params));
  return ToString(buffer);
}

// An APP1 segment holding a big- or little-endian TIFF IFD0 with one Orientation (0x0112, SHORT) entry.
std::string ExifApp1(int orientation, bool little_endian) {
  std::string tiff = little_endian ? std::string("II\x2a\0", 4) : std::string("MM\0\x2a", 4);
  auto put16 = [&](uint32_t v) {
    if (little_endian) {
      tiff.push_back(static_cast<char>(v & 0xFF));
      tiff.push_back(static_cast<char>(v >> 8));
    } else {
      PutBe16(&tiff, v);
    }
  };
  auto put32 = [&](uint32_t v) {
    if (little_endian) {
      PutLe32(&tiff, v);
    } else {
      PutBe32(&tiff, v);
    }
  };
  put32(8);  // IFD0 offset
  put16(1);  // one entry
  put16(0x0112);
  put16(3);  // SHORT
  put32(1);  // count
  put16(static_cast<uint32_t>(orientation));
  put16(0);
  put32(0);  // no next IFD
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  std::string segment = "\xff\xe1";
  PutBe16(&segment, static_cast<uint32_t>(payload.size() + 2));
  return segment + payload;
}

std::string WithExif(const std::string& jpeg, int orientation, bool little_endian = false) {
  return jpeg.substr(0, 2) + ExifApp1(orientation, little_endian) + jpeg.substr(2);
}

// ---- rejection ----

TEST(DecodeImage, RejectsEmptyInput) {
  EXPECT_THAT(DecodeImage({}), StatusIs(kInvalid, AllOf(HasSubstr("empty"), HasSubstr("JPEG, PNG, WebP, BMP"))));
}

TEST(DecodeImage, RejectsRandomBytes) {
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  noise[0] = 'x';
  EXPECT_THAT(DecodeImage(AsBytes(noise)),
              StatusIs(kInvalid, AllOf(HasSubstr("not an image"), HasSubstr("supported: JPEG, PNG, WebP, BMP"))));
  EXPECT_THAT(DecodeImage(AsBytes("GIF89a")), StatusIs(kInvalid, HasSubstr("not an image")));
}

TEST(DecodeImage, CrcHelperAgreesWithLibpng) {
  // The hand-built PNGs below rely on this CRC; libpng (via OpenCV) wrote this IHDR.
  const std::string png = Encode(".png", RandomImage(3, 5, CV_8UC3, 1));
  EXPECT_EQ(png.substr(8, 33 - 8), PngChunk("IHDR", png.substr(16, 13)));
}

TEST(DecodeImage, RejectsHugePngHeaderBeforeAllocating) {
  // A well-formed 50000×50000 RGB header (valid CRC) with no pixel data behind it: the limit must be reported,
  // not a decoding failure (so nothing was decoded, nothing 7.5 GB large allocated).
  const std::string png = PngHeader(50000, 50000, 8, 2) + PngChunk("IEND", "");
  EXPECT_THAT(DecodeImage(AsBytes(png)),
              StatusIs(kInvalid, AllOf(HasSubstr("50000x50000"), HasSubstr("pixel"), HasSubstr("limit"))));
  EXPECT_THAT(ProbeImage(AsBytes(png)), StatusIs(kInvalid, HasSubstr("max_pixels")));
  DecodeOptions options;
  options.max_pixels = 50000ull * 50000ull;
  EXPECT_THAT(ProbeImage(AsBytes(png), options), StatusIs(kInvalid, HasSubstr("IDAT")));
}

TEST(DecodeImage, RejectsZeroSizedHeader) {
  const std::string png = MakePng(0, 4, 8, 0, {});
  EXPECT_THAT(DecodeImage(AsBytes(png)), StatusIs(kInvalid, AllOf(HasSubstr("0x4"), HasSubstr("zero-sized"))));
  std::string bmp = Encode(".bmp", RandomImage(4, 4, CV_8UC3, 2));
  bmp[18] = bmp[19] = bmp[20] = bmp[21] = 0;  // width 0
  EXPECT_THAT(DecodeImage(AsBytes(bmp)), StatusIs(kInvalid, HasSubstr("zero-sized")));
}

TEST(DecodeImage, RejectsOverLimitJpegAndWebpHeaders) {
  const std::string jpeg = Encode(".jpg", RandomImage(40, 30, CV_8UC3, 3));
  DecodeOptions options;
  options.max_pixels = 1000;
  EXPECT_THAT(DecodeImage(AsBytes(jpeg), options),
              StatusIs(kInvalid, AllOf(HasSubstr("30x40"), HasSubstr("limit of 1000"))));
  // VP8X canvas of 2^24 × 2^24.
  std::string webp = "RIFF";
  PutLe32(&webp, 4 + 8 + 10);
  webp += "WEBPVP8X";
  PutLe32(&webp, 10);
  webp += std::string("\0\0\0\0\xff\xff\xff\xff\xff\xff", 10);
  EXPECT_THAT(DecodeImage(AsBytes(webp)), StatusIs(kInvalid, HasSubstr("limit")));
  webp[20] = 0x02;  // animation flag
  EXPECT_THAT(DecodeImage(AsBytes(webp)), StatusIs(kInvalid, HasSubstr("animated")));
}

TEST(DecodeImage, RejectsInputOverTheByteLimit) {
  const std::string png = Encode(".png", RandomImage(16, 16, CV_8UC3, 4));
  DecodeOptions options;
  options.max_encoded_bytes = 100;
  EXPECT_THAT(DecodeImage(AsBytes(png), options), StatusIs(kInvalid, HasSubstr("max_encoded_bytes")));
}

TEST(DecodeImage, RejectsTruncatedJpeg) {
  const std::string jpeg = Encode(".jpg", RandomImage(64, 48, CV_8UC3, 5));
  ASSERT_THAT(DecodeImage(AsBytes(jpeg)), IsOk());
  EXPECT_THAT(DecodeImage(AsBytes(jpeg.substr(0, jpeg.size() / 2))), StatusIs(kInvalid, HasSubstr("truncated")));
  // Everything but the end-of-image marker.
  EXPECT_THAT(DecodeImage(AsBytes(jpeg.substr(0, jpeg.size() - 2))), StatusIs(kInvalid, HasSubstr("truncated")));
  // Cut inside the headers.
  EXPECT_THAT(DecodeImage(AsBytes(jpeg.substr(0, 40))), StatusIs(kInvalid, HasSubstr("truncated")));
}

TEST(DecodeImage, RejectsTruncatedFixtureJpeg) {
  CLIPSERVE_REQUIRE_FIXTURES();
  for (const auto& entry : std::filesystem::directory_iterator(FixtureDir() / "images")) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::string bytes, ReadFileToString(entry.path()));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const ImageInfo info, ProbeImage(AsBytes(bytes)));
    if (info.format != ImageFormat::kJpeg && info.format != ImageFormat::kPng) continue;
    SCOPED_TRACE(entry.path().filename().string());
    ASSERT_THAT(DecodeImage(AsBytes(bytes)), IsOk());
    EXPECT_THAT(DecodeImage(AsBytes(bytes.substr(0, bytes.size() / 2))), StatusIs(kInvalid, HasSubstr("truncated")));
  }
}

TEST(DecodeImage, RejectsTruncatedPngWebpAndBmp) {
  const cv::Mat image = RandomImage(32, 24, CV_8UC3, 6);
  for (const std::string ext : {".png", ".webp", ".bmp"}) {
    SCOPED_TRACE(ext);
    const std::string bytes = Encode(ext, image);
    ASSERT_THAT(DecodeImage(AsBytes(bytes)), IsOk());
    EXPECT_THAT(DecodeImage(AsBytes(bytes.substr(0, bytes.size() / 2))), StatusIs(kInvalid, HasSubstr("truncated")));
    EXPECT_THAT(DecodeImage(AsBytes(bytes.substr(0, 10))), StatusIs(kInvalid, HasSubstr("truncated")));
  }
}

TEST(DecodeImage, RejectsCorruptPixelData) {
  // Intact structure, garbage compressed data: the decoder's failure becomes INVALID_ARGUMENT.
  const std::string bad = PngHeader(4, 4, 8, 2) + PngChunk("IDAT", "this is not zlib data") + PngChunk("IEND", "");
  EXPECT_THAT(DecodeImage(AsBytes(bad)), StatusIs(kInvalid, HasSubstr("cannot decode")));
}

TEST(DecodeImage, DamagedInputsFailCleanly) {
  // Flipped bytes and cuts anywhere: either a decoded image or INVALID_ARGUMENT, never a crash or a throw.
  std::mt19937 rng(11);
  const cv::Mat image = RandomImage(24, 20, CV_8UC3, 12);
  for (const std::string ext : {".png", ".jpg", ".webp", ".bmp"}) {
    SCOPED_TRACE(ext);
    const std::string good = Encode(ext, image);
    for (int trial = 0; trial < 150; ++trial) {
      std::string bad = good;
      if (trial % 3 == 0) {
        bad.resize(rng() % bad.size());
      } else {
        for (int k = 0; k < 1 + trial % 4; ++k) bad[rng() % bad.size()] = static_cast<char>(rng());
      }
      const absl::StatusOr<DecodedImage> result = DecodeImage(AsBytes(bad));
      if (result.ok()) {
        EXPECT_EQ(result->pixels.size(), static_cast<size_t>(result->width) * result->height * result->channels);
      } else {
        EXPECT_EQ(result.status().code(), kInvalid) << result.status();
      }
    }
  }
}

// ---- round trips and channel layouts ----

TEST(DecodeImage, PngRoundTripsRgbRgbaAndGrey) {
  for (const int type : {CV_8UC3, CV_8UC4, CV_8UC1}) {
    const cv::Mat image = RandomImage(13, 17, type, 8);
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded, DecodeImage(AsBytes(Encode(".png", image))));
    EXPECT_EQ(decoded.format, ImageFormat::kPng);
    EXPECT_EQ(decoded.width, 17);
    EXPECT_EQ(decoded.height, 13);
    EXPECT_EQ(decoded.channels, image.channels());
    EXPECT_EQ(decoded.resample, ResampleHint::kBicubic);
    EXPECT_EQ(decoded.pixels, Packed(image));
  }
}

TEST(DecodeImage, WebpLosslessRoundTrips) {
  for (const int type : {CV_8UC3, CV_8UC4}) {
    cv::Mat image = RandomImage(21, 19, type, 9);
    // libwebp's lossless encoder may rewrite the colour of fully transparent pixels: keep alpha above 0.
    if (type == CV_8UC4) {
      for (size_t i = 3; i < image.total() * 4; i += 4) image.data[i] |= 1;
    }
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded,
                                   DecodeImage(AsBytes(Encode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 101}))));
    EXPECT_EQ(decoded.format, ImageFormat::kWebp);
    EXPECT_EQ(decoded.width, 19);
    EXPECT_EQ(decoded.height, 21);
    ASSERT_EQ(decoded.channels, image.channels());
    EXPECT_EQ(decoded.pixels, Packed(image));
  }
}

TEST(DecodeImage, WebpLossyDecodes) {
  const cv::Mat image = Quadrants();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded,
                                 DecodeImage(AsBytes(Encode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 90}))));
  EXPECT_EQ(decoded.width, 16);
  EXPECT_EQ(decoded.height, 8);
  EXPECT_EQ(decoded.channels, 3);
  EXPECT_GT(decoded.pixels[0], 200);  // top-left is red (R first)
  EXPECT_LT(decoded.pixels[2], 60);
}

TEST(DecodeImage, BmpRoundTrips) {
  for (const int type : {CV_8UC3, CV_8UC1}) {
    const cv::Mat image = RandomImage(11, 7, type, 10);
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded, DecodeImage(AsBytes(Encode(".bmp", image))));
    EXPECT_EQ(decoded.format, ImageFormat::kBmp);
    EXPECT_EQ(decoded.width, 7);
    EXPECT_EQ(decoded.height, 11);
    ASSERT_EQ(decoded.channels, image.channels());
    EXPECT_EQ(decoded.pixels, Packed(image));
    // OpenCV writes 8-bit BMPs with an identity grey palette: Pillow's mode "L", resized bicubic.
    EXPECT_EQ(decoded.resample, ResampleHint::kBicubic);
  }
}

TEST(DecodeImage, JpegDecodesToRgbAndGrey) {
  const cv::Mat colour = Quadrants();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(DecodedImage decoded,
                                 DecodeImage(AsBytes(Encode(".jpg", colour, {cv::IMWRITE_JPEG_QUALITY, 95}))));
  EXPECT_EQ(decoded.format, ImageFormat::kJpeg);
  EXPECT_EQ(decoded.channels, 3);
  EXPECT_GT(decoded.pixels[0], 200);  // red block, R first
  EXPECT_LT(decoded.pixels[2], 60);
  cv::Mat grey(8, 8, CV_8UC1, cv::Scalar(77));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(decoded, DecodeImage(AsBytes(Encode(".jpg", grey))));
  EXPECT_EQ(decoded.channels, 1);
  EXPECT_EQ(decoded.pixels, std::vector<uint8_t>(64, 77));
}

TEST(DecodeImage, GreyAlphaPngBecomesRgba) {
  // Pillow mode "LA": resized premultiplied like RGBA, so it is held as RGBA.
  const std::string png = MakePng(2, 1, 8, 4, {std::string("\x0a\x14\xc8\xff", 4)});
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded, DecodeImage(AsBytes(png)));
  EXPECT_EQ(decoded.channels, 4);
  EXPECT_THAT(decoded.pixels, ElementsAre(10, 10, 10, 20, 200, 200, 200, 255));
}

TEST(DecodeImage, PalettePngIsRgbWithNearestHint) {
  // Pillow opens mode "P" and Image.resize() uses NEAREST for it; the palette transparency is not an alpha band.
  const std::string plte("\xff\x00\x00\x00\x00\xff", 6);
  const std::string png =
      MakePng(3, 1, 8, 3, {std::string("\x00\x01\x00", 3)}, {{"PLTE", plte}, {"tRNS", std::string("\x80\xff", 2)}});
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded, DecodeImage(AsBytes(png)));
  EXPECT_EQ(decoded.channels, 3);
  EXPECT_EQ(decoded.resample, ResampleHint::kNearest);
  EXPECT_THAT(decoded.pixels, ElementsAre(255, 0, 0, 0, 0, 255, 255, 0, 0));
}

TEST(DecodeImage, ColourKeyTransparencyIsNotAlpha) {
  // RGB + tRNS: Pillow keeps mode "RGB" (resize ignores the key); OpenCV would add an alpha band.
  std::string key;
  PutBe16(&key, 1);
  PutBe16(&key, 2);
  PutBe16(&key, 3);
  const std::string png = MakePng(2, 1, 8, 2, {std::string("\x01\x02\x03\x09\x08\x07", 6)}, {{"tRNS", key}});
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage decoded, DecodeImage(AsBytes(png)));
  EXPECT_EQ(decoded.channels, 3);
  EXPECT_THAT(decoded.pixels, ElementsAre(1, 2, 3, 9, 8, 7));
  std::string grey_key;
  PutBe16(&grey_key, 9);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage grey,
                                 DecodeImage(AsBytes(MakePng(2, 1, 8, 0, {"\x09\x05"}, {{"tRNS", grey_key}}))));
  EXPECT_EQ(grey.channels, 1);
  EXPECT_THAT(grey.pixels, ElementsAre(9, 5));
}

TEST(DecodeImage, SixteenBitPngKeepsTheHighByte) {
  // Pillow's RGB;16B / RGBA;16B unpackers keep the most significant byte.
  const std::string row("\x12\x34\xab\xcd\xff\x00\x00\xff\x80\x7f\x01\x01", 12);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage rgb, DecodeImage(AsBytes(MakePng(2, 1, 16, 2, {row}))));
  EXPECT_EQ(rgb.channels, 3);
  EXPECT_THAT(rgb.pixels, ElementsAre(0x12, 0xab, 0xff, 0x00, 0x80, 0x01));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage grey,
                                 DecodeImage(AsBytes(MakePng(2, 1, 16, 0, {row.substr(0, 4)}))));
  EXPECT_EQ(grey.channels, 1);
  EXPECT_THAT(grey.pixels, ElementsAre(0x12, 0xab));
}

TEST(DecodeImage, LowBitDepthGrey) {
  // 1-bit grey is Pillow mode "1" (NEAREST on resize); 2-bit grey is mode "L", scaled to 0..255.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage bilevel,
                                 DecodeImage(AsBytes(MakePng(4, 1, 1, 0, {std::string("\xa0", 1)}))));
  EXPECT_EQ(bilevel.resample, ResampleHint::kNearest);
  EXPECT_THAT(bilevel.pixels, ElementsAre(255, 0, 255, 0));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage two_bit,
                                 DecodeImage(AsBytes(MakePng(4, 1, 2, 0, {std::string("\x1b", 1)}))));
  EXPECT_EQ(two_bit.resample, ResampleHint::kBicubic);
  EXPECT_THAT(two_bit.pixels, ElementsAre(0, 85, 170, 255));
}

TEST(DecodeImage, FixtureImagesDecodeWithTheirHeaderSizes) {
  CLIPSERVE_REQUIRE_FIXTURES();
  for (const auto& entry : std::filesystem::directory_iterator(FixtureDir() / "images")) {
    SCOPED_TRACE(entry.path().filename().string());
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::string bytes, ReadFileToString(entry.path()));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const ImageInfo info, ProbeImage(AsBytes(bytes)));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage image, DecodeImage(AsBytes(bytes)));
    EXPECT_EQ(image.width, info.width);
    EXPECT_EQ(image.height, info.height);
    EXPECT_EQ(image.channels, info.channels);
    EXPECT_EQ(image.pixels.size(), static_cast<size_t>(image.width) * image.height * image.channels);
  }
}

// ---- EXIF orientation ----

cv::Mat Oriented(const cv::Mat& m, int orientation) {
  cv::Mat out;
  switch (orientation) {
    case 2:
      cv::flip(m, out, 1);
      break;
    case 3:
      cv::rotate(m, out, cv::ROTATE_180);
      break;
    case 4:
      cv::flip(m, out, 0);
      break;
    case 5:
      cv::transpose(m, out);
      break;
    case 6:
      cv::rotate(m, out, cv::ROTATE_90_CLOCKWISE);
      break;
    case 7:
      cv::transpose(m, out);
      cv::flip(out, out, -1);
      break;
    case 8:
      cv::rotate(m, out, cv::ROTATE_90_COUNTERCLOCKWISE);
      break;
    default:
      out = m.clone();
  }
  return out;
}

TEST(DecodeImage, ExifOrientationIsIgnoredByDefaultAndAppliedOnRequest) {
  const std::string plain = Encode(".jpg", Quadrants(), {cv::IMWRITE_JPEG_QUALITY, 95});
  std::vector<uchar> plain_bytes(plain.begin(), plain.end());
  const cv::Mat reference = cv::imdecode(plain_bytes, cv::IMREAD_UNCHANGED);
  DecodeOptions apply;
  apply.apply_exif_orientation = true;
  for (int orientation = 1; orientation <= 8; ++orientation) {
    SCOPED_TRACE(orientation);
    const std::string jpeg = WithExif(plain, orientation, /*little_endian=*/orientation % 2 == 0);
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage ignored, DecodeImage(AsBytes(jpeg)));
    EXPECT_EQ(ignored.exif_orientation, orientation);
    EXPECT_EQ(ignored.width, 16);
    EXPECT_EQ(ignored.pixels, Packed(reference));

    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage applied, DecodeImage(AsBytes(jpeg), apply));
    const cv::Mat expected = Oriented(reference, orientation);
    EXPECT_EQ(applied.width, expected.cols);
    EXPECT_EQ(applied.height, expected.rows);
    EXPECT_EQ(applied.pixels, Packed(expected));
  }
}

TEST(DecodeImage, ExifOrientationSixRotatesClockwise) {
  // Independent of the helper above: orientation 6 means "rotate 90° clockwise to display", so the red
  // top-left block ends up top-right and the output is 8 wide, 16 high.
  const std::string jpeg = WithExif(Encode(".jpg", Quadrants(), {cv::IMWRITE_JPEG_QUALITY, 95}), 6);
  DecodeOptions apply;
  apply.apply_exif_orientation = true;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage image, DecodeImage(AsBytes(jpeg), apply));
  ASSERT_EQ(image.width, 8);
  ASSERT_EQ(image.height, 16);
  const uint8_t* top_right = &image.pixels[(0 * 8 + 7) * 3];
  EXPECT_GT(top_right[0], 200);
  EXPECT_LT(top_right[1], 60);
  EXPECT_LT(top_right[2], 60);
}

TEST(DecodeImage, ExifInPngIsRead) {
  const std::string app1 = ExifApp1(8, false);
  const std::string exif = app1.substr(4 + 6);  // the bare TIFF structure, as PNG's eXIf chunk holds it
  const std::string png = MakePng(2, 1, 8, 0, {std::string("\x01\x02", 2)}, {{"eXIf", exif}});
  DecodeOptions apply;
  apply.apply_exif_orientation = true;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage image, DecodeImage(AsBytes(png), apply));
  EXPECT_EQ(image.exif_orientation, 8);
  EXPECT_EQ(image.width, 1);
  EXPECT_EQ(image.height, 2);
  EXPECT_THAT(image.pixels, ElementsAre(2, 1));  // 90° counter-clockwise: the right pixel goes on top
}

// ---- raw pixels ----

TEST(ImageFromPixels, ChecksSizeAndLimit) {
  const std::vector<uint8_t> rgb(4 * 3 * 3, 9);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const DecodedImage image, ImageFromPixels(rgb, 4, 3, 3));
  EXPECT_EQ(image.format, ImageFormat::kRaw);
  EXPECT_EQ(image.pixels, rgb);
  EXPECT_THAT(ImageFromPixels(rgb, 4, 4, 3), StatusIs(kInvalid, HasSubstr("needs 48")));
  EXPECT_THAT(ImageFromPixels(rgb, 0, 3, 3), StatusIs(kInvalid, HasSubstr("positive")));
  EXPECT_THAT(ImageFromPixels(rgb, 4, 3, 2), StatusIs(kInvalid, HasSubstr("channels")));
  DecodeOptions options;
  options.max_pixels = 11;
  EXPECT_THAT(ImageFromPixels(rgb, 4, 3, 3, options), StatusIs(kInvalid, HasSubstr("limit")));
}

}  // namespace
}  // namespace clipserve
