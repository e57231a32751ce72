// The convolution front on the CPU: per image, each conv reads a zero-bordered copy of its input kept per thread
// (borders written once); a pool right after a conv runs inside it when its windows do not overlap, any other
// reads the previous layer's output; the last layer writes the caller's row.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "front.h"
#include "preprocess.h"

namespace xfer {

void prepare_conv(ConvLayer& L, const float* weight, const float* bias) {
  L.in_h_padded = L.in_h + L.pad_top + L.pad_bottom;
  const std::int64_t in_w_padded = L.in_w + L.pad_left + L.pad_right;
  L.out_h = L.in_h_padded - L.kh + 1;
  L.out_w = in_w_padded - L.kw + 1;
  const std::int64_t round_row = (L.out_w + kWidest - 1) / kWidest * kWidest;
  // The channel loop's block: of 8, 6 and 4 output pixels, the one that wastes the fewest columns (ties: wider).
  L.col_block = 8;
  for (int b : {6, 4})
    if ((L.out_w + b - 1) / b * b < (L.out_w + L.col_block - 1) / L.col_block * L.col_block) L.col_block = b;
  const std::int64_t round_col = (L.out_w + L.col_block - 1) / L.col_block * L.col_block;
  // Both loops read whole vectors/blocks past the last output column: the buffer is wide enough that they stay in it.
  L.in_w_buffer = std::max(round_row, round_col) + L.kw - 1;
  L.by_channels = L.co >= kWidest;
  const std::int64_t taps = L.ci * L.kh * L.kw;
  if (L.by_channels) {
    L.co_padded = (L.co + kWidest - 1) / kWidest * kWidest;
    L.w_channels.assign(static_cast<std::size_t>(taps * L.co_padded), 0.0f);
    for (std::int64_t o = 0; o < L.co; ++o)
      for (std::int64_t t = 0; t < taps; ++t) L.w_channels[static_cast<std::size_t>(t * L.co_padded + o)] = weight[o * taps + t];
  } else {
    L.co_padded = (L.co + kGroup - 1) / kGroup * kGroup;
    L.w_rows.assign(static_cast<std::size_t>(L.co_padded * taps), 0.0f);  // [co / kGroup][tap][co % kGroup]
    for (std::int64_t o = 0; o < L.co; ++o)
      for (std::int64_t t = 0; t < taps; ++t)
        L.w_rows[static_cast<std::size_t>((o / kGroup * taps + t) * kGroup + o % kGroup)] = weight[o * taps + t];
  }
  L.bias_padded.assign(static_cast<std::size_t>(L.co_padded), 0.0f);
  std::copy(bias, bias + L.co, L.bias_padded.begin());
}

namespace cpu {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")
#define XFER_FRONT_NS front_avx512
#define XFER_VW 16
#include "front_impl.inc"
#undef XFER_FRONT_NS
#undef XFER_VW
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define XFER_FRONT_NS front_avx2
#define XFER_VW 8
#include "front_impl.inc"
#undef XFER_FRONT_NS
#undef XFER_VW
#pragma GCC pop_options

#define XFER_FRONT_NS front_baseline
#define XFER_VW 4
#include "front_impl.inc"
#undef XFER_FRONT_NS
#undef XFER_VW

namespace {

struct Loops {
  void (*conv)(const ConvLayer&, const float*, std::int64_t, float*, const PoolLayer*, float*, Ahead*);
  void (*pool)(const PoolLayer&, const float*, float*, float*);
};

Loops loops_for(const std::string& target) {
  if (target == "avx512") return {front_avx512::conv, front_avx512::max_pool};
  if (target == "avx2") return {front_avx2::conv, front_avx2::max_pool};
  return {front_baseline::conv, front_baseline::max_pool};
}

struct FrontScratch {
  std::vector<std::vector<float>> padded;  // one zero-bordered input per conv layer
  std::vector<float> ping, pong;
  std::vector<float> row;  // a pool's window rows reduced to one, or a fused pool's running maxima
};

std::int64_t layer_out_size(const FrontLayer& l) {
  return l.is_conv ? l.conv.co * l.conv.out_h * l.conv.out_w : l.pool.c * l.pool.out_h * l.pool.out_w;
}

// A max pool right after a conv runs inside it when its windows do not overlap (LeNet's 2x2 stride 2): each conv
// row is folded into the window maxima as it is computed, and the conv's full output is never written.
const PoolLayer* fused_pool(const Front& f, std::size_t k) {
  if (!f.layers[k].is_conv || k + 1 >= f.layers.size() || f.layers[k + 1].is_conv) return nullptr;
  const PoolLayer& P = f.layers[k + 1].pool;
  return P.kh == P.sh && P.kw == P.sw ? &P : nullptr;
}

// Floats of running maxima a fused pool needs: a row of each of kGroup channels (row loop), or a vector of
// channels per pooled column (channel loop).
std::int64_t fused_scratch(const ConvLayer& L) {
  return std::max(kGroup * ((L.out_w + kWidest - 1) / kWidest * kWidest), kWidest * L.out_w);
}

// Scratch sizes every image of a front needs, worked out once per call.
struct Sizes {
  std::int64_t biggest = 1, widest_row = 1;
};

Sizes sizes_of(const Front& f) {
  Sizes z;
  for (std::size_t k = 0; k < f.layers.size(); ++k) {
    const FrontLayer& l = f.layers[k];
    z.biggest = std::max(z.biggest, layer_out_size(l));
    z.widest_row = std::max(z.widest_row, l.is_conv ? (fused_pool(f, k) ? fused_scratch(l.conv) : 1) : l.pool.in_w);
  }
  return z;
}

void ready(const Front& f, const Sizes& z, FrontScratch& s) {
  if (!s.padded.empty()) return;
  for (const auto& l : f.layers)
    s.padded.emplace_back(l.is_conv ? static_cast<std::size_t>(l.conv.ci * l.conv.in_h_padded * l.conv.in_w_buffer) : 0, 0.0f);
  s.ping.assign(static_cast<std::size_t>(z.biggest), 0.0f);
  s.pong.assign(static_cast<std::size_t>(z.biggest), 0.0f);
  s.row.assign(static_cast<std::size_t>(z.widest_row), 0.0f);
}

// One image's c*h*w floats at `cur` through every layer into its out_features floats at `dst_row`.
void run_image(const Front& f, const Loops& loops, const float* cur, float* dst_row, FrontScratch& s, Ahead* ahead) {
  bool ping = true;
  for (std::size_t k = 0; k < f.layers.size(); ++k) {
    const FrontLayer& l = f.layers[k];
    const PoolLayer* fused = fused_pool(f, k);
    const std::size_t last = fused ? k + 1 : k;  // the layer whose output this step writes
    float* dst = last + 1 == f.layers.size() ? dst_row : (ping ? s.ping.data() : s.pong.data());
    ping = !ping;
    if (l.is_conv) {
      const ConvLayer& L = l.conv;
      float* p = s.padded[k].data();
      for (std::int64_t c = 0; c < L.ci; ++c)
        for (std::int64_t y = 0; y < L.in_h; ++y)
          std::memcpy(p + (c * L.in_h_padded + y + L.pad_top) * L.in_w_buffer + L.pad_left,
                      cur + (c * L.in_h + y) * L.in_w, static_cast<std::size_t>(L.in_w) * sizeof(float));
      loops.conv(L, p, L.in_w_buffer, dst, fused, s.row.data(), ahead);
    } else {
      loops.pool(l.pool, cur, dst, s.row.data());
    }
    cur = dst;
    k = last;
  }
}

}  // namespace

void front(const Front& f, const float* in, std::int64_t n, float* out, int threads) {
  const Loops loops = loops_for(target());
  const Sizes z = sizes_of(f);
  const std::int64_t in_size = f.c * f.h * f.w;
  parallel_for<FrontScratch>(n, threads, [&](std::int64_t i, FrontScratch& s) {
    ready(f, z, s);
    run_image(f, loops, in + i * in_size, out + i * f.out_features, s, nullptr);
  });
}

namespace {

// Per thread: the front's buffers, the resize's, the preprocessed image, the prefetcher and the pixels read by pread.
struct FusedScratch : FrontScratch {
  ResizeScratch resize;
  std::vector<float> input;
  Ahead ahead;
  std::vector<std::uint8_t> pixels;
};

// n images in blocks of kFusedBlock, each preprocessed and run through the front. `fetch(b, i, i1, s)` returns
// image i of block b (ending at i1) and the prefetcher to step while it is computed, or null.
template <class Fetch>
void fused_blocks(const Front& f, std::int64_t n, const Params& p, float* out, int threads, Fetch fetch) {
  const Loops loops = loops_for(target());
  const Sizes z = sizes_of(f);
  parallel_for<FusedScratch>((n + kFusedBlock - 1) / kFusedBlock, threads, [&](std::int64_t b, FusedScratch& s) {
    ready(f, z, s);
    s.input.resize(static_cast<std::size_t>(f.c * f.h * f.w));
    const std::int64_t i1 = std::min(n, (b + 1) * kFusedBlock);
    for (std::int64_t i = b * kFusedBlock; i < i1; ++i) {
      const auto [im, ahead] = fetch(b, i, i1, s);
      preprocess_image(im, p, s.input.data(), s.resize, ahead);
      run_image(f, loops, s.input.data(), out + i * f.out_features, s, ahead);
    }
  });
}

}  // namespace

void front_images(const Front& f, const std::vector<ImageView>& images, const Params& p, float* out, int threads) {
  const std::int64_t n = static_cast<std::int64_t>(images.size());
  fused_blocks(f, n, p, out, threads, [&](std::int64_t b, std::int64_t i, std::int64_t i1, FusedScratch& s) {
    // after a block's last image, the first of the block this thread most likely takes next
    const std::int64_t j = i + 1 < i1 ? i + 1 : (b + threads) * kFusedBlock;
    const ImageView* nx = j < n ? &images[static_cast<std::size_t>(j)] : nullptr;
    s.ahead.start(nx ? nx->data : nullptr, nx ? nx->h * nx->w * nx->c : 0, p.out_h);
    return std::pair<ImageView, Ahead*>{images[static_cast<std::size_t>(i)], &s.ahead};
  });
}

void front_file(const Front& f, int fd, std::int64_t offset, std::int64_t h, std::int64_t w, std::int64_t c,
                const std::vector<std::int64_t>& index, const Params& p, float* out, int threads) {
  const std::int64_t bytes = h * w * c;
  fused_blocks(f, static_cast<std::int64_t>(index.size()), p, out, threads,
               [&](std::int64_t, std::int64_t i, std::int64_t, FusedScratch& s) {
                 s.pixels.resize(static_cast<std::size_t>(bytes));
                 read_exactly(fd, s.pixels.data(), bytes, offset + index[static_cast<std::size_t>(i)] * bytes);
                 return std::pair<ImageView, Ahead*>{ImageView{s.pixels.data(), h, w, c}, nullptr};
               });
}

}  // namespace cpu
}  // namespace xfer
