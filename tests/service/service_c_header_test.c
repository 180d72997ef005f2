/* SPDX-License-Identifier: MIT */
/* service.h compiles as C11 and its names are usable from C. */
#include "sansock/service.h"

static void on_done(int result, void* state) { *(int*)state = result; }

int main(void) {
    int seen = 0;
    struct sansock_async_context async = {on_done, &seen};
    struct sansock_channel_attr attr = {sizeof attr, SANSOCK_CHANNEL_SESSION, 0, 0};
    (void)async;
    (void)attr;
    /* Every call rejects a NULL object with -EINVAL. */
    if (sansock_listener_abort(NULL) != -EINVAL) return 1;
    if (sansock_channel_get_state(NULL) != -EINVAL) return 1;
    if (sansock_service_host_close(NULL, &async) != -EINVAL) return 1;
    if (SANSOCK_S_END != 1 || SANSOCK_LISTENER_CLOSED != 5) return 1;
    return seen;
}
