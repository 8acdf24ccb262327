// Reference model of the narrow float formats for the numeric tests, written independently of
// numeric.hpp: values from the textbook formula in double (std::ldexp), encoding by binary search
// in the sorted table of all finite values. Slow and obvious on purpose.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvcache/core/numeric.hpp"

namespace kvtest::numeric {

/// A format as its specification describes it (not taken from numeric.hpp).
struct format_desc {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias;
  bool ieee_specials;  ///< top exponent = inf (m = 0) / NaN; false: E4M3, only S.1111.111 is NaN
  bool fp8;            ///< saturation modes apply; every NaN input encodes to 0x7F
  [[nodiscard]] int total_bits() const { return 1 + exp_bits + man_bits; }
  [[nodiscard]] std::uint32_t sign_bit() const { return 1u << (total_bits() - 1); }
  [[nodiscard]] std::uint32_t pattern_count() const { return 1u << total_bits(); }
};

inline constexpr format_desc f16_format{"f16", 5, 10, 15, true, false};
inline constexpr format_desc bf16_format{"bf16", 8, 7, 127, true, false};
inline constexpr format_desc e4m3_format{"fp8_e4m3", 4, 3, 7, false, true};
inline constexpr format_desc e5m2_format{"fp8_e5m2", 5, 2, 15, true, true};

template <class T>
constexpr format_desc format_of() {
  if constexpr (std::is_same_v<T, kvcache::float16>) return f16_format;
  if constexpr (std::is_same_v<T, kvcache::bfloat16>) return bf16_format;
  if constexpr (std::is_same_v<T, kvcache::float8_e4m3>) return e4m3_format;
  if constexpr (std::is_same_v<T, kvcache::float8_e5m2>) return e5m2_format;
}

/// (-1)^s * 2^(e - bias) * (1 + m / 2^M); subnormals 2^(1 - bias) * m / 2^M; inf; NaN.
inline double ref_decode(const format_desc& f, std::uint32_t bits) {
  const bool negative = (bits & f.sign_bit()) != 0;
  const std::uint32_t e = (bits >> f.man_bits) & ((1u << f.exp_bits) - 1u);
  const std::uint32_t m = bits & ((1u << f.man_bits) - 1u);
  const std::uint32_t e_max = (1u << f.exp_bits) - 1u;
  const std::uint32_t m_max = (1u << f.man_bits) - 1u;
  double v = 0;
  if (f.ieee_specials && e == e_max) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.ieee_specials && e == e_max && m == m_max) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.man_bits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.man_bits),
                   static_cast<int>(e) - f.bias);
  }
  return negative ? -v : v;
}

/// The nonnegative finite values of a format, ascending, with their bits.
struct value_table {
  format_desc format;
  std::vector<double> values;
  std::vector<std::uint32_t> bits;
  double max_finite = 0;
  std::uint32_t max_finite_bits = 0;
  double beyond_max = 0;  ///< max + ulp(max): the value an unbounded exponent would have next

  explicit value_table(const format_desc& f) : format(f) {
    std::vector<std::pair<double, std::uint32_t>> pairs;
    for (std::uint32_t b = 0; b < f.sign_bit(); ++b) {
      const double v = ref_decode(f, b);
      if (std::isfinite(v)) pairs.emplace_back(v, b);
    }
    std::sort(pairs.begin(), pairs.end());
    for (const auto& [v, b] : pairs) {
      values.push_back(v);
      bits.push_back(b);
    }
    max_finite = values.back();
    max_finite_bits = bits.back();
    beyond_max = max_finite + (max_finite - values[values.size() - 2]);
  }

  /// True when the values are strictly increasing (each representable value once).
  [[nodiscard]] bool strictly_increasing() const {
    return std::adjacent_find(values.begin(), values.end(),
                              [](double a, double b) { return !(a < b); }) == values.end();
  }

  /// What a value out of range (or an infinity) encodes to, with its sign bit.
  [[nodiscard]] std::uint32_t overflow_bits(std::uint32_t sign, kvcache::fp8_saturation sat) const {
    const std::uint32_t inf_or_nan = (((1u << format.exp_bits) - 1u) << format.man_bits) |
                                     (format.ieee_specials ? 0u : (1u << format.man_bits) - 1u);
    if (format.fp8 && sat == kvcache::fp8_saturation::finite) return sign | max_finite_bits;
    return sign | inf_or_nan;
  }

  /// Expected encoding of a float: nearest value by binary search, ties to the even pattern.
  [[nodiscard]] std::uint32_t encode(float x, kvcache::fp8_saturation sat) const {
    if (std::isnan(x)) return nan_bits(x);
    const std::uint32_t sign = std::signbit(x) ? format.sign_bit() : 0u;
    const double a = std::fabs(static_cast<double>(x));
    if (std::isinf(a)) return overflow_bits(sign, sat);
    const double mid_beyond = (max_finite + beyond_max) / 2;
    if (a > mid_beyond || (a == mid_beyond && (max_finite_bits & 1u) != 0)) {
      return overflow_bits(sign, sat);
    }
    if (a >= max_finite) return sign | max_finite_bits;
    const auto it = std::lower_bound(values.begin(), values.end(), a);
    const auto hi = static_cast<std::size_t>(it - values.begin());
    if (values[hi] == a) return sign | bits[hi];
    const std::size_t lo = hi - 1;                     // values[0] = 0 <= a
    const double mid = (values[lo] + values[hi]) / 2;  // exact: adjacent narrow values
    if (a < mid) return sign | bits[lo];
    if (a > mid) return sign | bits[hi];
    return sign | ((bits[lo] & 1u) == 0 ? bits[lo] : bits[hi]);
  }

  /// numeric.hpp's documented NaN encoding: f16/bf16 quiet with sign and top payload; fp8 0x7F.
  [[nodiscard]] std::uint32_t nan_bits(float x) const {
    if (format.fp8) return 0x7Fu;
    std::uint32_t u = 0;
    std::memcpy(&u, &x, 4);
    const std::uint32_t sign = (u >> 31) != 0 ? format.sign_bit() : 0u;
    const std::uint32_t exp_ones = ((1u << format.exp_bits) - 1u) << format.man_bits;
    const std::uint32_t quiet = 1u << (format.man_bits - 1);
    return sign | exp_ones | quiet | ((u & 0x7FFFFFu) >> (23 - format.man_bits));
  }
};

/// A tie between two adjacent values and the float inputs around it.
struct midpoint_case {
  float mid;                ///< exactly (lo + hi) / 2
  std::uint32_t lo_bits;    ///< expected just below the midpoint
  std::uint32_t hi_bits;    ///< expected just above (may be the overflow result)
  std::uint32_t even_bits;  ///< expected at the midpoint
  bool representable;       ///< (lo + hi) / 2 is exactly a float
};

/// Every midpoint of adjacent nonnegative values, and the one between max and beyond-max
/// (its `hi_bits` is 0xFFFFFFFF: overflow, resolved by the caller per saturation mode).
inline std::vector<midpoint_case> midpoints(const value_table& t) {
  std::vector<midpoint_case> out;
  for (std::size_t i = 0; i + 1 < t.values.size(); ++i) {
    const double mid = (t.values[i] + t.values[i + 1]) / 2;
    const auto f = static_cast<float>(mid);
    out.push_back({f, t.bits[i], t.bits[i + 1], (t.bits[i] & 1u) == 0 ? t.bits[i] : t.bits[i + 1],
                   static_cast<double>(f) == mid});
  }
  const double mid = (t.max_finite + t.beyond_max) / 2;
  const auto f = static_cast<float>(mid);
  out.push_back({f, t.max_finite_bits, 0xFFFFFFFFu,
                 (t.max_finite_bits & 1u) == 0 ? t.max_finite_bits : 0xFFFFFFFFu,
                 static_cast<double>(f) == mid});
  return out;
}

/// Midpoints and their float neighbours (both signs) as plain inputs.
inline std::vector<float> midpoint_inputs(const value_table& t) {
  std::vector<float> out;
  for (const auto& c : midpoints(t)) {
    for (const float m : {c.mid, -c.mid}) {
      out.push_back(m);
      out.push_back(std::nextafter(m, std::numeric_limits<float>::infinity()));
      out.push_back(std::nextafter(m, -std::numeric_limits<float>::infinity()));
    }
  }
  return out;
}

inline float float_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::uint32_t bits_of_float(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// `n` random floats: half uniform bit patterns (all classes, NaNs included), half with an
/// exponent near the format's range (subnormals to beyond max) and a random mantissa and sign.
inline std::vector<float> random_inputs(const format_desc& f, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> out(n);
  const int lo_exp = std::max(0, 127 + 1 - f.bias - f.man_bits - 3);
  const int hi_exp = std::min(254, 127 + (1 << f.exp_bits) - 1 - f.bias + 2);
  std::uniform_int_distribution<int> exp_dist(lo_exp, hi_exp);
  for (std::size_t i = 0; i < n; ++i) {
    auto u = static_cast<std::uint32_t>(rng());
    if ((i & 1u) != 0) {
      u = (u & 0x807FFFFFu) | (static_cast<std::uint32_t>(exp_dist(rng)) << 23);
    }
    out[i] = float_from_bits(u);
  }
  return out;
}

/// Collects mismatches: counts them and keeps the first few descriptions for the report.
struct mismatch_log {
  std::size_t count = 0;
  std::string first;
  void add(const std::string& what) {
    if (count++ < 8) first += what + "\n";
  }
};

inline std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%X", static_cast<unsigned>(v));
  return buf;
}

inline std::string describe(float x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a (bits 0x%08X)", static_cast<double>(x),
                static_cast<unsigned>(bits_of_float(x)));
  return buf;
}

/// Same value: both NaN with the same sign, or equal with the same sign (so -0 != +0).
inline bool same_value(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) && std::signbit(got) == std::signbit(want);
  return static_cast<double>(got) == want && std::signbit(got) == std::signbit(want);
}

// ---- the implementation under test, by storage type ------------------------------------------
template <class T>
std::uint32_t kv_encode(float x, kvcache::fp8_saturation sat) {
  if constexpr (std::is_same_v<T, kvcache::float16>) return kvcache::to_float16(x).bits;
  if constexpr (std::is_same_v<T, kvcache::bfloat16>) return kvcache::to_bfloat16(x).bits;
  if constexpr (std::is_same_v<T, kvcache::float8_e4m3>)
    return kvcache::to_float8_e4m3(x, sat).bits;
  if constexpr (std::is_same_v<T, kvcache::float8_e5m2>)
    return kvcache::to_float8_e5m2(x, sat).bits;
}

template <class T>
float kv_decode(std::uint32_t bits) {
  using storage = decltype(T::bits);
  return kvcache::to_float(T::from_bits(static_cast<storage>(bits)));
}

}  // namespace kvtest::numeric
