// SPDX-License-Identifier: MIT
// What the three stream socket files share beyond switch_internal.hpp: stream_socket.cpp (a
// connection's life), stream_requests.cpp (provider requests and their completions) and
// stream_data.cpp (the data path). Lock held for all of it.
#pragma once

#include "switch/switch_internal.hpp"

namespace sansock::sw {

// --- stream_requests.cpp -------------------------------------------------------------------------
// A request of `kind` for `s`, completed by the switch's completion routine; nullptr when no
// memory is left (callers give up what they meant to send or receive, and never throw: they
// run inside completion routines and closes).
provider_request* new_request(stream_socket& s, provider::operation_kind kind);
// Hands a send to the provider; on refusal frees it and returns the error.
int send_request(stream_socket& s, provider_request* r);
// The next receive into the staging buffer, if the connection takes one (else nothing; no
// memory or a refusal resets the connection).
void post_recv(stream_socket& s);

// --- stream_data.cpp -----------------------------------------------------------------------------
// A fresh, empty staging buffer for a connection's receives.
void reset_staging(stream_socket& s);
// The frames complete in the staging buffer, handled in order.
void parse_frames(stream_socket& s);

// --- stream_socket.cpp ---------------------------------------------------------------------------
// A user operation's callback: room for it was reserved when it started (async_pending).
void queue_callback(stream_socket& s, sansock_callback callback, void* user, int64_t result);
// What a failure the provider reports (a refused request, a failed completion, an up-call)
// means: the device went away, or the connection was reset.
sansock_reset_reason received_reason(int code);

} // namespace sansock::sw
