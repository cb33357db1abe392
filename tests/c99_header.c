/* <join/shm.h> is valid C99: this file is built with -std=c99 -pedantic -Werror and checks the
 * pinned constants and the option struct a C99 client compiles against. */
#include <join/shm.h>

#include <stddef.h>

/* Pinned values (never renumbered), checked at compile time where C99 allows it. */
typedef char check_spsc[JOIN_SHM_SPSC == 1 ? 1 : -1];
typedef char check_mpsc[JOIN_SHM_MPSC == 2 ? 1 : -1];
typedef char check_mpmc[JOIN_SHM_MPMC == 3 ? 1 : -1];
typedef char check_producer[JOIN_SHM_PRODUCER == 1 ? 1 : -1];
typedef char check_consumer[JOIN_SHM_CONSUMER == 2 ? 1 : -1];
typedef char check_side_a[JOIN_SHM_SIDE_A == 0 ? 1 : -1];
typedef char check_side_b[JOIN_SHM_SIDE_B == 1 ? 1 : -1];
typedef char check_flags[JOIN_SHM_PREFAULT == 1 && JOIN_SHM_MLOCK == 2 ? 1 : -1];
/* The option struct's fields are only ever appended: these offsets are part of the ABI. */
typedef char check_options_size[offsetof(join_shm_options, size) == 0 ? 1 : -1];
typedef char check_options_mode[offsetof(join_shm_options, mode) == 4 ? 1 : -1];
typedef char check_options_timeout[offsetof(join_shm_options, open_timeout_ns) == 8 ? 1 : -1];
typedef char check_options_flags[offsetof(join_shm_options, flags) == 16 ? 1 : -1];
typedef char check_options_spin[offsetof(join_shm_options, spin_ns) == 24 ? 1 : -1];

int main(void) {
    const uint32_t expected =
        ((uint32_t)JOIN_SHM_VERSION_MAJOR << 16) | (JOIN_SHM_VERSION_MINOR << 8) | JOIN_SHM_VERSION_PATCH;
    const char *text = join_shm_strerror(-22);
    return join_shm_version() == expected && expected == 0x010200u && text != NULL ? 0 : 1;
}
