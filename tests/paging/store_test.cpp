#include <algorithm>
#include <set>
#include <vector>

#include "kvcache/paging/batch_builder.hpp"
#include "kvcache/paging/block_table.hpp"
#include "kvcache/paging/lifo_allocator.hpp"
#include "kvcache/paging/paged_kv_store.hpp"
#include "support/catch.hpp"

using namespace kvcache;

// ---- page_allocator contract, over every model ------------------------------------------------
using allocator_models = std::tuple<lifo_allocator>;

TEMPLATE_LIST_TEST_CASE("page_allocator contract", "[paging][allocator]", allocator_models) {
  TestType a(8);
  CHECK(a.num_pages() == 8);
  CHECK(a.free_count() == 8);
  std::vector<page_id> got(5);
  REQUIRE(a.try_allocate(std::span<page_id>(got)));
  CHECK(a.free_count() == 3);
  CHECK(std::set<page_id>(got.begin(), got.end()).size() == 5);
  for (page_id p : got) CHECK(a.ref_count(p) == 1);

  std::vector<page_id> too_many(4);
  CHECK_FALSE(a.try_allocate(std::span<page_id>(too_many)));
  CHECK(a.free_count() == 3);  // unchanged

  a.add_ref(got[0]);
  CHECK(a.ref_count(got[0]) == 2);
  CHECK_FALSE(a.drop_ref(got[0]));
  CHECK(a.drop_ref(got[0]));
  CHECK(a.free_count() == 4);
  KVTEST_REQUIRE_ERROR(a.drop_ref(got[0]), errc::bad_free, "page " + std::to_string(got[0]));
  KVTEST_REQUIRE_ERROR(a.add_ref(99), errc::out_of_range, "page 99 is not in the pool of 8");

  std::vector<page_id> rest;
  while (auto p = a.try_allocate()) rest.push_back(*p);
  CHECK(rest.size() == 4);
  CHECK_FALSE(a.try_allocate().has_value());
}

TEST_CASE("lifo_allocator reuses the most recently freed page", "[paging][allocator]") {
  lifo_allocator a(4);
  const page_id p = *a.try_allocate();
  const page_id q = *a.try_allocate();
  a.drop_ref(p);
  CHECK(*a.try_allocate() == p);
  (void)q;
}

TEST_CASE("block_table_set grows, shrinks and copies across chunks", "[paging][block_table]") {
  block_table_set s(3, 2);
  for (page_id p = 0; p < 100; ++p) s.push_page(0, p);
  CHECK(s.pages(0) == 100);
  CHECK(s.page(0, 77) == 77);
  CHECK(s.last_page(0) == 99);
  s.copy_table(1, 0);
  std::vector<page_id> removed;
  s.shrink(0, 33, [&](page_id p) { removed.push_back(p); });
  CHECK(removed.size() == 67);
  CHECK(removed.front() == 33);
  CHECK(s.pages(0) == 33);
  CHECK(s.last_page(0) == 32);
  s.push_page(0, 500);
  CHECK(s.page(0, 33) == 500);
  std::vector<page_id> all;
  s.for_each_page(1, [&](page_id p) { all.push_back(p); });
  CHECK(all.size() == 100);
  CHECK(all[64] == 64);
  s.shrink(1, 0, [](page_id) {});
  CHECK(s.pages(1) == 0);
  std::vector<page_id> from;
  s.for_each_page_from(0, 30, [&](std::int32_t, page_id p) {
    from.push_back(p);
    return true;
  });
  CHECK(from == std::vector<page_id>{30, 31, 32, 500});
}

// ---- the store -------------------------------------------------------------------------------
namespace {
store_config small_config(std::int32_t pages, std::int32_t page_size = 4) {
  store_config c;
  c.layout = kv_layout{.layers = 2, .kv_heads = 2, .q_heads = 4, .head_dim = 8,
                       .page_size = page_size, .order = kv_order::nhd, .type = dtype::f16};
  c.num_pages = pages;
  c.max_sequences = 8;
  return c;
}
}  // namespace

TEST_CASE("store: append reserves slots page by page", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(16));
  const seq_id a = store.create();
  std::vector<std::int64_t> slots(6);
  REQUIRE(store.try_append(a, 6, slots) == 6);
  CHECK(store.stats().pages_used == 2);
  // slots are page * 4 + offset, pages taken in LIFO order starting at 0
  CHECK(slots[0] / 4 == slots[3] / 4);
  CHECK(slots[4] / 4 != slots[0] / 4);
  CHECK(slots[5] == slots[4] + 1);
  std::vector<std::int64_t> one(1);
  REQUIRE(store.try_append(a, 1, one) == 7);
  CHECK(one[0] == slots[5] + 1);
  store.check_invariants();
}

TEST_CASE("store: fork shares pages, copy-on-write on the shared partial page",
          "[paging][store]") {
  paged_kv_store<host_space> store(small_config(16));
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 6));  // pages: [full, partial(2)]
  const seq_id b = store.fork(a);
  CHECK(store.stats().pages_used == 2);
  CHECK(store.stats().pages_shared == 2);
  std::vector<std::int64_t> sa(1), sb(1);
  REQUIRE(store.try_append(a, 1, sa));  // a copies the shared partial page
  REQUIRE(store.pending_copies().size() == 1);
  const page_copy c = store.pending_copies()[0];
  CHECK(sa[0] / 4 == c.dst);
  CHECK(store.stats().pages_used == 3);
  REQUIRE(store.try_append(b, 1, sb));  // b is now the only owner: writes in place
  CHECK(sb[0] / 4 == c.src);
  CHECK(store.pending_copies().size() == 1);
  CHECK(store.stats().cow_copies == 1);
  store.check_invariants();
  store.apply_pending_copies();
  CHECK(store.pending_copies().empty());
  store.release(a);
  store.release(b);
  CHECK(store.stats().pages_free == 16);
  store.check_invariants();
}

TEST_CASE("store: exhaustion returns empty and changes nothing", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(4));
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 13));  // 4 pages
  const auto before = store.stats();
  CHECK_FALSE(store.can_append(a, 4));
  CHECK(store.can_append(a, 3));
  CHECK_FALSE(store.try_append(a, 4).has_value());
  const auto after = store.stats();
  CHECK(after.pages_free == before.pages_free);
  CHECK(store.length(a) == 13);
  store.check_invariants();
}

TEST_CASE("store: truncate drops pages past the new length", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(16));
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 15));
  store.truncate(a, 5);
  CHECK(store.length(a) == 5);
  CHECK(store.stats().pages_used == 2);
  store.truncate(a, 0);
  CHECK(store.stats().pages_used == 0);
  REQUIRE(store.try_append(a, 3));
  store.check_invariants();
  KVTEST_REQUIRE_ERROR(store.truncate(a, 4), errc::out_of_range,
                       "cannot truncate sequence 0 of 3 tokens to 4");
}

TEST_CASE("store: per_layer and per_head keep a table per layer / head", "[paging][store]") {
  paged_kv_store<host_space, per_head> heads(small_config(64));
  CHECK(heads.tables_per_sequence() == 4);
  const seq_id a = heads.create();
  std::vector<std::int64_t> slots(4 * 5);
  REQUIRE(heads.try_append(a, 5, slots));
  CHECK(heads.stats().pages_used == 8);  // 4 tables x 2 pages
  paged_kv_store<host_space, per_layer> layers(small_config(64));
  CHECK(layers.tables_per_sequence() == 2);
  CHECK(layers.table_of(1, 1) == 1);
  CHECK(heads.table_of(1, 1) == 3);
}

TEST_CASE("store: bad ids and shapes are errors naming the value", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(8));
  const seq_id a = store.create();
  store.release(a);
  KVTEST_REQUIRE_ERROR(store.length(a), errc::unknown_id, "sequence 0 (generation 0)");
  KVTEST_REQUIRE_ERROR(store.release(a), errc::unknown_id, "unknown or released");
  KVTEST_REQUIRE_ERROR(store.try_append(seq_id{7, 0}, 1), errc::unknown_id, "sequence 7");
  const seq_id b = store.create();
  std::vector<std::int64_t> wrong(3);
  KVTEST_REQUIRE_ERROR(store.try_append(b, 2, wrong), errc::shape_mismatch, "holds 3 slots");
  for (int i = 0; i < 7; ++i) (void)store.create();
  CHECK_FALSE(store.try_create().has_value());
  KVTEST_REQUIRE_ERROR(store.create(), errc::out_of_range, "all 8 sequence slots are live");
  store_config bad = small_config(0);
  KVTEST_REQUIRE_ERROR((paged_kv_store<host_space>(bad)), errc::invalid_argument,
                       "num_pages must be >= 1, got 0");
  bad = small_config(4, 3);
  KVTEST_REQUIRE_ERROR((paged_kv_store<host_space>(bad)), errc::invalid_argument,
                       "power of two, got 3");
}

TEST_CASE("store: adopt_prefix and the reclaimer hook", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(6));
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 8));  // 2 full pages
  // A prefix index would hold its own references on a's pages and hand them out on a hit.
  std::vector<page_id> cached;
  store.for_each_page(a, 0, [&](page_id p) { cached.push_back(p); });
  for (page_id p : cached) store.allocator().add_ref(p);  // the index's references
  for (page_id p : cached) store.allocator().add_ref(p);  // a match's references for b
  const seq_id b = store.create();
  store.adopt_prefix(b, cached);
  CHECK(store.length(b) == 8);
  store.release(a);
  REQUIRE(store.try_append(b, 1));
  CHECK(store.stats().pages_used == 3);
  KVTEST_REQUIRE_ERROR(store.adopt_prefix(b, cached), errc::invalid_argument, "holds 9 tokens");

  // The pool is short: the reclaimer (the index evicting) frees its references.
  const seq_id c = store.create();
  int calls = 0;
  store.set_reclaimer([&](std::int32_t missing) {
    ++calls;
    CHECK(missing == 1);
    for (page_id p : cached) store.allocator().drop_ref(p);  // evict: b still holds them
  });
  REQUIRE(store.try_append(c, 12));  // 3 pages: 3 free
  CHECK(calls == 0);
  CHECK_FALSE(store.try_append(c, 1).has_value());  // nothing more to reclaim after that
  store.set_reclaimer({});
  store.check_invariants();
}

TEST_CASE("store: check_invariants counts references held outside the tables", "[paging][store]") {
  paged_kv_store<host_space> store(small_config(8));
  const seq_id a = store.create();
  REQUIRE(store.try_append(a, 8));
  std::vector<page_id> held;
  store.for_each_page(a, 0, [&](page_id p) { held.push_back(p); });
  for (page_id p : held) store.allocator().add_ref(p);  // e.g. a prefix index
  KVTEST_REQUIRE_ERROR(store.check_invariants(), errc::logic_error, "reference count 2");
  const auto extra = [&](page_id p) {
    return static_cast<std::int32_t>(std::count(held.begin(), held.end(), p));
  };
  REQUIRE_NOTHROW(store.check_invariants(extra));
  store.release(a);
  REQUIRE_NOTHROW(store.check_invariants(extra));
  CHECK(store.stats().pages_used == 2);  // still held by the holder
}

TEST_CASE("batch_builder: each sequence once per batch; CSR and slots of a step", "[paging][batch]") {
  using store_t = paged_kv_store<host_space>;
  store_t store(small_config(16));
  batch_builder<store_t> b(store);
  const seq_id x = store.create();
  const seq_id y = store.create();
  REQUIRE(b.try_add(x, 5));
  REQUIRE(b.try_add(y, 2));
  KVTEST_REQUIRE_ERROR((void)b.try_add(x, 1), errc::invalid_argument,
                       "sequence 0 is already in the batch");
  const batch_view& v = b.finalize();
  CHECK(v.batch_size == 2);
  CHECK(v.num_tokens == 7);
  CHECK(v.token_offsets[1] == 5);
  CHECK(v.tables.num_tables == 2);
  CHECK(v.tables.tokens(0) == 5);
  CHECK(v.tables.tokens(1) == 2);
  CHECK(v.tables.indptr[2] == 3);  // 2 pages + 1 page
  std::vector<std::int64_t> expect(5);
  store.slots(x, 0, 0, 5, expect);
  for (int i = 0; i < 5; ++i) CHECK(v.slots.slots[i] == expect[static_cast<std::size_t>(i)]);
  b.clear();
  REQUIRE(b.try_add(x, 1));  // a new batch
  CHECK(b.size() == 1);
}
