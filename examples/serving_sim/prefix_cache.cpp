#include "prefix_cache.hpp"

#include "kvcache/prefix/hash_chain_index.hpp"
#include "kvcache/prefix/radix_index.hpp"

namespace kvsim {

namespace {
template <class Index>
class index_cache final : public prefix_cache {
 public:
  explicit index_cache(sim_store& store)
      : store_(&store),
        index_(store.allocator(), store.layout().page_size),
        page_size_(store.layout().page_size) {}

  std::int64_t match(std::span<const std::int32_t> tokens,
                     std::vector<kvcache::page_id>& pages) override {
    const std::size_t first = pages.size();
    pages.resize(first + tokens.size() / static_cast<std::size_t>(page_size_));
    const auto r = index_.match(tokens, std::span<kvcache::page_id>(pages).subspan(first));
    pages.resize(first + static_cast<std::size_t>(r.pages));
    return r.tokens;
  }
  void release_match(std::span<const kvcache::page_id> pages) override {
    index_.release_match(pages);
  }
  void insert(std::span<const std::int32_t> tokens,
              std::span<const kvcache::page_id> pages) override {
    (void)index_.insert(tokens, pages);
  }
  std::int32_t evict(std::int32_t n) override { return index_.evict(n); }
  std::int64_t cached_pages() const override { return index_.stats().cached_pages; }
  std::int64_t idle_pages() const override {
    const auto& a = store_->allocator();
    std::int64_t n = 0;
    for (kvcache::page_id p = 0; p < a.num_pages(); ++p) n += index_.is_cached(p) && a.ref_count(p) == 1;
    return n;
  }

 private:
  sim_store* store_;
  Index index_;
  std::int32_t page_size_;
};
}  // namespace

std::unique_ptr<prefix_cache> make_prefix_cache(const std::string& kind, sim_store& store) {
  using alloc = kvcache::lifo_allocator;
  if (kind == "none") return nullptr;
  if (kind == "radix") return std::make_unique<index_cache<kvcache::radix_index<alloc>>>(store);
  if (kind == "hash") return std::make_unique<index_cache<kvcache::hash_chain_index<alloc>>>(store);
  KVCACHE_FAIL(kvcache::errc::invalid_argument,
               "kvcache-sim: unknown prefix cache '{}' (none, radix or hash)", kind);
}

}  // namespace kvsim
