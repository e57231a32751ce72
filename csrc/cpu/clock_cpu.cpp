// The core clock, measured: /proc/cpuinfo's "cpu MHz" is the nominal (TSC) rate in most VMs, while the cores run at
// their boost clock, so a peak reckoned from it is low and a compute floor from that peak is no floor. A chain of
// dependent register-to-register adds retires one add per cycle on every x86-64 and AArch64 core (immediate adds may
// be folded at rename on some cores; register ones are not), so adds per second is cycles per second.
#include <algorithm>
#include <chrono>
#include <cstdint>

#include "preprocess.h"

namespace xfer {
namespace cpu {

namespace {

constexpr int kAddsPerStep = 16;

#if defined(__x86_64__)
#define XFER_ADD "add %1, %0\n\t"
#elif defined(__aarch64__)
#define XFER_ADD "add %0, %0, %1\n\t"
#endif

#ifdef XFER_ADD
double adds_per_second(std::int64_t steps) {
  std::uint64_t x = 0;
  volatile std::uint64_t one_source = 1;
  const std::uint64_t one = one_source;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) {
    __asm__ volatile(XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD
                     XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD XFER_ADD
                     : "+r"(x) : "r"(one));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile std::uint64_t sink = x;
  (void)sink;
  return s > 0 ? static_cast<double>(steps) * kAddsPerStep / s : 0.0;
}
#endif

}  // namespace

double measure_clock_mhz(int trials, std::int64_t steps) {
#ifdef XFER_ADD
  double best = 0.0;  // preemption only slows a trial down: the fastest is the clock
  for (int t = 0; t < trials; ++t) best = std::max(best, adds_per_second(steps));
  return best / 1e6;
#else
  (void)trials;
  (void)steps;
  return 0.0;
#endif
}

}  // namespace cpu
}  // namespace xfer
