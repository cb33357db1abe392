// Handles are never returned to the allocator: closing one marks it dead and keeps its memory for
// the next open, so a call on a closed handle reads a dead magic value instead of freed memory.
#pragma once

#include <mutex>
#include <new>

namespace join::shm {

template <class T>
class HandlePool {
public:
    T *take() noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!free_) {
            Node *fresh = new (std::nothrow) Node{};
            return fresh ? &fresh->value : nullptr;
        }
        Node *n = free_;
        free_ = n->next;
        n->next = nullptr;
        n->value = T{};
        return &n->value;
    }
    HandlePool() = default;
    HandlePool(const HandlePool &) = delete;
    HandlePool &operator=(const HandlePool &) = delete;
    // Frees the handles kept for reuse, so unloading the library (dlclose) leaks nothing. Open
    // handles belong to their users.
    ~HandlePool() {
        while (Node *n = free_) {
            free_ = n->next;
            delete n;
        }
    }

    void give(T *value) noexcept {
        Node *n = reinterpret_cast<Node *>(value);  // value is the first member of Node
        std::lock_guard<std::mutex> lock(mutex_);
        n->next = free_;
        free_ = n;
    }

private:
    struct Node {
        T value;
        Node *next = nullptr;
    };
    std::mutex mutex_;
    Node *free_ = nullptr;
};

}  // namespace join::shm
