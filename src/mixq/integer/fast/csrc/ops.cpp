// Torch-facing operators of the fast integer engine: the fused conv/linear (im2col into a
// cache-sized tile, then gemm.cpp's GEMM with its epilogue), the entrance quantiser,
// requantisation, the addition of two levels tensors and integer pooling. Activations are
// NCHW-shaped tensors stored channels-last (NHWC), so a pixel's channels are contiguous.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "fused.h"
#include "ops.h"

namespace mixq_fast {

namespace {

int g_isa = -1;  // -1: the best the CPU has

int active_isa() { return g_isa < 0 ? best_isa() : g_isa; }

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kByte: return kU8;
    case at::kChar: return kI8;
    case at::kShort: return kI16;
    case at::kInt: return kI32;
    case at::kLong: return kI64;
    default: TORCH_CHECK(false, "mixq fast engine: unsupported integer dtype ", t);
  }
  return kI64;
}

at::ScalarType scalar_type(int64_t code) {
  switch (code) {
    case kU8: return at::kByte;
    case kI8: return at::kChar;
    case kI16: return at::kShort;
    case kI32: return at::kInt;
    default: return at::kLong;
  }
}

constexpr int64_t kTilePixels = 48;  // pixels of one GEMM tile (a multiple of 6, 8, 12, 16)

// Whole tiles of kTilePixels, halved (to 24, then 12) on several threads while there would
// be fewer than four per thread: a batch-1 deep layer has only 64 pixels to share.
int64_t tile_pixels(int64_t pixels) {
  const int64_t threads = at::get_num_threads();
  if (threads == 1) return kTilePixels;
  const int64_t wanted = 4 * threads;
  int64_t tile = kTilePixels;
  while (tile > 12 && (pixels + tile - 1) / tile < wanted) tile /= 2;
  return tile;
}

// Allocated channels-last at once (empty(...).contiguous(ChannelsLast) would allocate and
// copy a second tensor), straight from the CPU allocator: a batch-1 forward allocates some
// forty tensors, and the dispatcher's at::empty costs about a microsecond each.
at::Tensor empty_channels_last(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_cpu(sizes, dtype, false, at::MemoryFormat::ChannelsLast);
}

at::Tensor channels_last(const at::Tensor& x) {
  // The layout check first: it reads the tensor's metadata, where contiguous() dispatches.
  if (x.dim() == 4) {
    return x.is_contiguous(at::MemoryFormat::ChannelsLast) ? x : x.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return x.is_contiguous() ? x : x.contiguous();
}

}  // namespace

void set_isa(int64_t isa) {
  TORCH_CHECK(isa >= -1 && isa <= kVnni, "mixq fast engine: unknown instruction set ", isa);
  TORCH_CHECK(isa < 0 || isa_supported(static_cast<int>(isa)),
              "mixq fast engine: this CPU lacks instruction set ", isa);
  g_isa = static_cast<int>(isa);
}

int64_t get_isa() { return active_isa(); }

bool supports_isa(int64_t isa) { return isa_supported(static_cast<int>(isa)); }

namespace {

int64_t round4(int64_t v) { return (v + 3) / 4 * 4; }

// The input as the direct convolution reads it: zero padding (the level of real zero,
// 0x80 once int8 is read as uint8), channels padded to a multiple of 4. No copy where the
// input already is that; otherwise the copy goes to a buffer of the calling thread, reused
// by its next convolution (it is read only within conv_fused).
const uint8_t* padded_input(const at::Tensor& x, bool flip, int64_t ph, int64_t pw) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cp = round4(c), hp = h + 2 * ph, wp = w + 2 * pw;
  if (!flip && cp == c && ph == 0 && pw == 0) return static_cast<const uint8_t*>(x.data_ptr());
  thread_local std::vector<uint8_t> buffer;
  buffer.resize(std::max<size_t>(buffer.size(), static_cast<size_t>(n * hp * wp * cp)));
  const uint8_t fill = flip ? 0x80 : 0;
  const uint8_t* src = static_cast<const uint8_t*>(x.data_ptr());
  uint8_t* dst = buffer.data();
  // A copy of a few tens of kilobytes (a batch-1 layer) costs less than waking a thread.
  const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{1} << 18) / (wp * cp));
  at::parallel_for(0, n * hp, rows_per_chunk, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / hp, y = job % hp - ph;
      uint8_t* row = dst + job * wp * cp;
      if (y < 0 || y >= h) {
        std::memset(row, fill, wp * cp);
        continue;
      }
      std::memset(row, fill, pw * cp);
      std::memset(row + (pw + w) * cp, fill, pw * cp);
      const uint8_t* in = src + (b * h + y) * w * c;
      uint8_t* o = row + pw * cp;
      if (!flip && cp == c) {
        std::memcpy(o, in, w * c);
        continue;
      }
      for (int64_t i = 0; i < w; ++i, o += cp, in += c) {
        for (int64_t j = 0; j < c; ++j) o[j] = flip ? (in[j] ^ 0x80) : in[j];
        for (int64_t j = c; j < cp; ++j) o[j] = fill;
      }
    }
  });
  return dst;
}

}  // namespace

// x: [N, C, H, W] uint8/int8 levels (int8 read as uint8 + 128, corrected in the bias);
// packed: [groups, row_blocks, kh*kw*round4(C/groups)/4, 16, 4] int8 (columns in (kh, kw,
// channel) order); multiplier/bias/shift: [groups, row_blocks*16] int64; returns
// [N, R, OH, OW] channels-last of out_dtype.
// second: {multiplier, shift, low, high, dtype} of an optional second output (the first's
// levels requantised, as a following Requantize would), or empty.
std::vector<at::Tensor> conv_fused(const at::Tensor& x_in, const at::Tensor& packed,
                      const at::Tensor& multiplier,
                      const at::Tensor& bias, const at::Tensor& shift, int64_t rows,
                      int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                      int64_t dh, int64_t dw, int64_t groups, int64_t low, int64_t high,
                      const c10::optional<at::Tensor>& residual_in, int64_t residual_multiplier,
                      int64_t out_dtype, const std::vector<int64_t>& second) {
  TORCH_CHECK(x_in.dim() == 4, "conv_fused: input must be 4-D");
  TORCH_CHECK(x_in.scalar_type() == at::kByte || x_in.scalar_type() == at::kChar,
              "conv_fused: input levels must be uint8 or int8");
  const at::Tensor x = channels_last(x_in);
  const bool flip = x.scalar_type() == at::kChar;  // int8 -> uint8 by xor 0x80
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(c % groups == 0 && rows % groups == 0, "conv_fused: channels not divisible by groups");
  const int64_t cg = c / groups, rg = rows / groups, cgp = round4(cg);
  const int64_t taps = kh * kw, k_padded = taps * cgp;
  const int64_t row_blocks = packed.size(1);
  TORCH_CHECK(packed.size(0) == groups && packed.size(2) * 4 == k_padded &&
                  row_blocks * kRowBlock >= rg,
              "conv_fused: packed weights do not match the input");
  const int64_t oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t ow = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(oh > 0 && ow > 0, "conv_fused: empty output");
  at::Tensor out = empty_channels_last({n, rows, oh, ow}, scalar_type(out_dtype));
  at::Tensor residual;
  if (residual_in.has_value()) {
    residual = channels_last(*residual_in);
    TORCH_CHECK(residual.sizes() == out.sizes(), "conv_fused: residual shape ", residual.sizes(),
                " differs from the output's ", out.sizes());
  }
  TORCH_CHECK(second.empty() || second.size() == 5, "conv_fused: second output needs 5 values");
  TORCH_CHECK(second.empty() || (second[1] >= 0 && second[1] <= 62), "conv_fused: bad shift");
  at::Tensor out2;
  if (!second.empty()) {
    out2 = empty_channels_last({n, rows, oh, ow}, scalar_type(second[4]));
  }
  std::vector<at::Tensor> results{out};
  if (out2.defined()) results.push_back(out2);
  const int isa = active_isa();
  const int8_t* wp = packed.data_ptr<int8_t>();
  const int64_t padded_rows = row_blocks * kRowBlock;
  constexpr int64_t kNarrow = int64_t{1} << 31;
  // Factors of every epilogue product int32-range values: the cheaper 32x32 multiply.
  auto within32 = [](int64_t lo, int64_t hi) { return lo >= -kNarrow && hi < kNarrow; };
  bool narrow = residual_multiplier >= 0 && residual_multiplier < kNarrow &&
                (!residual.defined() || residual.scalar_type() != at::kLong) &&
                (second.empty() || (second[0] >= 0 && second[0] < kNarrow && within32(low, high)));
  const int64_t* mp = multiplier.data_ptr<int64_t>();
  for (int64_t i = 0; i < multiplier.numel(); ++i) narrow = narrow && mp[i] >= 0 && mp[i] < kNarrow;
  const bool narrow16 = narrow && within32(low, high) && out_dtype != kI64 &&
                        (second.empty() || (within32(second[2], second[3]) && second[4] != kI64));
  auto epilogue = [&](int64_t g) {
    Epilogue e;
    e.multiplier = multiplier.data_ptr<int64_t>() + g * padded_rows;
    e.bias = bias.data_ptr<int64_t>() + g * padded_rows;
    e.shift = shift.data_ptr<int64_t>() + g * padded_rows;
    e.low = low;
    e.high = high;
    e.rows = rg;
    e.residual = nullptr;
    e.residual_dtype = residual.defined() ? dtype_code(residual.scalar_type()) : 0;
    e.residual_stride = rows;
    e.residual_multiplier = residual_multiplier;
    if (residual.defined()) {
      e.residual = static_cast<const char*>(residual.data_ptr()) + g * rg * residual.element_size();
    }
    e.out = static_cast<char*>(out.data_ptr()) + g * rg * out.element_size();
    e.out_dtype = static_cast<int>(out_dtype);
    e.out_stride = rows;
    e.second_out = nullptr;
    e.second_rshift = -1;
    e.second_round = 0;
    e.narrow = narrow;
    e.narrow16 = narrow16;
    if (out2.defined()) {
      e.second_out = static_cast<char*>(out2.data_ptr()) + g * rg * out2.element_size();
      e.second_dtype = static_cast<int>(second[4]);
      e.second_multiplier = second[0];
      e.second_shift = second[1];
      e.second_add = second[1] > 0 ? (int64_t{1} << (second[1] - 1)) : 0;
      e.second_low = second[2];
      e.second_high = second[3];
      const int64_t m2 = second[0];
      if (narrow16 && m2 > 0 && (m2 & (m2 - 1)) == 0) {
        const int64_t k = __builtin_ctzll(static_cast<unsigned long long>(m2));
        const int64_t r = second[1] - k;
        const int64_t round = r > 0 ? (int64_t{1} << (r - 1)) : 0;
        // (y 2^k + 2^(s-1)) >> s == (y + 2^(r-1)) >> r, r = s - k >= 0; y + round must not
        // leave int32 (y lies in [low, high]).
        if (r >= 0 && high + round < kNarrow) {
          e.second_rshift = r;
          e.second_round = round;
        }
      }
    }
    return e;
  };
  const int64_t pixels = n * oh * ow;
  const int64_t tile = tile_pixels(pixels);
  const int64_t tiles = (pixels + tile - 1) / tile;
  // AVX2 and scalar accumulate into memory before their epilogue; VNNI's stays in registers.
  const int64_t scratch_size = isa == kVnni ? 0 : tile * padded_rows;
  if (groups == 1) {
    // Direct convolution: each tap's GEMM rows read in place from the padded input, a
    // tile's pixels taken from as many output rows as it needs (rows of a deep layer are
    // a few pixels wide).
    const uint8_t* base = padded_input(x, flip, ph, pw);
    const int64_t hp = h + 2 * ph, wpad = w + 2 * pw;
    std::vector<int64_t> offsets(taps);
    for (int64_t u = 0; u < kh; ++u)
      for (int64_t v = 0; v < kw; ++v) offsets[u * kw + v] = (u * dh * wpad + v * dw) * cgp;
    const Epilogue e = epilogue(0);
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      std::unique_ptr<int32_t[]> scratch(scratch_size ? new int32_t[scratch_size] : nullptr);
      std::vector<const uint8_t*> bases(tile);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t p0 = job * tile, count = std::min(tile, pixels - p0);
        for (int64_t i = 0; i < count; ++i) {
          const int64_t p = p0 + i, b = p / (oh * ow), rem = p % (oh * ow);
          const int64_t y = rem / ow, xo = rem % ow;
          bases[i] = base + ((b * hp + y * sh) * wpad + xo * sw) * cgp;
        }
        conv_requantize(isa, bases.data(), count, offsets.data(), taps, cgp / 4, wp, row_blocks,
                        e, p0, scratch.get());
      }
    });
    return results;
  }
  // Grouped: each group's channels gathered into an im2col tile (one tap at offset 0).
  const uint8_t* xp = static_cast<const uint8_t*>(x.data_ptr());
  const uint8_t pad_value = flip ? 0x80 : 0;
  const int64_t zero = 0;
  at::parallel_for(0, tiles * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> columns(tile * k_padded);
    std::unique_ptr<int32_t[]> scratch(scratch_size ? new int32_t[scratch_size] : nullptr);
    std::vector<const uint8_t*> bases(tile);
    for (int64_t i = 0; i < tile; ++i) bases[i] = columns.data() + i * k_padded;
    for (int64_t job = begin; job < end; ++job) {
      const int64_t g = job % groups, t = job / groups;
      const int64_t p0 = t * tile, count = std::min(tile, pixels - p0);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t p = p0 + i, b = p / (oh * ow), rem = p % (oh * ow);
        const int64_t y0 = (rem / ow) * sh - ph, x0 = (rem % ow) * sw - pw;
        uint8_t* dst = columns.data() + i * k_padded;
        for (int64_t u = 0; u < kh; ++u) {
          const int64_t iy = y0 + u * dh;
          for (int64_t v = 0; v < kw; ++v, dst += cgp) {
            const int64_t ix = x0 + v * dw;
            std::memset(dst, pad_value, cgp);
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            const uint8_t* src = xp + ((b * h + iy) * w + ix) * c + g * cg;
            for (int64_t j = 0; j < cg; ++j) dst[j] = flip ? (src[j] ^ 0x80) : src[j];
          }
        }
      }
      const Epilogue e = epilogue(g);
      conv_requantize(isa, bases.data(), count, &zero, 1, k_padded / 4,
                      wp + g * row_blocks * (k_padded / 4) * kRowBlock * 4, row_blocks, e, p0,
                      scratch.get());
    }
  });
  return results;
}

namespace {

template <typename T>
void requantize_loop(const T* src, int64_t count, const int64_t* m, int64_t m_stride,
                     const int64_t* add, const int64_t* c, int64_t period, int64_t low, int64_t high,
                     void* out, int out_code) {
  (void)m_stride;
  at::parallel_for(0, count, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t ch = period > 1 ? i % period : 0;
      const int64_t y = std::min(std::max((static_cast<int64_t>(src[i]) * m[ch] + add[ch]) >> c[ch], low), high);
      switch (out_code) {
        case kU8: static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(y); break;
        case kI8: static_cast<int8_t*>(out)[i] = static_cast<int8_t>(y); break;
        case kI16: static_cast<int16_t*>(out)[i] = static_cast<int16_t>(y); break;
        case kI32: static_cast<int32_t*>(out)[i] = static_cast<int32_t>(y); break;
        default: static_cast<int64_t*>(out)[i] = y; break;
      }
    }
  });
}

}  // namespace

// clamp((x * m + 2^(c-1)) >> c, low, high) elementwise; same layout as x.
at::Tensor requantize(const at::Tensor& x_in, int64_t m, int64_t c, int64_t low, int64_t high,
                      int64_t out_dtype) {
  const at::Tensor x = channels_last(x_in);
  at::Tensor out = at::empty_like(x, x.options().dtype(scalar_type(out_dtype)));
  const int64_t add = c > 0 ? (int64_t{1} << (c - 1)) : 0;
  AT_DISPATCH_INTEGRAL_TYPES(x.scalar_type(), "requantize", [&] {
    requantize_loop<scalar_t>(x.data_ptr<scalar_t>(), x.numel(), &m, 0, &add, &c, 1, low, high,
                              out.data_ptr(), static_cast<int>(out_dtype));
  });
  return out;
}

// clamp((a * m_a + b * m_b + 2^(c-1)) >> c, low, high) elementwise.
at::Tensor add_levels(const at::Tensor& a_in, const at::Tensor& b_in, int64_t m_a, int64_t m_b,
                      int64_t c, int64_t low, int64_t high, int64_t out_dtype) {
  TORCH_CHECK(a_in.sizes() == b_in.sizes(), "add_levels: shapes differ");
  const at::Tensor a = channels_last(a_in).to(at::kLong), b = channels_last(b_in).to(at::kLong);
  at::Tensor out = at::empty_like(a, a.options().dtype(scalar_type(out_dtype)));
  const int64_t add = c > 0 ? (int64_t{1} << (c - 1)) : 0;
  const int64_t* ap = a.data_ptr<int64_t>();
  const int64_t* bp = b.data_ptr<int64_t>();
  at::Tensor sum = at::empty_like(a);
  int64_t* sp = sum.data_ptr<int64_t>();
  const int64_t count = a.numel();
  at::parallel_for(0, count, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) sp[i] = ap[i] * m_a + bp[i] * m_b;
  });
  int64_t one = 1;
  requantize_loop<int64_t>(sp, count, &one, 0, &add, &c, 1, low, high, out.data_ptr(),
                           static_cast<int>(out_dtype));
  return out;
}

// The entrance: clamp(round(x / step), low, high), float32 division, ties to even (as
// torch.round); returns channels-last levels of out_dtype.
at::Tensor quantize_input(const at::Tensor& x_in, double step, int64_t low, int64_t high,
                          int64_t out_dtype) {
  const at::Tensor x = channels_last(x_in.to(at::kFloat));
  at::Tensor out = at::empty_like(x, x.options().dtype(scalar_type(out_dtype)));
  const float s = static_cast<float>(step), lo = static_cast<float>(low), hi = static_cast<float>(high);
  const float* xp = x.data_ptr<float>();
  const int code = static_cast<int>(out_dtype);
  void* op = out.data_ptr();
  at::parallel_for(0, x.numel(), 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::nearbyint(std::min(std::max(xp[i] / s, lo), hi));
      const int64_t y = static_cast<int64_t>(v);
      switch (code) {
        case kU8: static_cast<uint8_t*>(op)[i] = static_cast<uint8_t>(y); break;
        case kI8: static_cast<int8_t*>(op)[i] = static_cast<int8_t>(y); break;
        case kI16: static_cast<int16_t*>(op)[i] = static_cast<int16_t>(y); break;
        case kI32: static_cast<int32_t*>(op)[i] = static_cast<int32_t>(y); break;
        default: static_cast<int64_t*>(op)[i] = y; break;
      }
    }
  });
  return out;
}

// Global average pooling: per (n, channel) the int64 sum over positions, then
// clamp((sum * m + 2^(c-1)) >> c, low, high); returns [N, C] of out_dtype.
at::Tensor global_avg_pool(const at::Tensor& x_in, int64_t m, int64_t c, int64_t low, int64_t high,
                           int64_t out_dtype) {
  TORCH_CHECK(x_in.dim() == 4, "global_avg_pool: input must be 4-D");
  const at::Tensor x = channels_last(x_in);
  const int64_t n = x.size(0), ch = x.size(1), positions = x.size(2) * x.size(3);
  at::Tensor sums = at::zeros({n, ch}, x.options().dtype(at::kLong));
  int64_t* sp = sums.data_ptr<int64_t>();
  AT_DISPATCH_INTEGRAL_TYPES(x.scalar_type(), "global_avg_pool", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        int64_t* row = sp + b * ch;
        for (int64_t p = 0; p < positions; ++p) {
          const scalar_t* src = xp + (b * positions + p) * ch;
          for (int64_t j = 0; j < ch; ++j) row[j] += src[j];
        }
      }
    });
  });
  at::Tensor out = at::empty({n, ch}, x.options().dtype(scalar_type(out_dtype)));
  const int64_t add = c > 0 ? (int64_t{1} << (c - 1)) : 0;
  int64_t one_period = 1;
  (void)one_period;
  requantize_loop<int64_t>(sp, n * ch, &m, 0, &add, &c, 1, low, high, out.data_ptr(),
                           static_cast<int>(out_dtype));
  return out;
}

// Max pooling of levels; padding never wins (as PyTorch pads with -inf).
at::Tensor max_pool(const at::Tensor& x_in, int64_t kernel, int64_t stride, int64_t padding) {
  TORCH_CHECK(x_in.dim() == 4, "max_pool: input must be 4-D");
  const at::Tensor x = channels_last(x_in);
  const int64_t n = x.size(0), ch = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1;
  TORCH_CHECK(oh > 0 && ow > 0, "max_pool: empty output");
  at::Tensor out = empty_channels_last({n, ch, oh, ow}, x.scalar_type());
  AT_DISPATCH_INTEGRAL_TYPES(x.scalar_type(), "max_pool", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n * oh, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> best(ch);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t b = job / oh, y = job % oh;
        for (int64_t xo = 0; xo < ow; ++xo) {
          std::fill(best.begin(), best.end(), std::numeric_limits<scalar_t>::lowest());
          for (int64_t u = 0; u < kernel; ++u) {
            const int64_t iy = y * stride - padding + u;
            if (iy < 0 || iy >= h) continue;
            for (int64_t v = 0; v < kernel; ++v) {
              const int64_t ix = xo * stride - padding + v;
              if (ix < 0 || ix >= w) continue;
              const scalar_t* src = xp + ((b * h + iy) * w + ix) * ch;
              for (int64_t j = 0; j < ch; ++j) best[j] = std::max(best[j], src[j]);
            }
          }
          std::memcpy(op + ((b * oh + y) * ow + xo) * ch, best.data(), ch * sizeof(scalar_t));
        }
      }
    });
  });
  return out;
}

}  // namespace mixq_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv_fused", &mixq_fast::conv_fused, "fused integer conv/linear with requantisation");
  m.def("requantize", &mixq_fast::requantize, "dyadic requantisation of levels");
  m.def("add_levels", &mixq_fast::add_levels, "two levels tensors added into a third grid");
  m.def("quantize_input", &mixq_fast::quantize_input, "the entrance quantiser");
  m.def("global_avg_pool", &mixq_fast::global_avg_pool, "integer global average pooling");
  m.def("max_pool", &mixq_fast::max_pool, "max pooling of levels");
  m.def("set_isa", &mixq_fast::set_isa, "force an instruction set (-1: best)");
  mixq_fast::register_plan(m);
  m.def("get_isa", &mixq_fast::get_isa, "the instruction set in use");
  m.def("supports_isa", &mixq_fast::supports_isa, "whether this CPU has an instruction set");
}
