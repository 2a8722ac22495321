#include "server/models/clip/tokenizer.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::clip {
namespace {

struct HtmlEntity {
  std::string_view name;
  std::string_view value;
};
struct InvalidCharref {
  uint32_t code;
  std::string_view value;
};
#include "server/models/clip/html_entities.inc"

constexpr std::string_view kSotToken = "<|startoftext|>";
constexpr std::string_view kEotToken = "<|endoftext|>";
constexpr std::string_view kEndOfWord = "</w>";
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
// Texts are converted to UTF-16 for ICU, whose lengths are int32_t.
constexpr size_t kMaxTextBytes = size_t{1} << 28;
// Longer words are encoded without the cache (they are rare, and would crowd it out).
constexpr size_t kMaxCachedWordBytes = 256;
// Words shorter than this skip the cache (see AppendWordIds).
constexpr size_t kMinCachedWordBytes = 16;
constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();

// ------------------------------------------------------------------------------------------------------------
// UTF-8

// Decodes the sequence at `p` (< end). Returns its length when it is well-formed (Unicode Table 3-7: no
// overlongs, no surrogates, nothing above U+10FFFF), else minus the length of its maximal ill-formed subpart:
// the bytes that a conforming decoder (Python's included) replaces with one U+FFFD.
inline int DecodeUtf8(const unsigned char* p, const unsigned char* end, char32_t* cp) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int need;
  char32_t c;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    c = b0 & 0x0F;
    if (b0 == 0xE0)
      lo = 0xA0;  // overlong
    else if (b0 == 0xED)
      hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    c = b0 & 0x07;
    if (b0 == 0xF0)
      lo = 0x90;  // overlong
    else if (b0 == 0xF4)
      hi = 0x8F;  // > U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (p + k >= end) return -k;
    const unsigned char b = p[k];
    if (b < lo || b > hi) return -k;
    lo = 0x80;
    hi = 0xBF;
    c = (c << 6) | (b & 0x3F);
  }
  *cp = c;
  return need + 1;
}

// Length of the sequence led by `b0` in text already known to be valid UTF-8.
inline size_t SequenceLength(unsigned char b0) {
  if (b0 < 0x80) return 1;
  if (b0 < 0xE0) return 2;
  if (b0 < 0xF0) return 3;
  return 4;
}

// The code point at `p` in valid UTF-8; sets `*len`.
inline char32_t CodePointAt(const unsigned char* p, size_t* len) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *len = 2;
    return (char32_t{b0 & 0x1Fu} << 6) | (p[1] & 0x3Fu);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return (char32_t{b0 & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
  }
  *len = 4;
  return (char32_t{b0 & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) | (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

absl::Status ValidateUtf8(std::string_view text) {
  if (text.size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", text.size(), " bytes long, more than the limit of ", kMaxTextBytes));
  }
  const auto* const begin = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const end = begin + text.size();
  const auto* p = begin;
  while (p < end) {
    // ASCII runs eight bytes at a time.
    while (end - p >= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      if (word & 0x8080808080808080ull) break;
      p += 8;
    }
    if (p == end) break;
    if (*p < 0x80) {
      ++p;
      continue;
    }
    char32_t cp;
    const int n = DecodeUtf8(p, end, &cp);
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("text is not valid UTF-8: ill-formed sequence at byte offset ", p - begin));
    }
    p += n;
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------------------------
// Python's html.unescape

const absl::flat_hash_map<std::string_view, std::string_view>& Html5Entities() {
  static const auto* const map = [] {
    auto* m = new absl::flat_hash_map<std::string_view, std::string_view>;
    m->reserve(std::size(kHtml5Entities));
    for (const HtmlEntity& e : kHtml5Entities) m->emplace(e.name, e.value);
    return m;
  }();
  return *map;
}

inline bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
inline int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `_replace_charref` for a numeric reference. Python's int() is unbounded; anything above U+10FFFF gives
// U+FFFD, so the value saturates at kTooBig instead of overflowing.
constexpr uint32_t kTooBig = 0x110000;
void AppendNumericCharref(uint32_t num, std::string* out) {
  for (const InvalidCharref& r : kInvalidCharrefs) {
    if (r.code == num) {
      out->append(r.value);
      return;
    }
  }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out->append(kReplacementChar);
    return;
  }
  if (std::binary_search(std::begin(kInvalidCodepoints), std::end(kInvalidCodepoints), num)) return;
  AppendUtf8(num, out);
}

// Tries Python's `_charref` regex,
//   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
// at in[p-1] == '&'. On a match appends the replacement and returns the end of the match; else returns 0.
size_t ReplaceCharref(std::string_view in, size_t p, std::string* out) {
  const size_t n = in.size();
  if (p >= n) return 0;
  if (in[p] == '#') {
    size_t j = p + 1;
    uint32_t num = 0;
    if (j < n && IsAsciiDigit(in[j])) {
      for (; j < n && IsAsciiDigit(in[j]); ++j) num = std::min<uint32_t>(num * 10 + (in[j] - '0'), kTooBig);
    } else if (j + 1 < n && (in[j] == 'x' || in[j] == 'X') && HexValue(in[j + 1]) >= 0) {
      for (++j; j < n && HexValue(in[j]) >= 0; ++j) {
        num = std::min<uint32_t>(num * 16 + HexValue(in[j]), kTooBig);
      }
    } else {
      return 0;  // '#' is excluded from the name alternative
    }
    if (j < n && in[j] == ';') ++j;
    AppendNumericCharref(num, out);
    return j;
  }
  // Named reference: up to 32 *code points* (Python str), then an optional ';'.
  size_t j = p;
  size_t code_points = 0;
  while (j < n && code_points < 32) {
    const char c = in[j];
    if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
    j += SequenceLength(static_cast<unsigned char>(c));
    ++code_points;
  }
  if (code_points == 0) return 0;
  if (j < n && in[j] == ';') {
    ++j;
    ++code_points;
  }
  const std::string_view s = in.substr(p, j - p);
  const auto& entities = Html5Entities();
  if (auto it = entities.find(s); it != entities.end()) {
    out->append(it->second);
    return j;
  }
  // "find the longest matching name": prefixes s[:x] for x = len(s)-1 down to 2 (code points). Names are
  // ASCII, so only prefixes of the leading ASCII run can match, and there bytes are code points.
  size_t ascii = 0;
  while (ascii < s.size() && static_cast<unsigned char>(s[ascii]) < 0x80) ++ascii;
  for (size_t x = std::min(ascii, code_points - 1); x >= 2; --x) {
    if (auto it = entities.find(s.substr(0, x)); it != entities.end()) {
      out->append(it->second);
      out->append(s.substr(x));
      return j;
    }
  }
  out->push_back('&');
  out->append(s);
  return j;
}

// One pass of `html.unescape` (re.sub: replacements are not rescanned) over valid UTF-8.
void HtmlUnescapeOnce(std::string_view in, std::string* out) {
  out->clear();
  size_t i = 0;
  while (true) {
    const size_t amp = in.find('&', i);
    if (amp == std::string_view::npos) {
      out->append(in.substr(i));
      return;
    }
    out->append(in.substr(i, amp - i));
    const size_t end = ReplaceCharref(in, amp + 1, out);
    if (end == 0) {
      out->push_back('&');
      i = amp + 1;
    } else {
      i = end;
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// Character classes

// kSpace: whitespace, or anything else that no alternative of the regex matches (skipped between words).
enum class CharClass : uint8_t { kSpace, kLetter, kNumber, kOther };

// Python's str.isspace(): what str.strip() removes and what `\s` of Python's `re` matches in str patterns
// (wider than Unicode White_Space: it includes the separators U+001C..U+001F).
constexpr bool IsAsciiPySpace(unsigned char c) { return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20); }
inline bool IsPySpace(char32_t c) {
  if (c < 0x80) return IsAsciiPySpace(static_cast<unsigned char>(c));
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

constexpr std::array<CharClass, 128> MakeAsciiClasses() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if (IsAsciiPySpace(static_cast<unsigned char>(c))) {
      t[c] = CharClass::kSpace;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      t[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      t[c] = CharClass::kNumber;
    } else {
      t[c] = CharClass::kOther;
    }
  }
  return t;
}
constexpr std::array<CharClass, 128> kAsciiClasses = MakeAsciiClasses();

inline bool IsLetterType(int8_t t) { return t >= U_UPPERCASE_LETTER && t <= U_OTHER_LETTER; }      // \p{L}
inline bool IsNumberType(int8_t t) { return t >= U_DECIMAL_DIGIT_NUMBER && t <= U_OTHER_NUMBER; }  // \p{N}

CharClass ClassifyNonAscii(char32_t c) {
  if (IsPySpace(c)) return CharClass::kSpace;
  const UChar32 u = static_cast<UChar32>(c);
  const int8_t type = u_charType(u);
  if (IsLetterType(type)) return CharClass::kLetter;
  if (IsNumberType(type)) return CharClass::kNumber;
  // The reference regex runs with IGNORECASE. The `regex` module then tests the negated set [^\s\p{L}\p{N}]
  // against every simple-case variant of the character, but the sets [\p{L}] and [\p{N}] against the character
  // alone: a character that is neither a letter nor a number but has a case variant that is one matches no
  // alternative at all and is skipped like whitespace. In Unicode 15 that is only U+0345 COMBINING GREEK
  // YPOGEGRAMMENI (Mn; variants Ι, ι), as checked against regex 2022.10.31 over every code point.
  const UChar32 variants[] = {u_foldCase(u, U_FOLD_CASE_DEFAULT), u_toupper(u), u_tolower(u), u_totitle(u)};
  for (UChar32 v : variants) {
    if (v != u) {
      const int8_t vtype = u_charType(v);
      if (IsLetterType(vtype) || IsNumberType(vtype)) return CharClass::kSpace;
    }
  }
  return CharClass::kOther;
}

inline CharClass ClassAt(const unsigned char* p, size_t* len) {
  if (*p < 0x80) {
    *len = 1;
    return kAsciiClasses[*p];
  }
  return ClassifyNonAscii(CodePointAt(p, len));
}

// ------------------------------------------------------------------------------------------------------------
// Clean-up: strip, collapse whitespace, lowercase

constexpr std::array<char, 256> MakeAsciiLower() {
  std::array<char, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = static_cast<char>((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
  return t;
}
constexpr std::array<char, 256> kAsciiLower = MakeAsciiLower();

// `re.sub(r'\s+', ' ', text.strip()).strip()` with Python's whitespace, ASCII letters lowered on the way (that
// commutes with the full lowercasing done afterwards for non-ASCII text). Returns whether any non-ASCII remains.
bool CollapseWhitespace(std::string_view in, std::string* out) {
  out->resize(in.size());
  char* const begin = out->data();
  char* w = begin;
  bool pending_space = false;
  bool non_ascii = false;
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const auto* const end = p + in.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      if (IsAsciiPySpace(c)) {
        pending_space = true;
        ++p;
        continue;
      }
      if (pending_space && w != begin) *w++ = ' ';
      pending_space = false;
      *w++ = kAsciiLower[c];
      ++p;
      continue;
    }
    size_t len;
    const char32_t cp = CodePointAt(p, &len);
    if (IsPySpace(cp)) {
      pending_space = true;
      p += len;
      continue;
    }
    if (pending_space && w != begin) *w++ = ' ';
    pending_space = false;
    non_ascii = true;
    std::memcpy(w, p, len);
    w += len;
    p += len;
  }
  out->resize(w - begin);
  return non_ascii;
}

// Per-thread buffers, so that tokenising a text allocates nothing once they have grown.
struct MergeSlot {
  int32_t rank;    // of the pair (symbol i, symbol i + 1); kNoRank when it is not a merge
  int32_t merged;  // the symbol it merges into
};
struct HeapEntry {
  int32_t rank;
  int32_t pos;   // node of the left symbol
  int32_t left;  // the symbols when pushed; the entry is stale once either node holds another
  int32_t right;
  int32_t merged;
};
struct Scratch {
  std::string unescaped[2];
  std::string collapsed;
  std::string lowered;
  std::vector<UChar> utf16;
  std::vector<UChar> utf16_lower;
  std::vector<int32_t> ids;
  std::vector<int32_t> symbols;
  std::vector<MergeSlot> slots;
  std::vector<uint8_t> merged_here;
  std::vector<int32_t> next;
  std::vector<int32_t> prev;
  std::vector<HeapEntry> heap;
  std::vector<HeapEntry> batch;

  // Gives back what one huge text made the buffers grow to (all but `ids`, which the caller may be using).
  void ReleaseLarge() {
    constexpr size_t kKeepBytes = size_t{1} << 20;
    const auto release = [](auto& buffer) {
      if (buffer.capacity() * sizeof(buffer[0]) > kKeepBytes) std::decay_t<decltype(buffer)>().swap(buffer);
    };
    release(unescaped[0]);
    release(unescaped[1]);
    release(collapsed);
    release(lowered);
    release(utf16);
    release(utf16_lower);
    release(symbols);
    release(slots);
    release(merged_here);
    release(next);
    release(prev);
    release(heap);
    release(batch);
  }
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Python's str.lower() on the whole text: full case mapping (İ → i̇) and Final_Sigma in context, which is what
// ICU's root-locale u_strToLower implements.
absl::Status LowerWithIcu(std::string_view in, std::string* out, Scratch* s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len16 = 0;
  s->utf16.resize(in.size() + 1);
  u_strFromUTF8(s->utf16.data(), static_cast<int32_t>(s->utf16.size()), &len16, in.data(),
                static_cast<int32_t>(in.size()), &err);
  if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("u_strFromUTF8: ", u_errorName(err)));
  s->utf16_lower.resize(static_cast<size_t>(len16) + len16 / 2 + 8);
  for (int attempt = 0;; ++attempt) {
    err = U_ZERO_ERROR;
    const int32_t n = u_strToLower(s->utf16_lower.data(), static_cast<int32_t>(s->utf16_lower.size()), s->utf16.data(),
                                   len16, "", &err);
    if (err == U_BUFFER_OVERFLOW_ERROR && attempt == 0) {
      s->utf16_lower.resize(static_cast<size_t>(n) + 1);
      continue;
    }
    if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("u_strToLower: ", u_errorName(err)));
    len16 = n;
    break;
  }
  out->resize(static_cast<size_t>(len16) * 3 + 1);
  int32_t len8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(out->data(), static_cast<int32_t>(out->size()), &len8, s->utf16_lower.data(), len16, &err);
  if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("u_strToUTF8: ", u_errorName(err)));
  out->resize(static_cast<size_t>(len8));
  return absl::OkStatus();
}

// `whitespace_clean(basic_clean(text)).lower()`. The result lives in `s`.
absl::StatusOr<std::string_view> CleanInto(std::string_view text, Scratch* s) {
  CLIPSERVE_RETURN_IF_ERROR(ValidateUtf8(text));
  std::string_view current = text;
  for (std::string& buffer : s->unescaped) {  // html.unescape(html.unescape(text))
    if (current.find('&') == std::string_view::npos) break;
    HtmlUnescapeOnce(current, &buffer);
    current = buffer;
  }
  if (!CollapseWhitespace(current, &s->collapsed)) return std::string_view(s->collapsed);
  CLIPSERVE_RETURN_IF_ERROR(LowerWithIcu(s->collapsed, &s->lowered, s));
  return std::string_view(s->lowered);
}

// ------------------------------------------------------------------------------------------------------------
// Pre-tokenisation: the reference's regex (with the `regex` module, IGNORECASE)
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// as a hand-written scanner over cleaned text. At each position the alternatives are tried in order; only
// whitespace matches none of them and is skipped. The text is already lowercased, so the only case variants
// left for IGNORECASE are s ~ ſ (U+017F), in "'s" and in "<|startoftext|>".

enum class WordKind { kWord, kSot, kEot };

// Length of the contraction at text[i] == '\'' or 0.
inline size_t ContractionLength(std::string_view rest) {
  if (rest.size() < 2) return 0;
  switch (rest[1]) {
    case 's':
    case 't':
    case 'm':
    case 'd':
      return 2;
    case 'r':
    case 'v':
      return rest.size() >= 3 && rest[2] == 'e' ? 3 : 0;
    case 'l':
      return rest.size() >= 3 && rest[2] == 'l' ? 3 : 0;
    case '\xC5':  // "'ſ"
      return rest.size() >= 3 && rest[2] == '\xBF' ? 3 : 0;
    default:
      return 0;
  }
}

// Calls `emit(word, kind)` for each match, left to right, while it returns true.
template <typename Emit>
void ForEachWord(std::string_view text, Emit&& emit) {
  const auto* const data = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = data[i];
    if (c == '<') {
      const std::string_view rest = text.substr(i);
      if (rest.substr(0, kSotToken.size()) == kSotToken) {
        if (!emit(rest.substr(0, kSotToken.size()), WordKind::kSot)) return;
        i += kSotToken.size();
        continue;
      }
      if (rest.substr(0, kEotToken.size()) == kEotToken) {
        if (!emit(rest.substr(0, kEotToken.size()), WordKind::kEot)) return;
        i += kEotToken.size();
        continue;
      }
      // Matches the first alternative case-insensitively but is not the cache's pre-seeded literal: BPE'd.
      constexpr std::string_view kLongSSot = "<|\xC5\xBFtartoftext|>";
      if (rest.substr(0, kLongSSot.size()) == kLongSSot) {
        if (!emit(rest.substr(0, kLongSSot.size()), WordKind::kWord)) return;
        i += kLongSSot.size();
        continue;
      }
    } else if (c == '\'') {
      if (const size_t len = ContractionLength(text.substr(i)); len != 0) {
        if (!emit(text.substr(i, len), WordKind::kWord)) return;
        i += len;
        continue;
      }
    }
    size_t len;
    const CharClass cls = ClassAt(data + i, &len);
    size_t j = i + len;
    switch (cls) {
      case CharClass::kSpace:
        i = j;
        continue;
      case CharClass::kLetter:  // [\p{L}]+
        while (j < n) {
          if (data[j] < 0x80) {
            if (kAsciiClasses[data[j]] != CharClass::kLetter) break;
            ++j;
          } else {
            if (ClassAt(data + j, &len) != CharClass::kLetter) break;
            j += len;
          }
        }
        break;
      case CharClass::kNumber:  // [\p{N}]: one code point per match
        break;
      case CharClass::kOther:  // [^\s\p{L}\p{N}]+
        while (j < n && ClassAt(data + j, &len) == CharClass::kOther) j += len;
        break;
    }
    if (!emit(text.substr(i, j - i), WordKind::kWord)) return;
    i = j;
  }
}

// ------------------------------------------------------------------------------------------------------------
// bytes_to_unicode

// OpenAI's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the others to U+0100 + n in order.
std::array<char32_t, 256> BytesToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : 256 + n++;
  }
  return table;
}

// Debian's abseil is built without std::string_view support: absl::string_view is its own type, which the
// heterogeneous lookups of flat_hash_map<std::string, ...> take.
inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

inline uint64_t PairKey(int32_t a, int32_t b) {
  return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
}

// ------------------------------------------------------------------------------------------------------------
// BPE merge loops. Both are exactly the reference's loop:
//   while True:
//     bigram = the adjacent pair with the lowest merge rank; stop if it has none
//     replace every occurrence of bigram, scanning left to right (so "a a a" + (a, a) -> "aa a")
// Ranks are unique per bigram, and a merge never creates a new occurrence of the bigram being merged (the
// merged symbol is longer than both parts), so one bigram's occurrences can be replaced in one sweep.

using MergeMap = absl::flat_hash_map<uint64_t, MergeSlot>;

inline MergeSlot LookupMerge(const MergeMap& merges, int32_t a, int32_t b) {
  const auto it = merges.find(PairKey(a, b));
  return it == merges.end() ? MergeSlot{kNoRank, -1} : it->second;
}

// For short words: O(n) per round over an array, at most n - 1 rounds. Returns the new symbol count.
size_t MergeInPlace(const MergeMap& merges, int32_t* sym, size_t n, Scratch* s) {
  if (n < 2) return n;
  std::vector<MergeSlot>& slots = s->slots;  // slots[i]: the pair (sym[i], sym[i + 1])
  std::vector<uint8_t>& fresh = s->merged_here;
  slots.resize(n);
  fresh.resize(n);
  for (size_t i = 0; i + 1 < n; ++i) slots[i] = LookupMerge(merges, sym[i], sym[i + 1]);
  while (n > 1) {
    int32_t best = kNoRank;
    size_t at = 0;
    for (size_t i = 0; i + 1 < n; ++i) {
      if (slots[i].rank < best) {
        best = slots[i].rank;
        at = i;  // the leftmost occurrence of the best bigram
      }
    }
    if (best == kNoRank) break;
    const int32_t first = sym[at];
    const int32_t second = sym[at + 1];
    const int32_t merged = slots[at].merged;
    size_t w = at;
    for (size_t j = at; j < n; ++w) {
      if (j + 1 < n && sym[j] == first && sym[j + 1] == second) {
        sym[w] = merged;
        fresh[w] = 1;
        j += 2;
      } else {
        sym[w] = sym[j];
        slots[w] = slots[j];  // still right unless its right neighbour is fresh (fixed below)
        fresh[w] = 0;
        ++j;
      }
    }
    n = w;
    if (at > 0) slots[at - 1] = LookupMerge(merges, sym[at - 1], sym[at]);
    for (size_t k = at; k + 1 < n; ++k) {
      if (fresh[k] | fresh[k + 1]) slots[k] = LookupMerge(merges, sym[k], sym[k + 1]);
    }
  }
  return n;
}

// For long words: a linked list and a heap of candidate pairs ordered by (rank, position), O(n log n). All
// occurrences of the popped bigram are taken off the heap and applied left to right before any pair created
// by those merges is considered, as in the reference.
size_t MergeWithHeap(const MergeMap& merges, int32_t* sym, size_t n, Scratch* s) {
  if (n < 2) return n;
  std::vector<int32_t>& next = s->next;
  std::vector<int32_t>& prev = s->prev;
  std::vector<HeapEntry>& heap = s->heap;
  std::vector<HeapEntry>& batch = s->batch;
  next.resize(n);
  prev.resize(n);
  heap.clear();
  const auto later = [](const HeapEntry& a, const HeapEntry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  const auto push = [&](int32_t pos, int32_t right) {
    const MergeSlot m = LookupMerge(merges, sym[pos], sym[right]);
    if (m.rank == kNoRank) return;
    heap.push_back(HeapEntry{m.rank, pos, sym[pos], sym[right], m.merged});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  const auto pop = [&] {
    std::pop_heap(heap.begin(), heap.end(), later);
    const HeapEntry e = heap.back();
    heap.pop_back();
    return e;
  };
  // A node's symbol only ever grows, so an entry whose two symbols are still in place is a current pair.
  const auto valid = [&](const HeapEntry& e) {
    const int32_t right = next[e.pos];
    return sym[e.pos] == e.left && right >= 0 && sym[right] == e.right;
  };
  const int32_t count = static_cast<int32_t>(n);
  for (int32_t i = 0; i < count; ++i) {
    next[i] = i + 1 < count ? i + 1 : -1;
    prev[i] = i - 1;
  }
  for (int32_t i = 0; i + 1 < count; ++i) push(i, i + 1);
  while (!heap.empty()) {
    const HeapEntry top = pop();
    if (!valid(top)) continue;
    batch.clear();
    batch.push_back(top);
    while (!heap.empty() && heap.front().rank == top.rank) batch.push_back(pop());  // in position order
    for (const HeapEntry& e : batch) {
      if (!valid(e)) continue;  // overlapped by the merge just left of it
      const int32_t right = next[e.pos];
      sym[e.pos] = e.merged;
      sym[right] = -1;
      next[e.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = e.pos;
      if (prev[e.pos] >= 0) push(prev[e.pos], e.pos);
      if (next[e.pos] >= 0) push(e.pos, next[e.pos]);
    }
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
  return w;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------
// Tables

// Everything read from vocab.json and merges.txt. BPE runs on dense symbol numbers: one per vocabulary entry,
// plus any of the 512 base symbols (a byte, or a byte + "</w>") that the vocabulary lacks.
struct Tokenizer::Tables {
  std::array<int32_t, 256> byte_symbol{};              // bytes_to_unicode(b)
  std::array<int32_t, 256> byte_eow_symbol{};          // bytes_to_unicode(b) + "</w>"
  std::array<int32_t, 256> single_byte_id{};           // id of a one-byte word (its "</w>" symbol), -1 if none
  std::vector<int32_t> symbol_id;                      // symbol -> vocabulary id, -1 when not in the vocabulary
  std::vector<std::string> symbol_text;                // symbol -> token string (for messages)
  MergeMap merges;                                     // PairKey(a, b) -> rank and merged symbol
  absl::flat_hash_map<int32_t, std::string> id_bytes;  // id -> token mapped back to bytes (Decode)
};

// A bounded map word -> ids shared by all threads: 16 shards, each a flat_hash_map under its own mutex
// (lookups take it shared). A shard that reaches its share of the capacity is emptied.
class Tokenizer::WordCache {
 public:
  explicit WordCache(size_t capacity) : shard_capacity_(std::max<size_t>(1, (capacity + kShards - 1) / kShards)) {}

  // The maps' own hash of `word`, computed once per lookup and reused for the shard and the probe.
  static size_t Hash(std::string_view word) { return Map::hasher{}(AbslView(word)); }

  // Appends the cached ids of `word` to `ids`; false when absent.
  bool Lookup(std::string_view word, size_t hash, std::vector<int32_t>* ids) const {
    const Shard& shard = shards_[hash >> kShardShift];
    absl::ReaderMutexLock lock(&shard.mu);
    const auto it = shard.map.find(AbslView(word), hash);
    if (it == shard.map.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }

  void Insert(std::string_view word, size_t hash, absl::Span<const int32_t> ids) {
    Shard& shard = shards_[hash >> kShardShift];
    absl::MutexLock lock(&shard.mu);
    if (shard.map.size() >= shard_capacity_) shard.map.clear();
    shard.map.try_emplace(AbslView(word), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kShards = 16;
  static constexpr int kShardShift = 60;  // the hash's top bits pick the shard; the map uses the low ones
  using Map = absl::flat_hash_map<std::string, absl::InlinedVector<int32_t, 4>>;
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    Map map ABSL_GUARDED_BY(mu);
  };
  static_assert(kShards == size_t{1} << (64 - kShardShift));

  const size_t shard_capacity_;
  std::array<Shard, kShards> shards_;
};

Tokenizer::Tokenizer(const TokenizerOptions& options, std::unique_ptr<const Tables> tables)
    : tables_(std::move(tables)),
      cache_(options.cache_capacity > 0 ? std::make_unique<WordCache>(options.cache_capacity) : nullptr),
      context_length_(options.context_length),
      heap_bpe_min_bytes_(options.heap_bpe_min_bytes) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerOptions& options) {
  if (options.context_length < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer context_length must be at least 2 (start and end tokens), got ", options.context_length));
  }
  const std::string vocab_name = options.vocab_path.string();
  const std::string merges_name = options.merges_path.string();
  CLIPSERVE_ASSIGN_OR_RETURN(const nlohmann::json vocab, ReadJsonFile(options.vocab_path));
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_name, ": expected a JSON object mapping tokens to ids"));
  }

  const std::array<char32_t, 256> byte_to_unicode = BytesToUnicode();
  std::array<int16_t, 512> unicode_to_byte;  // bytes_to_unicode maps into [0, 0x144)
  unicode_to_byte.fill(-1);
  for (int b = 0; b < 256; ++b) unicode_to_byte[byte_to_unicode[b]] = static_cast<int16_t>(b);
  // byte_decoder applied to a token (characters outside the byte alphabet are kept as UTF-8).
  const auto byte_decode = [&](const std::string& token) {
    std::string bytes;
    const auto* p = reinterpret_cast<const unsigned char*>(token.data());
    const auto* const end = p + token.size();
    while (p < end) {
      char32_t cp;
      const int n = DecodeUtf8(p, end, &cp);
      if (n < 0) {  // nlohmann validates UTF-8, so this does not happen; keep the byte
        bytes.push_back(static_cast<char>(*p++));
        continue;
      }
      p += n;
      if (cp < unicode_to_byte.size() && unicode_to_byte[cp] >= 0) {
        bytes.push_back(static_cast<char>(unicode_to_byte[cp]));
      } else {
        AppendUtf8(cp, &bytes);
      }
    }
    return bytes;
  };

  auto tables = std::make_unique<Tables>();
  absl::flat_hash_map<std::string, int32_t> symbol_of;  // token string -> symbol
  symbol_of.reserve(vocab.size() + 512);
  tables->symbol_id.reserve(vocab.size() + 512);
  tables->symbol_text.reserve(vocab.size() + 512);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const nlohmann::json& value = it.value();
    int64_t id = -1;
    if (value.is_number_unsigned()) {
      const uint64_t u = value.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) id = static_cast<int64_t>(u);
    } else if (value.is_number_integer()) {
      id = value.get<int64_t>();
    }
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_name, ": the id of token \"", it.key(), "\" is ",
                                                     value.dump(), ", not an integer in [0, 2^31)"));
    }
    symbol_of.emplace(it.key(), static_cast<int32_t>(tables->symbol_id.size()));
    tables->symbol_id.push_back(static_cast<int32_t>(id));
    tables->symbol_text.push_back(it.key());
    tables->id_bytes[static_cast<int32_t>(id)] = byte_decode(it.key());
  }
  const auto vocab_id = [&](std::string_view token) -> int32_t {
    const auto it = symbol_of.find(AbslView(token));
    return it == symbol_of.end() ? -1 : tables->symbol_id[it->second];
  };
  const int32_t sot_id = vocab_id(kSotToken);
  const int32_t eot_id = vocab_id(kEotToken);
  for (const auto& [token, id] : {std::pair{kSotToken, sot_id}, std::pair{kEotToken, eot_id}}) {
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_name, ": the vocabulary has no \"", AbslView(token), "\" token"));
    }
  }

  // The merges refer to vocabulary entries only; base symbols missing from the vocabulary get symbols of their
  // own (an id of -1: a word that still holds one after BPE cannot be encoded, as in the reference).
  CLIPSERVE_ASSIGN_OR_RETURN(const std::string merges_text, ReadFileToString(options.merges_path));
  size_t line_number = 0;
  int32_t rank = 0;
  for (size_t pos = 0; pos < merges_text.size();) {
    size_t eol = merges_text.find('\n', pos);
    if (eol == std::string::npos) eol = merges_text.size();
    std::string_view line(merges_text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto where = [&] { return absl::StrCat(merges_name, ":", line_number, ": "); };
    if (line_number == 1) {  // the reference drops the first line unread; insist that it is the header
      if (line.empty() || line[0] != '#') {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "expected a '#version: ...' header line, got \"", AbslView(line), "\""));
      }
      continue;
    }
    std::vector<std::string_view> fields;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      const size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      if (i > start) fields.push_back(line.substr(start, i - start));
    }
    if (fields.empty()) continue;
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "expected two tokens separated by a space, got \"", AbslView(line), "\""));
    }
    const std::string joined = absl::StrCat(AbslView(fields[0]), AbslView(fields[1]));
    int32_t parts[3];
    const std::string_view part_text[3] = {fields[0], fields[1], joined};
    for (int k = 0; k < 3; ++k) {
      const auto it = symbol_of.find(AbslView(part_text[k]));
      if (it == symbol_of.end()) {
        return absl::InvalidArgumentError(absl::StrCat(where(), "merge \"", AbslView(line), "\": \"",
                                                       AbslView(part_text[k]), "\" is not in the vocabulary ",
                                                       vocab_name));
      }
      parts[k] = it->second;
    }
    // dict(zip(merges, range(len(merges)))): a repeated merge keeps its last rank.
    tables->merges.insert_or_assign(PairKey(parts[0], parts[1]), MergeSlot{rank, parts[2]});
    ++rank;
  }
  if (line_number == 0) {
    return absl::InvalidArgumentError(absl::StrCat(merges_name, ": empty, expected a '#version: ...' header"));
  }

  const auto base_symbol = [&](const std::string& text) {
    const auto [it, inserted] = symbol_of.try_emplace(text, static_cast<int32_t>(tables->symbol_id.size()));
    if (inserted) {
      tables->symbol_id.push_back(-1);
      tables->symbol_text.push_back(text);
    }
    return it->second;
  };
  for (int b = 0; b < 256; ++b) {
    std::string text;
    AppendUtf8(byte_to_unicode[b], &text);
    tables->byte_symbol[b] = base_symbol(text);
    tables->byte_eow_symbol[b] = base_symbol(absl::StrCat(text, AbslView(kEndOfWord)));
    tables->single_byte_id[b] = tables->symbol_id[tables->byte_eow_symbol[b]];
  }

  const size_t vocab_size = vocab.size();
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(options, std::move(tables)));
  tokenizer->sot_id_ = sot_id;
  tokenizer->eot_id_ = eot_id;
  tokenizer->vocab_size_ = vocab_size;
  return tokenizer;
}

absl::Status Tokenizer::BytePairEncode(std::string_view word, std::vector<int32_t>* ids) const {
  const size_t n = word.size();
  if (n == 0) return absl::OkStatus();
  Scratch& s = ThreadScratch();
  std::vector<int32_t>& symbols = s.symbols;
  symbols.resize(n);
  const auto* bytes = reinterpret_cast<const unsigned char*>(word.data());
  for (size_t i = 0; i + 1 < n; ++i) symbols[i] = tables_->byte_symbol[bytes[i]];
  symbols[n - 1] = tables_->byte_eow_symbol[bytes[n - 1]];
  const size_t count = n >= heap_bpe_min_bytes_ ? MergeWithHeap(tables_->merges, symbols.data(), n, &s)
                                                : MergeInPlace(tables_->merges, symbols.data(), n, &s);
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = tables_->symbol_id[symbols[i]];
    if (id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("cannot encode \"", AbslView(word), "\": its BPE token \"",
                                                     tables_->symbol_text[symbols[i]], "\" is not in the vocabulary"));
    }
    ids->push_back(id);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::AppendWordIds(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() == 1) {  // a one-byte word is its own "</w>" symbol: no merges, no cache
    const int32_t id = tables_->single_byte_id[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      ids->push_back(id);
      return absl::OkStatus();
    }
  }
  // Short words are merged directly: their BPE costs no more than a cache probe, and skipping the shared cache
  // keeps threads from contending on its shard locks (measured: warm-cache captions on 2 threads 0.56M/s with
  // every word cached, vs 4.6M/s uncached).
  if (cache_ == nullptr || word.size() < kMinCachedWordBytes || word.size() > kMaxCachedWordBytes) {
    return BytePairEncode(word, ids);
  }
  const size_t hash = WordCache::Hash(word);
  if (cache_->Lookup(word, hash, ids)) return absl::OkStatus();
  const size_t start = ids->size();
  CLIPSERVE_RETURN_IF_ERROR(BytePairEncode(word, ids));
  cache_->Insert(word, hash, absl::MakeConstSpan(ids->data() + start, ids->size() - start));
  return absl::OkStatus();
}

absl::Status Tokenizer::AppendIds(std::string_view utf8, size_t stop_after, std::vector<int32_t>* ids) const {
  Scratch& scratch = ThreadScratch();
  CLIPSERVE_ASSIGN_OR_RETURN(const std::string_view text, CleanInto(utf8, &scratch));
  absl::Status status;
  ForEachWord(text, [&](std::string_view word, WordKind kind) {
    switch (kind) {
      case WordKind::kSot:  // the reference's cache is pre-seeded with the two special tokens
        ids->push_back(sot_id_);
        break;
      case WordKind::kEot:
        ids->push_back(eot_id_);
        break;
      case WordKind::kWord:
        status = AppendWordIds(word, ids);
        if (!status.ok()) return false;
        break;
    }
    return ids->size() <= stop_after;
  });
  if (utf8.size() > (size_t{1} << 18)) scratch.ReleaseLarge();
  return status;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view utf8) const {
  std::vector<int32_t> ids;
  CLIPSERVE_RETURN_IF_ERROR(AppendIds(utf8, std::numeric_limits<size_t>::max(), &ids));
  return ids;
}

absl::StatusOr<TokenizedText> Tokenizer::Tokenize(std::string_view utf8) const {
  TokenizedText result;
  result.ids.push_back(sot_id_);
  CLIPSERVE_RETURN_IF_ERROR(AppendIds(utf8, std::numeric_limits<size_t>::max(), &result.ids));
  result.ids.push_back(eot_id_);
  result.truncated = result.ids.size() > static_cast<size_t>(context_length_);
  return result;
}

absl::Status Tokenizer::EncodePadded(std::string_view utf8, Truncation truncation, absl::Span<int64_t> out,
                                     bool* truncated) const {
  const size_t context = static_cast<size_t>(context_length_);
  if (out.size() != context) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodePadded: output holds ", out.size(), " ids, the context length is ", context));
  }
  std::vector<int32_t>& ids = ThreadScratch().ids;
  ids.clear();
  ids.push_back(sot_id_);
  // When truncating, words past the context are not needed: stop once the ids overflow it.
  const size_t stop_after = truncation == Truncation::kTruncate ? context : std::numeric_limits<size_t>::max();
  CLIPSERVE_RETURN_IF_ERROR(AppendIds(utf8, stop_after, &ids));
  ids.push_back(eot_id_);
  const size_t count = ids.size();
  const bool cut = count > context;
  if (cut && truncation == Truncation::kReject) {
    if (ids.capacity() > (size_t{1} << 18)) std::vector<int32_t>().swap(ids);
    return absl::InvalidArgumentError(absl::StrCat("text is ", count,
                                                   " tokens long (with the start and end tokens), more than the "
                                                   "context length of ",
                                                   context));
  }
  const size_t kept = std::min(ids.size(), context);
  std::copy(ids.begin(), ids.begin() + kept, out.begin());
  std::fill(out.begin() + kept, out.end(), 0);
  if (cut) out[context - 1] = eot_id_;  // tokens[:context]; tokens[-1] = eot
  if (truncated != nullptr) *truncated = cut;
  return absl::OkStatus();
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (const auto it = tables_->id_bytes.find(id); it != tables_->id_bytes.end()) bytes += it->second;
  }
  // .decode('utf-8', errors='replace'): one U+FFFD per maximal ill-formed subpart.
  std::string text;
  text.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* const end = p + bytes.size();
  while (p < end) {
    char32_t cp;
    const int n = DecodeUtf8(p, end, &cp);
    if (n > 0) {
      text.append(reinterpret_cast<const char*>(p), n);
      p += n;
    } else {
      text.append(kReplacementChar);
      p += -n;
    }
  }
  absl::StrReplaceAll({{AbslView(kEndOfWord), " "}}, &text);
  return text;
}

absl::StatusOr<std::string> HtmlUnescape(std::string_view utf8) {
  CLIPSERVE_RETURN_IF_ERROR(ValidateUtf8(utf8));
  std::string out;
  HtmlUnescapeOnce(utf8, &out);
  return out;
}

absl::StatusOr<std::string> CleanText(std::string_view utf8) {
  CLIPSERVE_ASSIGN_OR_RETURN(const std::string_view text, CleanInto(utf8, &ThreadScratch()));
  return std::string(text);
}

absl::StatusOr<std::vector<std::string>> SplitWords(std::string_view utf8) {
  CLIPSERVE_ASSIGN_OR_RETURN(const std::string_view text, CleanInto(utf8, &ThreadScratch()));
  std::vector<std::string> words;
  ForEachWord(text, [&](std::string_view word, WordKind) {
    words.emplace_back(word);
    return true;
  });
  return words;
}

}  // namespace clipserve::clip
