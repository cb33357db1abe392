// Failure reporting for the C API: a negative errno value plus a thread-local detail sentence.
#pragma once

namespace join::shm {

// Records a detail sentence (printf-style) for the calling thread and returns -err.
[[gnu::format(printf, 2, 3)]] int fail(int err, const char *fmt, ...) noexcept;

// As fail, with a fixed sentence: cheap enough for the -EAGAIN of a polling loop.
int failStatic(int err, const char *sentence) noexcept;

const char *lastDetail() noexcept;

}  // namespace join::shm
