// quantize_pages_cuda / dequantize_pages_cuda against their host twins, for every quantizer:
// random pages (key-like rows with outlier channels, special values: zeros of both signs,
// subnormals, +/-65504), head_dim 64, 96, 128 and 256 where the model takes it, jobs of whole
// pages, of partial ranges (group-aligned), of single tokens, keys and values mixed in one batch,
// enough jobs for several grid-stride rounds. Destinations are filled with 0xFF bytes (NaN
// patterns) on both sides beforehand, so a byte the kernel misses or should not write differs;
// pages and rows are compared byte for byte. Plus: non-finite input (status and bytes as the host
// twin's flagged path), malformed jobs (skipped and reported), launch errors.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvcache/core/cuda_error.hpp"
#include "kvcache/memory/buffer.hpp"
#include "kvcache/memory/stream.hpp"
#include "kvcache/quant/kernels.hpp"
#include "quant/quant_support.hpp"
#include "support/catch.hpp"

using namespace kvcache;
using kvtest::all_quantizers;

namespace {

/// Host bytes and a device twin of the same size.
struct twin {
  std::vector<std::byte> host;
  buffer<std::byte, cuda_space> dev;
  explicit twin(std::size_t n, std::byte fill) : host(n, fill), dev(n) {
    KVCACHE_CUDA_TRY(cudaMemset(dev.data(), static_cast<int>(fill), n == 0 ? 0 : n));
  }
  void upload() {
    KVCACHE_CUDA_TRY(cudaMemcpy(dev.data(), host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  std::vector<std::byte> download() const {
    std::vector<std::byte> out(host.size());
    KVCACHE_CUDA_TRY(cudaMemcpy(out.data(), dev.data(), out.size(), cudaMemcpyDeviceToHost));
    return out;
  }
  std::byte* h(std::size_t offset) { return host.data() + offset; }
  std::byte* d(std::size_t offset) { return dev.data() + offset; }
};

template <class T>
buffer<T, cuda_space> to_device(const std::vector<T>& v) {
  buffer<T, cuda_space> b(v.size());
  KVCACHE_CUDA_TRY(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

quant_status read_status(const buffer<quant_status, cuda_space>& s) {
  quant_status out{};
  KVCACHE_CUDA_TRY(cudaMemcpy(&out, s.data(), sizeof out, cudaMemcpyDeviceToHost));
  return out;
}

/// First differing byte, or -1.
std::int64_t first_difference(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<std::int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<std::int64_t>(a.size());
}

enum class inject { none, non_finite, bad_job };

/// One batch: quantize on both sides, compare pages and status; then dequantize on both sides
/// (whole quantized ranges and sub-ranges), compare rows.
template <class Q>
void run_case(std::int32_t head_dim, std::int32_t num_pages, std::uint64_t seed, inject what,
              std::int32_t page_size = 0) {
  const std::int32_t p = page_size > 0 ? page_size : kvtest::page_size_for<Q>();
  INFO(Q::name << " head_dim " << head_dim << " page_size " << p << " pages " << num_pages
               << " seed " << seed << " inject " << static_cast<int>(what));
  std::mt19937_64 rng(seed);
  const std::size_t kb = Q::key_page_bytes(p, head_dim);
  const std::size_t vb = Q::value_page_bytes(p, head_dim);
  const std::size_t row_bytes = static_cast<std::size_t>(head_dim) * 2;

  // jobs: page i holds K (at i * (kb + vb)) and V (after it); each side gets one or two jobs
  struct plan {
    std::size_t page_offset;
    std::int32_t first, tokens;
    kv_side side;
    std::size_t rows_offset;
  };
  std::vector<plan> plans;
  std::size_t rows_total = 0;
  std::uniform_int_distribution<int> kind(0, 3);
  for (std::int32_t i = 0; i < num_pages; ++i) {
    for (kv_side side : {kv_side::key, kv_side::value}) {
      const std::int32_t g = Q::format.side(side).token_group();
      const std::int32_t groups = p / g;
      const std::size_t page_offset = (kb + vb) * static_cast<std::size_t>(i) + (side == kv_side::key ? 0 : kb);
      auto add = [&](std::int32_t first_group, std::int32_t n_groups) {
        plans.push_back({page_offset, first_group * g, n_groups * g, side, rows_total});
        rows_total += static_cast<std::size_t>(n_groups * g) * row_bytes;
      };
      switch (kind(rng)) {
        case 0: add(0, groups); break;                                   // whole page
        case 1: add(0, groups / 2); add(groups / 2, groups - groups / 2); break;  // two jobs
        case 2: add(groups - 1, 1); break;                               // the last group / token
        default: {
          std::uniform_int_distribution<std::int32_t> first(0, groups - 1);
          const std::int32_t f = first(rng);
          std::uniform_int_distribution<std::int32_t> count(1, groups - f);
          add(f, count(rng));
        }
      }
    }
  }
  // rows: mostly random, some special
  twin rows(rows_total, std::byte{0});
  {
    std::uniform_int_distribution<int> which(0, 9);
    for (const plan& pl : plans) {
      const auto r = which(rng) == 0 ? kvtest::special_rows(rng, pl.tokens, head_dim)
                                     : kvtest::random_rows(rng, pl.tokens, head_dim,
                                                           which(rng) == 1 ? 1e-5f : 1.0f);
      std::memcpy(rows.h(pl.rows_offset), r.data(), r.size() * 2);
    }
  }
  std::int32_t bad_index = -1;
  if (what == inject::non_finite) {
    // NaN, +Inf, -Inf into three jobs (identity passes them through)
    const std::uint16_t specials[] = {0x7E00, 0x7C00, 0xFC00, 0xFFFF};
    for (int k = 0; k < 4; ++k) {
      const plan& pl = plans[static_cast<std::size_t>(k) * plans.size() / 4];
      const std::size_t elem = static_cast<std::size_t>(k * 37) % (static_cast<std::size_t>(pl.tokens) * head_dim);
      std::memcpy(rows.h(pl.rows_offset + 2 * elem), &specials[k], 2);
    }
  }
  rows.upload();
  twin pages((kb + vb) * static_cast<std::size_t>(num_pages), std::byte{0xFF});

  std::vector<quantize_job> host_jobs, dev_jobs;
  for (const plan& pl : plans) {
    host_jobs.push_back({reinterpret_cast<const std::uint16_t*>(rows.h(pl.rows_offset)),
                         pages.h(pl.page_offset), pl.first, pl.tokens, pl.side});
    dev_jobs.push_back({reinterpret_cast<const std::uint16_t*>(rows.d(pl.rows_offset)),
                        pages.d(pl.page_offset), pl.first, pl.tokens, pl.side});
  }
  if (what == inject::bad_job) {
    bad_index = static_cast<std::int32_t>(dev_jobs.size() / 2);
    dev_jobs[static_cast<std::size_t>(bad_index)].first_token = p;  // outside the page
    dev_jobs[static_cast<std::size_t>(bad_index)].tokens = Q::format.side(dev_jobs[static_cast<std::size_t>(bad_index)].side).token_group();
    host_jobs.erase(host_jobs.begin() + bad_index);  // the host skips it too (it would throw)
  }
  const auto n = static_cast<std::int32_t>(dev_jobs.size());
  auto jobs_d = to_device(dev_jobs);
  buffer<quant_status, cuda_space> status_d(1);
  KVCACHE_CUDA_TRY(cudaMemset(status_d.data(), 0x7F, sizeof(quant_status)));  // reset by the launcher
  stream s;
  quant_status host_status{};
  quantize_pages_host<Q>(host_jobs.data(), static_cast<std::int32_t>(host_jobs.size()), p, head_dim,
                         &host_status);
  quantize_pages_cuda<Q>(jobs_d.data(), n, p, head_dim, status_d.data(), s);
  s.synchronize();
  const quant_status dev_status = read_status(status_d);
  if (what == inject::bad_job) {
    CHECK(dev_status.bad_job == bad_index + 1);
    CHECK(dev_status.non_finite_job == 0);
  } else {
    CHECK(dev_status == host_status);
    if (what == inject::non_finite && Q::format.key.scheme != quant_scheme::f16) {
      CHECK(dev_status.non_finite_job > 0);
    }
  }
  const auto dev_pages = pages.download();
  const std::int64_t diff = first_difference(pages.host, dev_pages);
  if (diff >= 0) {
    FAIL_CHECK("quantized pages differ at byte " << diff << " (page " << diff / static_cast<std::int64_t>(kb + vb)
                                                 << ", byte " << diff % static_cast<std::int64_t>(kb + vb)
                                                 << " of K+V): host " << static_cast<int>(pages.host[static_cast<std::size_t>(diff)])
                                                 << " device " << static_cast<int>(dev_pages[static_cast<std::size_t>(diff)]));
  }

  // dequantize each job's range, and a sub-range of it, from the host's pages on both sides
  pages.upload();
  std::vector<dequantize_job> dh, dd;
  std::size_t out_total = 0;
  std::vector<std::size_t> out_offsets;
  for (std::size_t j = 0; j < plans.size(); ++j) {
    if (static_cast<std::int32_t>(j) == bad_index) continue;
    const plan& pl = plans[j];
    for (int part = 0; part < 2; ++part) {
      std::int32_t first = pl.first, tokens = pl.tokens;
      if (part == 1) {
        if (tokens < 3) continue;
        first += 1;
        tokens -= 2;
      }
      out_offsets.push_back(out_total);
      dh.push_back({nullptr, nullptr, first, tokens, pl.side});
      out_total += static_cast<std::size_t>(tokens) * row_bytes;
    }
  }
  twin out(out_total, std::byte{0xFF});
  {
    std::size_t k = 0;
    for (std::size_t j = 0; j < plans.size(); ++j) {
      if (static_cast<std::int32_t>(j) == bad_index) continue;
      const plan& pl = plans[j];
      for (int part = 0; part < 2; ++part) {
        if (part == 1 && pl.tokens < 3) continue;
        dequantize_job hj = dh[k];
        hj.page = pages.h(pl.page_offset);
        hj.rows = reinterpret_cast<std::uint16_t*>(out.h(out_offsets[k]));
        dequantize_job dj = hj;
        dj.page = pages.d(pl.page_offset);
        dj.rows = reinterpret_cast<std::uint16_t*>(out.d(out_offsets[k]));
        dh[k] = hj;
        dd.push_back(dj);
        ++k;
      }
    }
  }
  dequantize_pages_host<Q>(dh.data(), static_cast<std::int32_t>(dh.size()), p, head_dim);
  auto djobs_d = to_device(dd);
  dequantize_pages_cuda<Q>(djobs_d.data(), static_cast<std::int32_t>(dd.size()), p, head_dim,
                           status_d.data(), s);
  s.synchronize();
  CHECK(read_status(status_d) == quant_status{});
  const auto dev_out = out.download();
  const std::int64_t odiff = first_difference(out.host, dev_out);
  if (odiff >= 0) {
    FAIL_CHECK("dequantized rows differ at byte " << odiff);
  }
}

template <class Q>
bool takes(std::int32_t head_dim) {
  try {
    Q::validate(kvtest::page_size_for<Q>(), head_dim);
    return true;
  } catch (const kvcache::error&) {
    return false;
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("quantize_pages_cuda / dequantize_pages_cuda match the host bit for bit",
                        "[quant][gpu]", all_quantizers) {
  using Q = TestType;
  std::uint64_t seed = kvtest::seed();
  for (std::int32_t head_dim : {64, 96, 128, 256}) {
    if (!takes<Q>(head_dim)) continue;
    run_case<Q>(head_dim, 3, ++seed, inject::none);
    run_case<Q>(head_dim, 97, ++seed, inject::none);
  }
  // several grid-stride rounds
  run_case<Q>(128, 1024, ++seed, inject::none);
}

TEST_CASE("quantize_pages_cuda / dequantize_pages_cuda on pages of odd and non-multiple-of-32 "
          "sizes match the host", "[quant][gpu]") {
  // per-token KIVI (token group 1) takes any page size: an odd one ends in half a token pair of
  // the value rows and metadata records (format.hpp); head_dim 128 is the fast kernels' shape
  std::uint64_t seed = kvtest::seed() + 101;
  for (std::int32_t p : {33, 40, 1}) {
    for (std::int32_t head_dim : {128, 64}) {
      run_case<kivi2_token_keys>(head_dim, 9, ++seed, inject::none, p);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("quantize_pages_cuda: non-finite input is flagged like the host's",
                        "[quant][gpu]", all_quantizers) {
  using Q = TestType;
  run_case<Q>(128, 40, kvtest::seed() + 100, inject::non_finite);
}

TEMPLATE_LIST_TEST_CASE("quantize_pages_cuda: a malformed job is skipped and reported",
                        "[quant][gpu]", all_quantizers) {
  using Q = TestType;
  run_case<Q>(128, 40, kvtest::seed() + 200, inject::bad_job);
}

TEST_CASE("quant CUDA launchers validate before launching", "[quant][gpu]") {
  buffer<quantize_job, cuda_space> jobs(1);
  KVTEST_REQUIRE_ERROR(quantize_pages_cuda<kivi2>(jobs.data(), 1, 16, 128, nullptr, {}),
                       errc::invalid_argument, "page_size 16");
  KVTEST_REQUIRE_ERROR(quantize_pages_cuda<int8_quantizer>(jobs.data(), -1, 16, 128, nullptr, {}),
                       errc::invalid_argument, "-1 jobs");
  KVTEST_REQUIRE_ERROR((quantize_pages_cuda<kivi<2, 8, 128>>(jobs.data(), 1, 16, 128, nullptr, {})),
                       errc::not_supported, "group 8");
  KVTEST_REQUIRE_ERROR(dequantize_pages_cuda<fp8_e4m3_quantizer>(nullptr, 2, 16, 128, nullptr, {}),
                       errc::invalid_argument, "2 jobs");
  // no jobs: only the status is reset
  buffer<quant_status, cuda_space> st(1);
  KVCACHE_CUDA_TRY(cudaMemset(st.data(), 1, sizeof(quant_status)));
  quantize_pages_cuda<kivi4>(nullptr, 0, 32, 128, st.data(), {});
  KVCACHE_CUDA_TRY(cudaDeviceSynchronize());
  CHECK(read_status(st) == quant_status{});
}
