#include "error.hpp"

#include <cstdarg>
#include <cstdio>

namespace join::shm {

namespace {
thread_local char buffer[256];
thread_local const char *detail = "no error";
}  // namespace

int fail(int err, const char *fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buffer, sizeof buffer, fmt, ap);
    va_end(ap);
    detail = buffer;
    return -err;
}

int failStatic(int err, const char *sentence) noexcept {
    detail = sentence;
    return -err;
}

const char *lastDetail() noexcept { return detail; }

}  // namespace join::shm
