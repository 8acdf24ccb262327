#include "kvcache/prefix/events.hpp"

#include "kvcache/core/error.hpp"

namespace kvcache {

void prefix_event_sink::set_callback(std::function<void(const prefix_event&)> f) {
  callback_ = std::move(f);
  mode_ = callback_ ? mode::callback : mode::off;
  ring_.clear();
  head_ = size_ = 0;
}

void prefix_event_sink::use_queue(std::size_t capacity) {
  KVCACHE_EXPECTS(capacity >= 1, errc::invalid_argument,
                  "prefix_event_sink: queue capacity must be >= 1, got {}", capacity);
  callback_ = nullptr;
  ring_.assign(capacity, prefix_event{});
  head_ = size_ = 0;
  mode_ = mode::queue;
}

void prefix_event_sink::disable() noexcept {
  mode_ = mode::off;
  callback_ = nullptr;
  ring_.clear();
  head_ = size_ = 0;
}

prefix_event& prefix_event_sink::start(prefix_event_type type, std::int32_t page_size) {
  prefix_event* e = &scratch_;
  if (mode_ == mode::queue) {
    if (size_ == ring_.size()) {  // full: drop the oldest
      head_ = (head_ + 1) % ring_.size();
      --size_;
      ++dropped_;
    }
    e = &ring_[(head_ + size_) % ring_.size()];
  }
  e->type = type;
  e->salt = 0;
  e->extra = 0;
  e->parent = page_key{};
  e->first_token = 0;
  e->page_size = page_size;
  e->keys.clear();
  e->pages.clear();
  e->tokens.clear();
  return *e;
}

void prefix_event_sink::publish() {
  if (mode_ == mode::queue) {
    ++size_;
  } else if (mode_ == mode::callback) {
    callback_(scratch_);
  }
}

}  // namespace kvcache
