// `join-shm bridge`: carries a ring's elements over NATS to a ring on another host (bridge.cpp).
#pragma once

namespace join::shm::cli {

// argv holds the words after "bridge" (argc of them). Returns the exit status: 0 done (--count
// reached, or SIGINT/SIGTERM), 1 error, 2 usage.
int bridgeMain(int argc, char **argv);

}  // namespace join::shm::cli
