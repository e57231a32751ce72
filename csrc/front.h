// The convolution front: a chain of small Conv(+Relu) and MaxPool layers at the start of a network, run per image
// with every intermediate in cache. ONNX Runtime blocks channels by 16 (NCHWc), which leaves a 1- or 6-channel
// convolution at a fraction of the FMA rate; these loops vectorise along the row when channels are few and across
// channels when there are 16 or more, so the lanes are full either way.
#pragma once

#include <cstdint>
#include <vector>

#include "preprocess.h"

namespace xfer {

constexpr int kGroup = 8;      // output channels whose row accumulators stay in registers (few-channel loop)
constexpr int kWidest = 16;    // the widest vector in floats: buffers and channels are padded for it whatever the target

// Conv, stride 1, dilation 1, one group, explicit pads, optionally followed by Relu. Weights are kept in the
// layout each loop reads: by rows [co / kGroup][ci][kh][kw][co % kGroup], by channels [ci][kh][kw][co padded to 16].
struct ConvLayer {
  std::int64_t ci = 0, co = 0, kh = 0, kw = 0;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool relu = false;
  std::int64_t in_h = 0, in_w = 0, in_h_padded = 0, in_w_buffer = 0, out_h = 0, out_w = 0, co_padded = 0;
  bool by_channels = false;
  int col_block = 8;  // output pixels whose channel accumulators stay in registers (many-channel loop): 4, 6 or 8
  std::vector<float> w_rows, w_channels, bias_padded;
};

// MaxPool without padding, floor mode.
struct PoolLayer {
  std::int64_t c = 0, kh = 0, kw = 0, sh = 0, sw = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
};

struct FrontLayer {
  bool is_conv = true;
  ConvLayer conv;
  PoolLayer pool;
};

// A whole front: input (c, h, w) per image -> out_features floats per image (the last layer's C*H*W, NCHW order).
struct Front {
  std::int64_t c = 0, h = 0, w = 0, out_features = 0;
  std::vector<FrontLayer> layers;
};

// Lays a conv layer's weights out for its loop and fills the derived sizes; the caller set the rest.
void prepare_conv(ConvLayer& L, const float* weight, const float* bias);

namespace cpu {
// n images of c*h*w floats at `in` -> n rows of out_features floats at `out`, on up to `threads` threads, with the
// loops of the kernel's current dispatch target.
void front(const Front& f, const float* in, std::int64_t n, float* out, int threads);
// Images straight to features: each image is preprocessed (p, exactly as cpu::preprocess) into a per-thread buffer
// and run through the front while the next one is prefetched, so the read overlaps the convolutions and the
// preprocessed batch is never written. Blocks of kFusedBlock consecutive images are the threads' work items.
constexpr std::int64_t kFusedBlock = 16;
void front_images(const Front& f, const std::vector<ImageView>& images, const Params& p, float* out, int threads);
// The same from a file of back-to-back (h, w, c) uint8 images starting at `offset`: each picked image is read with
// pread into a per-thread buffer (in L2 when the front reads it). For a split too big to keep mapped: re-faulting a
// released mapping cost more than copying the bytes out of the page cache. POSIX only (throws elsewhere).
void front_file(const Front& f, int fd, std::int64_t offset, std::int64_t h, std::int64_t w, std::int64_t c,
                const std::vector<std::int64_t>& index, const Params& p, float* out, int threads);
}  // namespace cpu

}  // namespace xfer
