// Vectorised float math for clipserve's own CPU kernels (the packed GEMM's epilogue, attention's softmax).
//
// The functions carry target("avx512f") (16 floats, __m512) or target("avx2,fma") (8 floats, __m256, for CPUs
// without AVX-512) and are inlined into callers with the same target; callers check HasAvx512f() or HasAvx2Fma()
// once and keep a portable path beside them. The build itself stays baseline x86-64.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CLIPSERVE_SIMD_X86 1
#endif

namespace clipserve::simd {

// True when the CPU runs AVX-512F (read once).
inline bool HasAvx512f() {
#ifdef CLIPSERVE_SIMD_X86
  static const bool has = __builtin_cpu_supports("avx512f") != 0;
  return has;
#else
  return false;
#endif
}

// True when the CPU runs AVX2 and FMA (read once).
inline bool HasAvx2Fma() {
#ifdef CLIPSERVE_SIMD_X86
  static const bool has = __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
  return has;
#else
  return false;
#endif
}

// The instruction-set families of clipserve's own kernels (the packed GEMM, attention's softmax): none (the
// portable path), AVX2 with FMA, AVX-512F.
enum class Isa { kNone, kAvx2, kAvx512 };

// True when this CPU runs `isa` (kNone always).
inline bool Supports(Isa isa) {
  switch (isa) {
    case Isa::kNone:
      return true;
    case Isa::kAvx2:
      return HasAvx2Fma();
    case Isa::kAvx512:
      return HasAvx512f();
  }
  return false;
}

// The widest family this CPU runs.
inline Isa WidestIsa() {
  if (HasAvx512f()) return Isa::kAvx512;
  if (HasAvx2Fma()) return Isa::kAvx2;
  return Isa::kNone;
}

inline const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kNone:
      return "none";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

#ifdef CLIPSERVE_SIMD_X86

// The constants of both Exp functions below: log2(e); ln 2 split into a high part exact in a few bits and the
// rest (Cody-Waite); Cephes' degree-6 polynomial for e^r, highest power first.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

// e^x for 16 floats: Cody-Waite reduction x = n·ln2 + r (|r| ≤ ln2/2, ln2 split in two so n·ln2 is exact) and
// Cephes' degree-6 polynomial for e^r, scaled by 2^n with vscalefps. Within 2 ulp of expf over the float range
// (tests/models/simd_math_test.cc); inputs are clamped to [-103.9, 88.7], so x above 88.7 gives e^88.7 ≈ 3.3e38
// (not inf) and very negative x gives 0 (through denormals).
//
// (The masked intrinsics with an all-ones mask stand in for the plain ones, whose GCC 12 definitions start
// from _mm512_undefined_ps() and trip -Wmaybe-uninitialized once inlined.)
__attribute__((target("avx512f"))) inline __m512 Exp(__m512 x) {
  constexpr __mmask16 kAll = 0xffff;
  x = _mm512_mask_max_ps(x, kAll, x, _mm512_set1_ps(-103.9f));
  x = _mm512_mask_min_ps(x, kAll, x, _mm512_set1_ps(88.7f));
  __m512 n = _mm512_mul_ps(x, _mm512_set1_ps(kLog2e));
  n = _mm512_mask_roundscale_ps(n, kAll, n, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP5));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_mask_scalef_ps(p, kAll, p, n);
}

// silu(x) = x · sigmoid(x) = x / (1 + e^-x) for 16 floats.
__attribute__((target("avx512f"))) inline __m512 Silu(__m512 x) {
  const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// e^x for 8 floats, AVX2: the same reduction and polynomial as the AVX-512 Exp above, scaled by 2^n built in
// the exponent bits (AVX2 has no vscalefps, so no denormal results): inputs are clamped to [-87, 88], where n
// stays in [-126, 127]. Within 2 ulp of expf there; below -87 it gives e^-87 ≈ 1.6e-38 rather than a denormal
// or 0, above 88 e^88 ≈ 1.7e38.
__attribute__((target("avx2,fma"))) inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// silu(x) = x / (1 + e^-x) for 8 floats, AVX2.
__attribute__((target("avx2,fma"))) inline __m256 Silu(__m256 x) {
  const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

#endif  // CLIPSERVE_SIMD_X86

}  // namespace clipserve::simd
