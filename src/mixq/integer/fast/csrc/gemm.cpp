// u8 x s8 GEMM tiles with the fused requantisation, for three instruction sets chosen at
// run time: AVX512-VNNI (vpdpbusd, epilogue on the accumulator registers), AVX2 (inputs
// widened to int16 so vpmaddwd cannot saturate) and portable scalar code. Each function
// carries its own target attribute, so one binary runs on every x86-64 CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "fused.h"

namespace mixq_fast {

namespace {

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// -- scalar epilogue (AVX2 and scalar paths) ----------------------------------------------

inline int64_t load_level(const void* base, int dtype, int64_t index) {
  switch (dtype) {
    case kU8: return static_cast<const uint8_t*>(base)[index];
    case kI8: return static_cast<const int8_t*>(base)[index];
    case kI16: return static_cast<const int16_t*>(base)[index];
    case kI32: return static_cast<const int32_t*>(base)[index];
    default: return static_cast<const int64_t*>(base)[index];
  }
}

inline void store_level(void* base, int dtype, int64_t index, int64_t value) {
  switch (dtype) {
    case kU8: static_cast<uint8_t*>(base)[index] = static_cast<uint8_t>(value); break;
    case kI8: static_cast<int8_t*>(base)[index] = static_cast<int8_t>(value); break;
    case kI16: static_cast<int16_t*>(base)[index] = static_cast<int16_t>(value); break;
    case kI32: static_cast<int32_t*>(base)[index] = static_cast<int32_t>(value); break;
    default: static_cast<int64_t*>(base)[index] = value; break;
  }
}

void epilogue_scalar(const int32_t* acc, int64_t pixels, int64_t acc_stride, const Epilogue& e,
                     int64_t first_pixel) {
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t pixel = first_pixel + p;
    for (int64_t r = 0; r < e.rows; ++r) {
      int64_t t = static_cast<int64_t>(acc[p * acc_stride + r]) * e.multiplier[r] + e.bias[r];
      if (e.residual != nullptr) {
        t += load_level(e.residual, e.residual_dtype, pixel * e.residual_stride + r) *
             e.residual_multiplier;
      }
      const int64_t y = std::min(std::max(t >> e.shift[r], e.low), e.high);
      store_level(e.out, e.out_dtype, pixel * e.out_stride + r, y);
      if (e.second_out != nullptr) {
        const int64_t z = (y * e.second_multiplier + e.second_add) >> e.second_shift;
        store_level(e.second_out, e.second_dtype, pixel * e.out_stride + r,
                    std::min(std::max(z, e.second_low), e.second_high));
      }
    }
  }
}

// Where pixel p's k-group kg of the GEMM row starts (see fused.h).
struct Rows {
  const uint8_t* const* bases;
  const int64_t* tap_offsets;
  int64_t taps, groups_per_tap;
  const uint8_t* at(int64_t p, int64_t t, int64_t g) const {
    return bases[p] + tap_offsets[t] + 4 * g;
  }
};

// -- scalar GEMM --------------------------------------------------------------------------

void gemm_scalar(const Rows& rows, int64_t pixels, const int8_t* packed, int64_t row_blocks,
                 int32_t* acc) {
  const int64_t groups = rows.taps * rows.groups_per_tap, stride = row_blocks * kRowBlock;
  for (int64_t p = 0; p < pixels; ++p) {
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
      const int8_t* wg = packed + rb * groups * kRowBlock * 4;
      int32_t sums[kRowBlock] = {0};
      for (int64_t t = 0; t < rows.taps; ++t) {
        for (int64_t g = 0; g < rows.groups_per_tap; ++g, wg += kRowBlock * 4) {
          const uint8_t* x = rows.at(p, t, g);
          for (int r = 0; r < kRowBlock; ++r) {
            sums[r] += x[0] * wg[r * 4] + x[1] * wg[r * 4 + 1] + x[2] * wg[r * 4 + 2] +
                       x[3] * wg[r * 4 + 3];
          }
        }
      }
      std::memcpy(acc + p * stride + rb * kRowBlock, sums, sizeof(sums));
    }
  }
}

// -- AVX2 GEMM: two pixels x 16 rows per step ---------------------------------------------

__attribute__((target("avx2"))) void gemm_avx2(const Rows& rows, int64_t pixels,
                                               const int8_t* packed, int64_t row_blocks,
                                               int32_t* acc) {
  const int64_t groups = rows.taps * rows.groups_per_tap, stride = row_blocks * kRowBlock;
  // hadd leaves rows as [0 1 4 5 | 2 3 6 7]; this puts them back in order.
  const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    for (int64_t p = 0; p < pixels; p += 2) {
      const int two = (p + 1 < pixels) ? 2 : 1;
      // s[pixel][quarter]: int32 lanes hold the two pair sums of each of 4 rows.
      __m256i s[2][4];
      for (int i = 0; i < 2; ++i)
        for (int q = 0; q < 4; ++q) s[i][q] = _mm256_setzero_si256();
      const int8_t* wg = packed + rb * groups * kRowBlock * 4;
      for (int64_t t = 0; t < rows.taps; ++t) {
        for (int64_t g = 0; g < rows.groups_per_tap; ++g, wg += kRowBlock * 4) {
          __m256i wq[4];
          for (int q = 0; q < 4; ++q) {
            wq[q] = _mm256_cvtepi8_epi16(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(wg + q * 16)));
          }
          for (int i = 0; i < two; ++i) {
            const uint8_t* x = rows.at(p + i, t, g);
            const int64_t pattern =
                static_cast<int64_t>(x[0]) | (static_cast<int64_t>(x[1]) << 16) |
                (static_cast<int64_t>(x[2]) << 32) | (static_cast<int64_t>(x[3]) << 48);
            const __m256i xv = _mm256_set1_epi64x(pattern);
            for (int q = 0; q < 4; ++q)
              s[i][q] = _mm256_add_epi32(s[i][q], _mm256_madd_epi16(wq[q], xv));
          }
        }
      }
      for (int i = 0; i < two; ++i) {
        int32_t* dst = acc + (p + i) * stride + rb * kRowBlock;
        const __m256i lo =
            _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s[i][0], s[i][1]), order);
        const __m256i hi =
            _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s[i][2], s[i][3]), order);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), hi);
      }
    }
  }
}

// -- AVX512-VNNI: PB pixels x RB row blocks of accumulators, requantised in registers ------

#define MIXQ_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

MIXQ_VNNI inline __m512i load_residual8(const void* base, int dtype, int64_t index,
                                         __mmask8 mask) {
  switch (dtype) {
    case kU8:
      return _mm512_cvtepu8_epi64(
          _mm_maskz_loadu_epi8(mask, static_cast<const uint8_t*>(base) + index));
    case kI8:
      return _mm512_cvtepi8_epi64(
          _mm_maskz_loadu_epi8(mask, static_cast<const int8_t*>(base) + index));
    case kI16:
      return _mm512_cvtepi16_epi64(
          _mm_maskz_loadu_epi16(mask, static_cast<const int16_t*>(base) + index));
    case kI32:
      return _mm512_cvtepi32_epi64(
          _mm256_maskz_loadu_epi32(mask, static_cast<const int32_t*>(base) + index));
    default:
      return _mm512_maskz_loadu_epi64(mask, static_cast<const int64_t*>(base) + index);
  }
}

MIXQ_VNNI inline void store8(void* base, int dtype, int64_t index, __mmask8 mask, __m512i v) {
  switch (dtype) {
    case kU8: _mm512_mask_cvtepi64_storeu_epi8(static_cast<uint8_t*>(base) + index, mask, v); break;
    case kI8: _mm512_mask_cvtepi64_storeu_epi8(static_cast<int8_t*>(base) + index, mask, v); break;
    case kI16: _mm512_mask_cvtepi64_storeu_epi16(static_cast<int16_t*>(base) + index, mask, v); break;
    case kI32: _mm512_mask_cvtepi64_storeu_epi32(static_cast<int32_t*>(base) + index, mask, v); break;
    default: _mm512_mask_storeu_epi64(static_cast<int64_t*>(base) + index, mask, v); break;
  }
}

// Eight rows (r0..r0+7) of one pixel: int64 multiply-add, residual, shift, clamp, store.
// Every multiplier below 2^31 (e.narrow): vpmuldq's 32x32 -> 64-bit product, exact for
// the int32-range values multiplied here; otherwise the full 64-bit vpmullq.
MIXQ_VNNI inline __m512i multiply(const Epilogue& e, __m512i a, __m512i b) {
  return e.narrow ? _mm512_mul_epi32(a, b) : _mm512_mullo_epi64(a, b);
}

MIXQ_VNNI inline void requantize8(__m512i acc64, const Epilogue& e, int64_t pixel, int64_t r0,
                                  __mmask8 mask) {
  __m512i t = _mm512_add_epi64(
      multiply(e, acc64, _mm512_loadu_si512(e.multiplier + r0)),
      _mm512_loadu_si512(e.bias + r0));
  if (e.residual != nullptr) {
    const __m512i res = load_residual8(e.residual, e.residual_dtype,
                                       pixel * e.residual_stride + r0, mask);
    t = _mm512_add_epi64(t, multiply(e, res, _mm512_set1_epi64(e.residual_multiplier)));
  }
  __m512i y = _mm512_srav_epi64(t, _mm512_loadu_si512(e.shift + r0));
  y = _mm512_min_epi64(_mm512_max_epi64(y, _mm512_set1_epi64(e.low)), _mm512_set1_epi64(e.high));
  store8(e.out, e.out_dtype, pixel * e.out_stride + r0, mask, y);
  if (e.second_out != nullptr) {
    __m512i z = _mm512_add_epi64(multiply(e, y, _mm512_set1_epi64(e.second_multiplier)),
                                 _mm512_set1_epi64(e.second_add));
    z = _mm512_sra_epi64(z, _mm_cvtsi64_si128(e.second_shift));
    z = _mm512_min_epi64(_mm512_max_epi64(z, _mm512_set1_epi64(e.second_low)),
                         _mm512_set1_epi64(e.second_high));
    store8(e.second_out, e.second_dtype, pixel * e.out_stride + r0, mask, z);
  }
}

MIXQ_VNNI inline void requantize16(__m512i acc, const Epilogue& e, int64_t pixel, int64_t r0) {
  const int64_t valid = std::min<int64_t>(kRowBlock, e.rows - r0);
  const uint32_t bits = valid >= 16 ? 0xFFFFu : ((1u << valid) - 1u);
  const __mmask8 lo = static_cast<__mmask8>(bits & 0xFF), hi = static_cast<__mmask8>(bits >> 8);
  requantize8(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)), e, pixel, r0, lo);
  if (hi) requantize8(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)), e, pixel, r0 + 8, hi);
}

// -- the 16-row epilogue on int32 lanes (e.narrow16) -------------------------------------
//
// vpmuldq multiplies the low 32 bits of each 64-bit lane: applied to the accumulator as it
// is, it gives the even rows' exact int64 products, and to the accumulator shifted right by
// 32 the odd rows'. Each half is biased, shifted and clamped in int64 (exact, as the
// contract), then the two halves interleave back into 16 int32 lanes in row order, so a
// block costs one narrowing store instead of two masked 8-lane ones.

struct Rows16 {
  __m512i m_even, m_odd, b_even, b_odd, s_even, s_odd;
};

MIXQ_VNNI inline __m512i evens(__m512i lo, __m512i hi) {
  return _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi);
}

MIXQ_VNNI inline __m512i odds(__m512i lo, __m512i hi) {
  return _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi);
}

MIXQ_VNNI inline void split_rows(const int64_t* v, __m512i& even, __m512i& odd) {
  const __m512i lo = _mm512_loadu_si512(v), hi = _mm512_loadu_si512(v + 8);
  even = evens(lo, hi);
  odd = odds(lo, hi);
}

MIXQ_VNNI inline Rows16 rows16(const Epilogue& e, int64_t r0) {
  Rows16 r;
  split_rows(e.multiplier + r0, r.m_even, r.m_odd);
  split_rows(e.bias + r0, r.b_even, r.b_odd);
  split_rows(e.shift + r0, r.s_even, r.s_odd);
  return r;
}

MIXQ_VNNI inline __m512i load_levels16(const void* base, int dtype, int64_t index, __mmask16 mask) {
  switch (dtype) {
    case kU8:
      return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, static_cast<const uint8_t*>(base) + index));
    case kI8:
      return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, static_cast<const int8_t*>(base) + index));
    case kI16:
      return _mm512_cvtepi16_epi32(
          _mm256_maskz_loadu_epi16(mask, static_cast<const int16_t*>(base) + index));
    default:
      return _mm512_maskz_loadu_epi32(mask, static_cast<const int32_t*>(base) + index);
  }
}

MIXQ_VNNI inline void store_levels16(void* base, int dtype, int64_t index, __mmask16 mask, __m512i v) {
  switch (dtype) {
    case kU8:
    case kI8:
      _mm_mask_storeu_epi8(static_cast<int8_t*>(base) + index, mask, _mm512_cvtepi32_epi8(v));
      break;
    case kI16:
      _mm256_mask_storeu_epi16(static_cast<int16_t*>(base) + index, mask, _mm512_cvtepi32_epi16(v));
      break;
    default:
      _mm512_mask_storeu_epi32(static_cast<int32_t*>(base) + index, mask, v);
      break;
  }
}

MIXQ_VNNI inline __m512i clamp64(__m512i v, __m512i low, __m512i high) {
  return _mm512_min_epi64(_mm512_max_epi64(v, low), high);
}

MIXQ_VNNI inline __m512i interleave(__m512i even, __m512i odd) {
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

MIXQ_VNNI inline void requantize16_narrow(__m512i acc, const Rows16& r, const Epilogue& e,
                                          int64_t pixel, int64_t r0, __mmask16 mask) {
  __m512i te = _mm512_add_epi64(_mm512_mul_epi32(acc, r.m_even), r.b_even);
  __m512i to = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), r.m_odd), r.b_odd);
  if (e.residual != nullptr) {
    const __m512i res = load_levels16(e.residual, e.residual_dtype, pixel * e.residual_stride + r0, mask);
    const __m512i m = _mm512_set1_epi64(e.residual_multiplier);
    te = _mm512_add_epi64(te, _mm512_mul_epi32(res, m));
    to = _mm512_add_epi64(to, _mm512_mul_epi32(_mm512_srli_epi64(res, 32), m));
  }
  const __m512i low = _mm512_set1_epi64(e.low), high = _mm512_set1_epi64(e.high);
  const __m512i y = interleave(clamp64(_mm512_srav_epi64(te, r.s_even), low, high),
                               clamp64(_mm512_srav_epi64(to, r.s_odd), low, high));
  store_levels16(e.out, e.out_dtype, pixel * e.out_stride + r0, mask, y);
  if (e.second_out != nullptr && e.second_rshift >= 0) {
    const __m512i z = _mm512_sra_epi32(_mm512_add_epi32(y, _mm512_set1_epi32(static_cast<int32_t>(e.second_round))),
                                       _mm_cvtsi64_si128(e.second_rshift));
    const __m512i lo2 = _mm512_set1_epi32(static_cast<int32_t>(e.second_low));
    const __m512i hi2 = _mm512_set1_epi32(static_cast<int32_t>(e.second_high));
    store_levels16(e.second_out, e.second_dtype, pixel * e.out_stride + r0, mask,
                   _mm512_min_epi32(_mm512_max_epi32(z, lo2), hi2));
  } else if (e.second_out != nullptr) {
    const __m512i m = _mm512_set1_epi64(e.second_multiplier), add = _mm512_set1_epi64(e.second_add);
    const __m128i c = _mm_cvtsi64_si128(e.second_shift);
    const __m512i lo2 = _mm512_set1_epi64(e.second_low), hi2 = _mm512_set1_epi64(e.second_high);
    const __m512i ze = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(y, m), add), c);
    const __m512i zo =
        _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(y, 32), m), add), c);
    store_levels16(e.second_out, e.second_dtype, pixel * e.out_stride + r0, mask,
                   interleave(clamp64(ze, lo2, hi2), clamp64(zo, lo2, hi2)));
  }
}

MIXQ_VNNI inline __mmask16 valid_rows(const Epilogue& e, int64_t r0) {
  const int64_t valid = std::min<int64_t>(kRowBlock, e.rows - r0);
  return static_cast<__mmask16>(valid >= 16 ? 0xFFFFu : ((1u << valid) - 1u));
}

template <int RB, int PB>
MIXQ_VNNI void tile_vnni(const Rows& rows, int64_t p0, const int8_t* w, int64_t block_bytes,
                         const Epilogue& e, int64_t pixel, int64_t r0) {
  __m512i acc[PB][RB];
#pragma GCC unroll 16
  for (int p = 0; p < PB; ++p)
#pragma GCC unroll 4
    for (int b = 0; b < RB; ++b) acc[p][b] = _mm512_setzero_si512();
  const int64_t gpt = rows.groups_per_tap;
  const int8_t* wk = w;
  for (int64_t t = 0; t < rows.taps; ++t) {
    const uint8_t* a[PB];
#pragma GCC unroll 16
    for (int p = 0; p < PB; ++p) a[p] = rows.bases[p0 + p] + rows.tap_offsets[t];
    for (int64_t g = 0; g < gpt; ++g, wk += 64) {
      __m512i wv[RB];
#pragma GCC unroll 4
      for (int b = 0; b < RB; ++b) wv[b] = _mm512_loadu_si512(wk + b * block_bytes);
#pragma GCC unroll 16
      for (int p = 0; p < PB; ++p) {
        const __m512i x = _mm512_set1_epi32(load_u32(a[p] + 4 * g));
#pragma GCC unroll 4
        for (int b = 0; b < RB; ++b) acc[p][b] = _mm512_dpbusd_epi32(acc[p][b], x, wv[b]);
      }
    }
  }
  // A local copy: the output stores (char-typed) cannot alias it, so its fields stay in
  // registers across the stores.
  const Epilogue local = e;
  if (local.narrow16) {
    for (int b = 0; b < RB; ++b) {
      const int64_t rb0 = r0 + b * kRowBlock;
      const Rows16 r = rows16(local, rb0);
      const __mmask16 mask = valid_rows(local, rb0);
      for (int p = 0; p < PB; ++p) requantize16_narrow(acc[p][b], r, local, pixel + p, rb0, mask);
    }
    return;
  }
  for (int p = 0; p < PB; ++p)
    for (int b = 0; b < RB; ++b) requantize16(acc[p][b], local, pixel + p, r0 + b * kRowBlock);
}

// The last n < PB pixels with a tile of exactly n pixels.
template <int RB, int P>
MIXQ_VNNI void tail_vnni(int64_t n, const Rows& rows, int64_t p0, const int8_t* w,
                         int64_t block_bytes, const Epilogue& e, int64_t pixel, int64_t r0) {
  if constexpr (P > 0) {
    if (n == P) {
      tile_vnni<RB, P>(rows, p0, w, block_bytes, e, pixel, r0);
    } else {
      tail_vnni<RB, P - 1>(n, rows, p0, w, block_bytes, e, pixel, r0);
    }
  }
}

template <int RB, int PB>
MIXQ_VNNI void blocks_vnni(const Rows& rows, int64_t pixels, const int8_t* w,
                           int64_t block_bytes, const Epilogue& e, int64_t first_pixel,
                           int64_t r0) {
  int64_t p = 0;
  for (; p + PB <= pixels; p += PB) tile_vnni<RB, PB>(rows, p, w, block_bytes, e, first_pixel + p, r0);
  if (p < pixels) tail_vnni<RB, PB - 1>(pixels - p, rows, p, w, block_bytes, e, first_pixel + p, r0);
}

MIXQ_VNNI void gemm_vnni(const Rows& rows, int64_t pixels, const int8_t* packed,
                         int64_t row_blocks, const Epilogue& e, int64_t first_pixel) {
  const int64_t block_bytes = rows.taps * rows.groups_per_tap * kRowBlock * 4;
  int64_t rb = 0;
  while (rb < row_blocks) {
    const int64_t left = row_blocks - rb;
    const int8_t* w = packed + rb * block_bytes;
    const int64_t r0 = rb * kRowBlock;
    if (left >= 4) {
      blocks_vnni<4, 6>(rows, pixels, w, block_bytes, e, first_pixel, r0);
      rb += 4;
    } else if (left == 3) {
      blocks_vnni<3, 8>(rows, pixels, w, block_bytes, e, first_pixel, r0);
      rb += 3;
    } else if (left == 2) {
      blocks_vnni<2, 12>(rows, pixels, w, block_bytes, e, first_pixel, r0);
      rb += 2;
    } else {
      blocks_vnni<1, 16>(rows, pixels, w, block_bytes, e, first_pixel, r0);
      rb += 1;
    }
  }
}

}  // namespace

bool isa_supported(int isa) {
  __builtin_cpu_init();
  switch (isa) {
    case kVnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni");
    case kAvx2: return __builtin_cpu_supports("avx2");
    case kScalar: return true;
    default: return false;
  }
}

int best_isa() {
  if (isa_supported(kVnni)) return kVnni;
  if (isa_supported(kAvx2)) return kAvx2;
  return kScalar;
}

void conv_requantize(int isa, const uint8_t* const* bases, int64_t pixels,
                     const int64_t* tap_offsets, int64_t taps, int64_t groups_per_tap,
                     const int8_t* packed, int64_t row_blocks, const Epilogue& epilogue,
                     int64_t first_pixel, int32_t* scratch) {
  const Rows rows{bases, tap_offsets, taps, groups_per_tap};
  if (isa == kVnni) {
    gemm_vnni(rows, pixels, packed, row_blocks, epilogue, first_pixel);
    return;
  }
  if (isa == kAvx2) {
    gemm_avx2(rows, pixels, packed, row_blocks, scratch);
  } else {
    gemm_scalar(rows, pixels, packed, row_blocks, scratch);
  }
  epilogue_scalar(scratch, pixels, row_blocks * kRowBlock, epilogue, first_pixel);
}

}  // namespace mixq_fast
