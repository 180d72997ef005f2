// SPDX-License-Identifier: MIT
// The in-process loopback provider: the provider contract without a device, plus faults.
//
// Same semantics as the verbs provider (byte streams, a per-connection receive window of
// recv_slots * slot_size bytes, hard close only), so the switch and the conformance suite run
// deterministically and fast. Instances that share a fabric reach each other by IPv4 address
// and port, as hosts on one network: a bind holds its full address (10.1.1.1:5000 and
// 10.2.2.2:5000 may both be bound; INADDR_ANY conflicts with every address on its port, as on
// Linux: -EADDRINUSE), and a connect reaches only the listener bound to the target's address,
// or to INADDR_ANY, on the target's port. An instance created with config.provider_specific ==
// nullptr gets a private fabric.
//
// Notes for users of the ops table:
// - connect completes (0) as soon as a listener with room in its backlog exists; the
//   server side is then established and buffers data until it is accepted.
// - A completion already queued for a socket when it is closed is delivered inside close
//   unchanged (it is not converted to -ECANCELED); each operation completes exactly once.
// - close waits for a completion or up-call of that socket that progress is delivering on
//   another thread, so nothing for the socket runs after close returns.
// - progress called from inside a completion routine or up-call returns -EDEADLK.
#pragma once

#include <cstdint>

#include "provider/provider.hpp"

// The loopback ops table (pass it through provider::with_defaults like any other).
extern const sansock::provider::ops loopback_ops;

namespace sansock::loopback {

using ::loopback_ops;

// A set of instances that can reach each other ("the network").
struct fabric;

// A new empty fabric, or nullptr when out of memory. Pass it in config.provider_specific.
fabric* create_fabric();
// Frees the fabric: 0, or -EBUSY (nothing freed) while an instance still uses it.
int destroy_fabric(fabric* f);

// Fault injection. Each returns 0, -ENOTSOCK for an unknown handle, -EINVAL for a null
// instance, or as noted.

// While frozen, the socket's connection moves no bytes in either direction: the peer's sends
// stay pending and nothing is delivered to either side's receives. Unfreezing resumes.
int freeze(provider::instance* self, provider::socket_handle s, bool frozen);

// Loses the connection: both ends' pending sends and receives complete -ECONNRESET, both get
// a peer_reset up-call, and their later sends and receives fail -ECONNRESET. -ENOTCONN if
// the socket has no live connection.
int drop_connection(provider::instance* self, provider::socket_handle s);

// Holds the socket's completions instead of queueing them for progress. With
// progress_calls > 0 they are released at the start of the progress_calls-th progress call on
// the instance from now; with 0 they are held until release_completions.
int delay_completions(provider::instance* self, provider::socket_handle s, uint32_t progress_calls);
int release_completions(provider::instance* self, provider::socket_handle s);

// The device went away: every socket's pending operations complete -ENETDOWN, every socket
// gets a device_down up-call (status -ENETDOWN), peers on other instances see peer_reset, and
// later calls on the instance fail -ENETDOWN (close still releases handles; progress still
// delivers). Irreversible for the instance.
int set_device_down(provider::instance* self);

} // namespace sansock::loopback
