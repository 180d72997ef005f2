// SPDX-License-Identifier: MIT
// The seam between a context and the layer above the socket API (the service layer: listeners,
// channels, service hosts). The layer uses only the public socket API, so the switch knows
// none of its types; a context holds one opaque slot that the layer fills the first time one
// of its objects is created in that context (its per-context state and threads), and
// sansock_context_destroy empties it before it tears down the context's sockets. Internal:
// not exported from libsansock (hidden visibility).
#pragma once

#include <cstddef>
#include <mutex>

#include "sansock/sansock.h"

namespace sansock {

// What the layer attaches: embed it (first member) in the layer's per-context state.
struct attached_layer {
    // Stops the layer's threads and frees it; called by sansock_context_destroy without any
    // lock held, once no object of the layer is left (no use is counted). Returns 0, or a
    // negated errno when it must not stop now, having changed nothing (-EBUSY: called on one
    // of the layer's own threads, e.g. from a user callback): destroy returns that code.
    int (*stop)(attached_layer* self) = nullptr;
};

// Makes the layer for `ctx`: 0 and *out, or a negated errno (nothing attached).
using layer_factory = int (*)(sansock_context* ctx, attached_layer** out);

// The slot inside a context (switch/switch_internal.hpp). Guarded by its own mutex, which is
// never held while the layer stops (its threads may be attaching).
struct layer_slot {
    std::mutex mutex;
    attached_layer* layer = nullptr;
    size_t uses = 0;     // objects of the layer alive in the context
    bool closed = false; // the context is being destroyed: nothing attaches any more
};

// Counts one use of the context's layer (an object of the layer is being created) and gives
// the layer, made by `make` (called under the slot's mutex) if none is attached yet. 0 and
// *out; -EINVAL (null context, or the context is being destroyed); or make's error.
int attach_layer(sansock_context* ctx, layer_factory make, attached_layer** out);
// Ends one use (the object is gone and the layer will not be touched for it again). While
// uses are counted, sansock_context_destroy returns -EBUSY and destroys nothing.
void release_layer(sansock_context* ctx);

} // namespace sansock
