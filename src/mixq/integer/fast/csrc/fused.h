// The fused integer layer of docs/integer.md ("Fused layer contract"), shared by the GEMM
// kernels (gemm.cpp) and the torch-facing operators (ops.cpp).
//
//   acc[p, r] = sum_k W[r, k] * A[p, k]          A: uint8 im2col rows, W: int8 (int32 acc)
//   t         = acc * M[r] + B[r] (+ R[p, r] * M_res)       int64
//   y         = clamp(t >> c[r], lo, hi)          B already holds 2^(c-1) and the offset
//                                                 correction of signed inputs
#pragma once

#include <cstdint>

namespace mixq_fast {

// Instruction sets, best first; a kernel can be forced to any one the CPU supports.
enum Isa : int { kScalar = 0, kAvx2 = 1, kVnni = 2 };

// Element types of activations, residuals and outputs (values are clamped into them).
enum Dtype : int { kU8 = 0, kI8 = 1, kI16 = 2, kI32 = 3, kI64 = 4 };

constexpr int kRowBlock = 16;  // weight rows per packed block (one 512-bit accumulator)

// Requantisation of one GEMM's rows (one group of a grouped conv).
struct Epilogue {
  const int64_t* multiplier;  // [rows padded to kRowBlock]
  const int64_t* bias;        // B + 2^(c-1) + correction, same length
  const int64_t* shift;       // same length, each 0..62
  int64_t low, high;
  int64_t rows;               // valid rows (<= padded rows)
  const void* residual;       // nullptr, or [pixels][residual_stride] of residual_dtype
  int residual_dtype;
  int64_t residual_stride;    // elements between pixels (the tensor's channel count)
  int64_t residual_multiplier;
  void* out;                  // [pixels][out_stride] of out_dtype, at this group's channel 0
  int out_dtype;
  int64_t out_stride;
  // Optional second output: the first's levels requantised to the next layer's input,
  // clamp((y * second_multiplier + second_add) >> second_shift, second_low, second_high).
  void* second_out;           // nullptr, or laid out as out
  int second_dtype;
  int64_t second_multiplier, second_add, second_shift, second_low, second_high;
  // When second_multiplier is 2^k (k <= second_shift; a residual sum's refined grid and
  // the next layer's input grid differ by a power of two) and y + 2^(second_shift-k-1)
  // fits int32: z = clamp((y + second_round) >> second_rshift) on int32 lanes, the same
  // integers. second_rshift < 0 where it does not apply.
  int64_t second_rshift, second_round;
  // Every multiplier (rows, residual, second output) below 2^31, and so every factor of
  // every product a signed 32-bit value.
  bool narrow;
  // narrow, and every clamp bound and every level type (outputs, residual) within 32 bits:
  // a 16-row block requantised as its even and odd rows, without widening to 2 x 8 int64.
  bool narrow16;
};

// GEMM rows read in place: pixel p's k-group kg = t * groups_per_tap + g starts at
// bases[p] + tap_offsets[t] + 4 * g (a direct convolution over a padded channels-last
// input, a tile's pixels from any output rows; an im2col tile is one tap at offset 0). The
// packed weights are [row_blocks][taps * groups_per_tap][16][4] int8; results go through
// the epilogue, pixel p landing at out/residual row (first_pixel + p). scratch: int32
// [pixels][row_blocks * 16] for the AVX2 and scalar paths (unused by VNNI's).
void conv_requantize(int isa, const uint8_t* const* bases, int64_t pixels,
                     const int64_t* tap_offsets, int64_t taps, int64_t groups_per_tap,
                     const int8_t* packed, int64_t row_blocks, const Epilogue& epilogue,
                     int64_t first_pixel, int32_t* scratch);

int best_isa();
bool isa_supported(int isa);

}  // namespace mixq_fast
