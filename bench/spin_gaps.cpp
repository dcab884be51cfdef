// How often this machine stops a running thread, and for how long: one thread
// reads the steady clock in a loop and counts the gaps between two reads
// (interrupts, the host taking the vCPU away, the scheduler). A latency
// percentile cannot be lower than what such gaps allow; bench/run_api_bench.sh
// runs it next to the half-load rows.
//
// Usage: spin_gaps [SECONDS]   (default 5)
// Prints one line: the gaps longer than 200 us and 1 ms, and the longest.
#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  if (!(seconds > 0)) {
    std::fprintf(stderr, "usage: spin_gaps [SECONDS > 0]\n");
    return 2;
  }
  const auto start = clock::now();
  const auto end =
      start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  long over_200us = 0;
  long over_1ms = 0;
  clock::duration longest{};
  for (auto prev = start;;) {
    const auto now = clock::now();
    const auto gap = now - prev;
    over_200us += gap > std::chrono::microseconds(200) ? 1 : 0;
    over_1ms += gap > std::chrono::milliseconds(1) ? 1 : 0;
    longest = gap > longest ? gap : longest;
    prev = now;
    if (now >= end)
      break;
  }
  std::printf("spin_gaps: %.1f s spinning: %ld gaps > 200 us, %ld > 1 ms, longest %.0f us\n",
              seconds, over_200us, over_1ms,
              std::chrono::duration<double, std::micro>(longest).count());
  return 0;
}
