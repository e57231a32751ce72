// Shared types for the preprocessing kernels: one fused pass from uint8 HWC
// images to the float32 NCHW tensor a network takes.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace xfer {

enum class Interp { Area, Bilinear };

// ITU-R BT.601 luma weights (R, G, B) for colour -> gray: the one definition the CPU and CUDA kernels use
// (xfer.preprocess.GRAY_WEIGHTS is the Python one; a test checks they agree through _C.gray_weights()).
constexpr float kGrayR = 0.299f, kGrayG = 0.587f, kGrayB = 0.114f;

// A view of one C-contiguous HWC uint8 image; the kernels never own pixels.
struct ImageView {
  const std::uint8_t* data;
  std::int64_t h;
  std::int64_t w;
  std::int64_t c;
};

// out = value / 255 * (1/std) - mean/std, folded into one multiply-add per channel.
struct Params {
  std::int64_t out_h;
  std::int64_t out_w;
  int out_c;
  Interp interp;
  float scale[3];
  float bias[3];
};

// Resampling taps along one axis: output index o reads `count[o]` inputs
// starting at `start[o]` with weights `weight[offset[o] ...]`.
struct Taps {
  std::vector<std::int32_t> start;
  std::vector<std::int32_t> count;
  std::vector<std::int32_t> offset;
  std::vector<float> weight;
};

Taps make_taps(std::int64_t in, std::int64_t out, Interp interp);

// Pulls the next image into L2 a few cache lines per step while the current one is computed. The hardware
// prefetcher follows misses, and convolutions on a cached image make none, so without this a fused pass reads
// memory and computes in turn; with it the read of image k+1 overlaps the convolutions of image k.
struct Ahead {
  const std::uint8_t* next = nullptr;
  const std::uint8_t* end = nullptr;
  std::int64_t lines = 0;  // cache lines a step asks for
  std::int64_t steps = 0;  // steps taken since the last start: how many the next image will take

  static constexpr std::int64_t kLine = 64;
  // Locality 1 (prefetcht2 on x86): to L2, not L1, where it would evict the convolutions' working set; measured on
  // an AMD EPYC Zen 4, the fused FERG-size front took 0.14 s with it, 0.15-0.16 s with locality 2, 0.17-0.19 s
  // with 0 or 3 and 0.16-0.19 s with no prefetch.
  // Spread [p, p + bytes) over as many steps as the last image took (`guess` before the first); a null p (no next
  // image) makes every step a no-op.
  void start(const std::uint8_t* p, std::int64_t bytes, std::int64_t guess) {
    const std::int64_t n = std::max<std::int64_t>(steps > 0 ? steps : guess, 1);
    next = p;
    end = p ? p + bytes : p;
    lines = p ? (bytes / kLine + n) / n + 1 : 0;
    steps = 0;
  }
  void step() {
    ++steps;
    for (std::int64_t i = 0; i < lines && next < end; ++i, next += kLine) {
#if defined(__GNUC__) || defined(__clang__)
      __builtin_prefetch(next, 0, 1);
#endif
    }
  }
};

// Per-thread scratch for one image at a time: the row accumulators, and taps kept for the last image size.
struct ResizeScratch {
  std::vector<float> acc, v;
  std::vector<std::uint16_t> acc16;
  Taps ty, tx;
  std::int64_t taps_h = -1, taps_w = -1;
};

namespace cpu {
// Calls body(item, state) for every item in [0, items) on up to `threads`
// threads, each with its own default-constructed State (scratch buffers). An
// exception in any worker (bad_alloc, a failed thread start) stops the others
// at their next item and is rethrown here after every thread has joined, so it
// reaches Python as an exception instead of std::terminate.
template <class State, class Body>
void parallel_for(std::int64_t items, int threads, Body body) {
  std::atomic<std::int64_t> next{0};
  std::mutex failure_lock;
  std::exception_ptr failure;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(failure_lock);
    if (!failure) failure = e;
    next.store(items);
  };
  auto worker = [&]() {
    try {
      State state{};
      for (;;) {
        const std::int64_t item = next.fetch_add(1);
        if (item >= items) break;
        body(item, state);
      }
    } catch (...) {
      fail(std::current_exception());
    }
  };
  const int n = static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), std::max<std::int64_t>(items, 1)));
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<std::size_t>(n - 1));
    for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  } catch (...) {
    fail(std::current_exception());
  }
  worker();
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, int threads);
// Images of (h, w, c) uint8 back to back in a file from `offset`: each picked one read with pread into a per-thread
// buffer and preprocessed there. For a split too big to keep mapped: re-faulting a released mapping cost more than
// copying the bytes out of the page cache. POSIX only (throws elsewhere).
void preprocess_file(int fd, std::int64_t offset, std::int64_t h, std::int64_t w, std::int64_t c,
                     const std::vector<std::int64_t>& index, const Params& p, float* out, int threads);
// The picked images' bytes read by pread and nothing else: the read floor of a pass that reads that way.
void read_file(int fd, std::int64_t offset, std::int64_t image_bytes, const std::vector<std::int64_t>& index, int threads);
// `bytes` bytes at `offset` of fd into buf, or a one-line error naming the offset.
void read_exactly(int fd, std::uint8_t* buf, std::int64_t bytes, std::int64_t offset);
// One image into out (out_c * out_h * out_w floats) on the calling thread, exactly as preprocess does it, with a
// step of `ahead` (may be null) per output row: the start of the fused front.
void preprocess_image(const ImageView& im, const Params& p, float* out, ResizeScratch& s, Ahead* ahead);
// Reads every byte of every image once (XOR-folded so the reads cannot be optimised away): the memory floor a
// preprocessing pass over the same images is measured against.
std::uint64_t read_all(const std::vector<ImageView>& images, int threads);
// The vectorised loops are built for several targets (avx512, avx2, baseline) and dispatched at run time: the
// widest this CPU supports unless set_target pins a narrower one (XFER_KERNEL_ISA, tests of every target).
std::vector<std::string> targets(bool supported_only);
std::string target();
void set_target(const std::string& name);
// The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota.
int default_threads();
// The core clock in MHz from `trials` timed chains of `steps` x 16 dependent adds (the fastest); 0 where the
// kernel has no such chain for this architecture.
double measure_clock_mhz(int trials, std::int64_t steps);
}  // namespace cpu

#ifdef XFER_WITH_CUDA
namespace cuda {
int device_count();
// The device that owns `ptr`, or -1 when it is not CUDA device (or managed) memory.
int pointer_device(const void* ptr);
// Writes N*out_c*out_h*out_w floats on CUDA device `device`, either to host
// memory (`out_is_device` false) or straight into a device buffer the caller
// owns (IO binding). Pixels go up in bounded chunks through pinned staging on
// two streams, so the host packs chunk k+1 while the GPU copies and computes
// chunk k; buffers, streams and taps are kept per device between calls.
void preprocess(const std::vector<ImageView>& images, const Params& p, float* out, bool out_is_device, int device);
}  // namespace cuda
#endif

}  // namespace xfer
