// CPU kernel: separable resampling (vertical taps, then horizontal), channel
// mixing and normalisation fused per output row. Resampling is linear, so the
// gray conversion is applied after it: 8x fewer multiplies at 256->32.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <utility>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#ifdef __linux__
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#include <cerrno>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "preprocess.h"

namespace xfer {

Taps make_taps(std::int64_t in, std::int64_t out, Interp interp) {
  Taps t;
  t.start.resize(out);
  t.count.resize(out);
  t.offset.resize(out);
  const double s = static_cast<double>(in) / static_cast<double>(out);
  for (std::int64_t o = 0; o < out; ++o) {
    t.offset[o] = static_cast<std::int32_t>(t.weight.size());
    if (interp == Interp::Area) {
      // Exact box integration over the output pixel's footprint [o*s, (o+1)*s).
      const double a = o * s, b = std::min<double>((o + 1) * s, static_cast<double>(in));
      std::int64_t i0 = static_cast<std::int64_t>(std::floor(a));
      std::int64_t i1 = std::min<std::int64_t>(static_cast<std::int64_t>(std::ceil(b)), in);
      if (i1 <= i0) i1 = i0 + 1;
      t.start[o] = static_cast<std::int32_t>(i0);
      int n = 0;
      for (std::int64_t i = i0; i < i1; ++i) {
        double ov = std::min<double>(b, i + 1.0) - std::max<double>(a, static_cast<double>(i));
        if (ov < 0) ov = 0;
        t.weight.push_back(static_cast<float>(ov / (b - a)));
        ++n;
      }
      t.count[o] = n;
    } else {
      // Half-pixel centres, edges clamped: OpenCV INTER_LINEAR, torch align_corners=False.
      double src = (o + 0.5) * s - 0.5;
      if (src < 0) src = 0;
      std::int64_t i0 = static_cast<std::int64_t>(std::floor(src));
      double f = src - static_cast<double>(i0);
      if (i0 >= in - 1) {
        i0 = in - 1;
        f = 0;
      }
      t.start[o] = static_cast<std::int32_t>(i0);
      if (f == 0) {
        t.count[o] = 1;
        t.weight.push_back(1.0f);
      } else {
        t.count[o] = 2;
        t.weight.push_back(static_cast<float>(1.0 - f));
        t.weight.push_back(static_cast<float>(f));
      }
    }
  }
  return t;
}

namespace cpu {
namespace {

// The hot loop: a weighted sum of input rows into a float row (W*C wide). Built twice, for AVX2 with FMA and for
// the baseline, and picked once by CPU features (GCC's target_clones "arch=" clones test the CPU *model*, which
// sends AMD CPUs to the baseline; a plain "avx2" clone has no vfmadd).
#define XFER_ACCUMULATE_BODY                                                                    \
  const std::uint8_t* r0 = base + static_cast<std::int64_t>(start) * row_bytes;                 \
  const float w0 = w[0];                                                                          \
  for (std::int64_t j = 0; j < row_bytes; ++j) acc[j] = w0 * static_cast<float>(r0[j]);          \
  for (int k = 1; k < count; ++k) {                                                               \
    const std::uint8_t* r = r0 + k * row_bytes;                                                   \
    const float wk = w[k];                                                                        \
    for (std::int64_t j = 0; j < row_bytes; ++j) acc[j] += wk * static_cast<float>(r[j]);       \
  }

using AccumulateFn = void (*)(const std::uint8_t*, std::int64_t, std::int32_t, std::int32_t, const float*, float*);

void accumulate_rows_base(const std::uint8_t* base, std::int64_t row_bytes, const std::int32_t start,
                          const std::int32_t count, const float* w, float* acc) {
  XFER_ACCUMULATE_BODY
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"))) void accumulate_rows_avx2(const std::uint8_t* base, std::int64_t row_bytes,
                                                               const std::int32_t start, const std::int32_t count,
                                                               const float* w, float* acc) {
  XFER_ACCUMULATE_BODY
}
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void accumulate_rows_avx512(
    const std::uint8_t* base, std::int64_t row_bytes, const std::int32_t start, const std::int32_t count,
    const float* w, float* acc) {
  XFER_ACCUMULATE_BODY
}
#endif
#undef XFER_ACCUMULATE_BODY

// Area resampling by a whole factor (256 -> 32: 8 rows and 8 columns per output pixel, every weight equal) needs
// no float multiply per input byte: rows are summed as integers (u8 into u16: zero-extend and add, 16 lanes per
// AVX2 instruction against 8 for the float path), and one scale by 1/(fy*fx) is applied to the few sums left.
// Sums of at most 257 bytes fit u16; for power-of-two factors the result is bit-identical to the float path.
#define XFER_BOX_BODY                                                                                     \
  for (std::int64_t j = 0; j < row_bytes; ++j) acc[j] = r0[j];                                            \
  for (int k = 1; k < fy; ++k) {                                                                          \
    const std::uint8_t* r = r0 + k * row_bytes;                                                           \
    for (std::int64_t j = 0; j < row_bytes; ++j) acc[j] = static_cast<std::uint16_t>(acc[j] + r[j]);      \
  }                                                                                                       \
  /* Power-of-two fx: log2(fx) whole-row shifted adds leave each output's sum at its first pixel. */      \
  if (pow2)                                                                                               \
    for (std::int64_t step = c; step < fx * c; step *= 2)                                                 \
      for (std::int64_t j = 0; j + step < row_bytes; ++j) acc[j] = static_cast<std::uint16_t>(acc[j] + acc[j + step]);

using BoxFn = void (*)(const std::uint8_t*, std::int64_t, int, std::int64_t, int, bool, std::uint16_t*);

void box_rows_base(const std::uint8_t* r0, std::int64_t row_bytes, int fy, std::int64_t c, int fx, bool pow2,
                   std::uint16_t* acc) {
  XFER_BOX_BODY
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) void box_rows_avx2(const std::uint8_t* r0, std::int64_t row_bytes, int fy,
                                                   std::int64_t c, int fx, bool pow2, std::uint16_t* acc) {
  XFER_BOX_BODY
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) void box_rows_avx512(const std::uint8_t* r0, std::int64_t row_bytes,
                                                                         int fy, std::int64_t c, int fx, bool pow2,
                                                                         std::uint16_t* acc) {
  XFER_BOX_BODY
}
#endif
#undef XFER_BOX_BODY

// Area resampling by exactly 8 along the row (256 -> 32, 224 -> 28) on a CPU with VBMI: one byte permute gathers
// each channel's 8 bytes of an output pixel into a quadword and vpsadbw sums them, so a load, a permute, a sum and
// an add cover 48-64 input bytes of a row; widening to u16 and halving the row three times took ~2x the
// instructions (a profile had them at 55% of the kernel on a FERG-size pass). Writes v[ox * c + ch] = sum * inv,
// the same floats the u16 path gives, and up to 8 floats past out_w * c (the caller's slack).
#if defined(__GNUC__) && defined(__x86_64__)
bool has_box8() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vbmi");
}

// The permute for c channels: quadword q takes byte k of output pixel q / c's channel q % c (8 pixels x c bytes).
const std::uint8_t* box8_permute(int c) {
  struct Tables {
    alignas(64) std::uint8_t t[5][64] = {};
    Tables() {
      for (int ch : {1, 3, 4}) {
        const int lanes = 8 / ch * ch;
        for (int q = 0; q < lanes; ++q)
          for (int k = 0; k < 8; ++k) t[ch][q * 8 + k] = static_cast<std::uint8_t>((q / ch) * 8 * ch + k * ch + q % ch);
      }
    }
  };
  static const Tables tables;
  return tables.t[c];
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"))) void box8_rows_vbmi(
    const std::uint8_t* r0, std::int64_t row_bytes, int fy, int c, std::int64_t out_w, float inv, float* v,
    std::uint16_t* scratch) {
  const int pixels = 8 / c;             // output pixels a load covers: 8 (gray), 2 (RGB, RGBA)
  const int lanes = pixels * c;         // quadwords holding sums: 8, 6, 8
  const std::int64_t step = 8 * lanes;  // input bytes a load covers: 64, 48, 64
  const __m512i perm = _mm512_load_si512(box8_permute(c));
  const __m512i zero = _mm512_setzero_si512();
  const std::int64_t loads = (out_w + pixels - 1) / pixels;
  // Row by row, each row front to back, the sums kept in `scratch` (64 bytes a load, within the row's 2 bytes a
  // byte): one sequential stream the hardware prefetcher follows. Taking the fy rows in lockstep instead was as
  // fast on cached images and 1.2x slower on images streamed from memory (0.36 vs 0.30 s a FERG-size pass).
  for (int r = 0; r < fy; ++r) {
    const std::uint8_t* row = r0 + r * row_bytes;
    for (std::int64_t s = 0; s < loads; ++s) {
      const std::int64_t at = s * step, left = row_bytes - at;  // a load never reads past its row (or the image)
      const __mmask64 m = left >= 64 ? ~0ULL : (1ULL << left) - 1;
      const __m512i x = _mm512_maskz_loadu_epi8(m, row + at);
      __m512i sum = _mm512_sad_epu8(_mm512_maskz_permutexvar_epi8(~0ULL, perm, x), zero);
      std::uint16_t* keep = scratch + s * 32;
      if (r > 0) sum = _mm512_add_epi64(sum, _mm512_loadu_si512(keep));
      _mm512_storeu_si512(keep, sum);
    }
  }
  const __m256 scale = _mm256_set1_ps(inv);
  for (std::int64_t s = 0; s < loads; ++s)
    _mm256_storeu_ps(v + s * lanes, _mm256_mul_ps(_mm512_cvtepu64_ps(_mm512_loadu_si512(scratch + s * 32)), scale));
}
#endif

// One row of the dispatch table: a target the kernel was built for, whether this CPU runs it, its two loops.
using Box8Fn = void (*)(const std::uint8_t*, std::int64_t, int, int, std::int64_t, float, float*, std::uint16_t*);

struct Target {
  const char* name;
  bool (*supported)();
  AccumulateFn accumulate;
  BoxFn box;
  Box8Fn box8;  // the row for resampling by 8 where the CPU has VBMI (see has_box8), or null
};

bool always() { return true; }
#if defined(__GNUC__) && defined(__x86_64__)
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool has_avx512() {
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

// Widest first: the default is the first row this CPU supports.
const Target kTargets[] = {
#if defined(__GNUC__) && defined(__x86_64__)
    {"avx512", has_avx512, accumulate_rows_avx512, box_rows_avx512, box8_rows_vbmi},
    {"avx2", has_avx2, accumulate_rows_avx2, box_rows_avx2, nullptr},
#endif
    {"baseline", always, accumulate_rows_base, box_rows_base, nullptr},
};

const Target* widest_target() {
  for (const Target& t : kTargets)
    if (t.supported()) return &t;
  return &kTargets[std::size(kTargets) - 1];
}

std::atomic<const Target*> g_target{widest_target()};

void accumulate_rows(const std::uint8_t* base, std::int64_t row_bytes, std::int32_t start, std::int32_t count,
                     const float* w, float* acc) {
  g_target.load(std::memory_order_relaxed)->accumulate(base, row_bytes, start, count, w, acc);
}

#if defined(__GNUC__) && defined(__x86_64__)
const bool g_has_box8 = has_box8();
#else
const bool g_has_box8 = false;
#endif

// The current target's row for resampling by 8, when it has one, the CPU has VBMI and the row fits it.
bool box8(const std::uint8_t* r0, std::int64_t row_bytes, int fy, std::int64_t c, int fx, std::int64_t out_w, float inv,
          float* v, std::uint16_t* scratch) {
  const Box8Fn row = g_target.load(std::memory_order_relaxed)->box8;
  if (row == nullptr || !g_has_box8 || fx != 8 || (c != 1 && c != 3 && c != 4)) return false;
  row(r0, row_bytes, fy, static_cast<int>(c), out_w, inv, v, scratch);
  return true;
}

void box_rows(const std::uint8_t* r0, std::int64_t row_bytes, int fy, std::int64_t c, int fx, bool pow2,
              std::uint16_t* acc) {
  g_target.load(std::memory_order_relaxed)->box(r0, row_bytes, fy, c, fx, pow2, acc);
}

// The whole factors of a box resampling, or {0, 0} when the integer path does not apply.
std::pair<int, int> box_factors(const ImageView& im, const Params& p) {
  if (p.interp != Interp::Area || im.h % p.out_h != 0 || im.w % p.out_w != 0) return {0, 0};
  const std::int64_t fy = im.h / p.out_h, fx = im.w / p.out_w;
  if (fy * fx > 257) return {0, 0};  // a sum of fy*fx bytes must fit u16
  return {static_cast<int>(fy), static_cast<int>(fx)};
}

template <int C>
void horizontal_box(const std::uint16_t* acc, int fx, bool pow2, std::int64_t out_w, float inv, float* v) {
  if (pow2) {  // box_rows already summed each output's fx pixels into its first one
    for (std::int64_t ox = 0; ox < out_w; ++ox)
      for (int c = 0; c < C; ++c) v[ox * C + c] = static_cast<float>(acc[ox * fx * C + c]) * inv;
    return;
  }
  for (std::int64_t ox = 0; ox < out_w; ++ox) {
    const std::uint16_t* a = acc + ox * fx * C;
    std::uint32_t s[C] = {};
    for (int j = 0; j < fx; ++j) {
      for (int c = 0; c < C; ++c) s[c] += a[j * C + c];
    }
    for (int c = 0; c < C; ++c) v[ox * C + c] = static_cast<float>(s[c]) * inv;
  }
}

template <int C>
void horizontal(const float* acc, const Taps& tx, std::int64_t out_w, float* v /* out_w * C */) {
  for (std::int64_t ox = 0; ox < out_w; ++ox) {
    const float* w = tx.weight.data() + tx.offset[ox];
    const float* a = acc + static_cast<std::int64_t>(tx.start[ox]) * C;
    float s[C] = {};
    for (int j = 0; j < tx.count[ox]; ++j) {
      for (int c = 0; c < C; ++c) s[c] += w[j] * a[j * C + c];
    }
    for (int c = 0; c < C; ++c) v[ox * C + c] = s[c];
  }
}

// Mix channels (BT.601 gray, replicate or pass RGB, drop alpha) and normalise.
void emit_row(const float* v, std::int64_t c_in, const Params& p, float* out_row, std::int64_t plane) {
  const std::int64_t W = p.out_w;
  if (p.out_c == 1) {
    const float s = p.scale[0], b = p.bias[0];
    if (c_in == 1) {
      for (std::int64_t x = 0; x < W; ++x) out_row[x] = v[x] * s + b;
    } else {
      for (std::int64_t x = 0; x < W; ++x) {
        const float* px = v + x * c_in;
        out_row[x] = (kGrayR * px[0] + kGrayG * px[1] + kGrayB * px[2]) * s + b;
      }
    }
  } else {
    for (int c = 0; c < 3; ++c) {
      const float s = p.scale[c], b = p.bias[c];
      float* o = out_row + c * plane;
      const int src = c_in == 1 ? 0 : c;
      for (std::int64_t x = 0; x < W; ++x) o[x] = v[x * c_in + src] * s + b;
    }
  }
}

void process_rows(const ImageView& im, const Params& p, const Taps& ty, const Taps& tx, std::int64_t y0,
                  std::int64_t y1, float* out_image, ResizeScratch& st, Ahead* ahead) {
  const std::int64_t row_bytes = im.w * im.c;
  const std::int64_t plane = p.out_h * p.out_w;
  st.acc.resize(static_cast<std::size_t>(row_bytes));
  st.v.resize(static_cast<std::size_t>(p.out_w * im.c));
  for (std::int64_t oy = y0; oy < y1; ++oy) {
    if (ahead) ahead->step();
    accumulate_rows(im.data, row_bytes, ty.start[oy], ty.count[oy], ty.weight.data() + ty.offset[oy], st.acc.data());
    switch (im.c) {
      case 1: horizontal<1>(st.acc.data(), tx, p.out_w, st.v.data()); break;
      case 3: horizontal<3>(st.acc.data(), tx, p.out_w, st.v.data()); break;
      default: horizontal<4>(st.acc.data(), tx, p.out_w, st.v.data()); break;
    }
    emit_row(st.v.data(), im.c, p, out_image + oy * p.out_w, plane);
  }
}

void process_rows_box(const ImageView& im, const Params& p, int fy, int fx, std::int64_t y0, std::int64_t y1,
                      float* out_image, ResizeScratch& st, Ahead* ahead) {
  const std::int64_t row_bytes = im.w * im.c;
  const std::int64_t plane = p.out_h * p.out_w;
  const float inv = 1.0f / static_cast<float>(fy * fx);
  const bool pow2 = (fx & (fx - 1)) == 0;
  st.acc16.resize(static_cast<std::size_t>(row_bytes + 64));  // + room for the VBMI row's sums at one output pixel
  st.v.resize(static_cast<std::size_t>(p.out_w * im.c + 8));  // + the VBMI row's slack
  for (std::int64_t oy = y0; oy < y1; ++oy) {
    if (ahead) ahead->step();
    if (box8(im.data + oy * fy * row_bytes, row_bytes, fy, im.c, fx, p.out_w, inv, st.v.data(), st.acc16.data())) {
      emit_row(st.v.data(), im.c, p, out_image + oy * p.out_w, plane);
      continue;
    }
    box_rows(im.data + oy * fy * row_bytes, row_bytes, fy, im.c, fx, pow2, st.acc16.data());
    switch (im.c) {
      case 1: horizontal_box<1>(st.acc16.data(), fx, pow2, p.out_w, inv, st.v.data()); break;
      case 3: horizontal_box<3>(st.acc16.data(), fx, pow2, p.out_w, inv, st.v.data()); break;
      default: horizontal_box<4>(st.acc16.data(), fx, pow2, p.out_w, inv, st.v.data()); break;
    }
    emit_row(st.v.data(), im.c, p, out_image + oy * p.out_w, plane);
  }
}

}  // namespace

int default_threads() {
  int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = std::max(1, CPU_COUNT(&set));
  if (std::FILE* f = std::fopen("/sys/fs/cgroup/cpu.max", "r")) {
    char quota[32] = {0};
    long long period = 0;
    if (std::fscanf(f, "%31s %lld", quota, &period) == 2 && std::strcmp(quota, "max") != 0 && period > 0) {
      const long long q = std::atoll(quota);
      if (q > 0) n = std::max(1, std::min(n, static_cast<int>((q + period - 1) / period)));
    }
    std::fclose(f);
  }
#endif
  return n;
}

void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, int threads) {
  const std::int64_t n = static_cast<std::int64_t>(images.size());
  if (n == 0) return;
  if (threads < 1) threads = default_threads();
  // Work items are (image, block of output rows): whole images when there are
  // enough of them, row blocks when a few large images must still use every thread.
  const std::int64_t blocks = n >= threads ? 1 : std::min<std::int64_t>(p.out_h, (4 * static_cast<std::int64_t>(threads) + n - 1) / n);
  const std::int64_t items = n * blocks;
  const std::int64_t image_floats = static_cast<std::int64_t>(p.out_c) * p.out_h * p.out_w;

  // Same-size batches share one set of taps; lists of mixed sizes build their own.
  const bool uniform = std::all_of(images.begin(), images.end(), [&](const ImageView& im) {
    return im.h == images[0].h && im.w == images[0].w;
  });
  Taps ty0, tx0;
  if (uniform) {
    ty0 = make_taps(images[0].h, p.out_h, p.interp);
    tx0 = make_taps(images[0].w, p.out_w, p.interp);
  }

  struct Scratch : ResizeScratch {
    std::int64_t taps_for = -1;
  };
  parallel_for<Scratch>(items, threads, [&](std::int64_t item, Scratch& st) {
    const std::int64_t i = item / blocks, b = item % blocks;
    const ImageView& im = images[static_cast<std::size_t>(i)];
    if (!uniform && st.taps_for != i) {
      st.ty = make_taps(im.h, p.out_h, p.interp);
      st.tx = make_taps(im.w, p.out_w, p.interp);
      st.taps_for = i;
    }
    const std::int64_t y0 = p.out_h * b / blocks, y1 = p.out_h * (b + 1) / blocks;
    const auto [fy, fx] = box_factors(im, p);
    if (fy > 0) {
      process_rows_box(im, p, fy, fx, y0, y1, out + i * image_floats, st, nullptr);
      return;
    }
    const Taps& Ty = uniform ? ty0 : st.ty;
    const Taps& Tx = uniform ? tx0 : st.tx;
    process_rows(im, p, Ty, Tx, y0, y1, out + i * image_floats, st, nullptr);
  });
}

void preprocess_image(const ImageView& im, const Params& p, float* out, ResizeScratch& s, Ahead* ahead) {
  const auto [fy, fx] = box_factors(im, p);
  if (fy > 0) {
    process_rows_box(im, p, fy, fx, 0, p.out_h, out, s, ahead);
    return;
  }
  if (s.taps_h != im.h || s.taps_w != im.w) {
    s.ty = make_taps(im.h, p.out_h, p.interp);
    s.tx = make_taps(im.w, p.out_w, p.interp);
    s.taps_h = im.h;
    s.taps_w = im.w;
  }
  process_rows(im, p, s.ty, s.tx, 0, p.out_h, out, s, ahead);
}

void read_exactly(int fd, std::uint8_t* buf, std::int64_t bytes, std::int64_t offset) {
#if defined(__unix__) || defined(__APPLE__)
  std::int64_t done = 0;
  while (done < bytes) {
    const ssize_t got = ::pread(fd, buf + done, static_cast<std::size_t>(bytes - done), static_cast<off_t>(offset + done));
    if (got > 0) {
      done += got;
    } else if (got == 0) {
      throw std::runtime_error("images file: ends before byte " + std::to_string(offset + bytes) + " (read " +
                               std::to_string(done) + " of " + std::to_string(bytes) + " bytes at offset " +
                               std::to_string(offset) + "): shorter than its header says");
    } else if (errno != EINTR) {
      throw std::runtime_error("images file: reading " + std::to_string(bytes) + " bytes at offset " +
                               std::to_string(offset) + " failed: " + std::strerror(errno));
    }
  }
#else
  (void)fd, (void)buf, (void)bytes, (void)offset;
  throw std::runtime_error("images file: reading by file descriptor needs POSIX pread");
#endif
}

void preprocess_file(int fd, std::int64_t offset, std::int64_t h, std::int64_t w, std::int64_t c,
                     const std::vector<std::int64_t>& index, const Params& p, float* out, int threads) {
  const std::int64_t bytes = h * w * c, image_floats = static_cast<std::int64_t>(p.out_c) * p.out_h * p.out_w;
  struct Scratch : ResizeScratch {
    std::vector<std::uint8_t> pixels;
  };
  parallel_for<Scratch>(static_cast<std::int64_t>(index.size()), threads, [&](std::int64_t i, Scratch& s) {
    s.pixels.resize(static_cast<std::size_t>(bytes));
    read_exactly(fd, s.pixels.data(), bytes, offset + index[static_cast<std::size_t>(i)] * bytes);
    preprocess_image(ImageView{s.pixels.data(), h, w, c}, p, out + i * image_floats, s, nullptr);
  });
}

void read_file(int fd, std::int64_t offset, std::int64_t image_bytes, const std::vector<std::int64_t>& index, int threads) {
  if (threads < 1) threads = default_threads();
  parallel_for<std::vector<std::uint8_t>>(static_cast<std::int64_t>(index.size()), threads,
                                          [&](std::int64_t i, std::vector<std::uint8_t>& buf) {
    buf.resize(static_cast<std::size_t>(image_bytes));
    read_exactly(fd, buf.data(), image_bytes, offset + index[static_cast<std::size_t>(i)] * image_bytes);
  });
}

std::vector<std::string> targets(bool supported_only) {
  std::vector<std::string> out;
  for (const Target& t : kTargets)
    if (!supported_only || t.supported()) out.emplace_back(t.name);
  return out;
}

std::string target() { return g_target.load()->name; }

void set_target(const std::string& name) {
  for (const Target& t : kTargets) {
    if (name != t.name) continue;
    if (!t.supported()) throw std::invalid_argument("kernel target '" + name + "' is not supported by this CPU");
    g_target.store(&t);
    return;
  }
  std::string known;
  for (const Target& t : kTargets) known += (known.empty() ? "" : ", ") + std::string(t.name);
  throw std::invalid_argument("unknown kernel target '" + name + "' (expected one of: " + known + ")");
}

std::uint64_t read_all(const std::vector<ImageView>& images, int threads) {
  if (threads < 1) threads = default_threads();
  std::atomic<std::uint64_t> folded{0};
  parallel_for<int>(static_cast<std::int64_t>(images.size()), threads, [&](std::int64_t i, int&) {
    const ImageView& im = images[static_cast<std::size_t>(i)];
    const std::int64_t bytes = im.h * im.w * im.c;
    std::uint64_t x = 0;
    std::int64_t j = 0;
    for (; j + 8 <= bytes; j += 8) {
      std::uint64_t word;
      std::memcpy(&word, im.data + j, 8);
      x ^= word;
    }
    for (; j < bytes; ++j) x ^= im.data[j];
    folded.fetch_xor(x, std::memory_order_relaxed);
  });
  return folded.load();
}

}  // namespace cpu
}  // namespace xfer
