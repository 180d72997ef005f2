// SPDX-License-Identifier: MIT
// The verbs provider: the provider interface on rdma-core (rdma_cm, RC queue pairs).
#pragma once

#include "provider/provider.hpp"

namespace sansock::verbs {

// Fills the ops table of provider.hpp. See docs/provider-interface.md for the wire format
// (connection private data, credits in immediate data) and the hard-close sequence.
extern const provider::ops verbs_ops;

// The version of the connection handshake carried in rdma_cm private data: a byte stream with
// credits (stream mode), or message mode (config::messages). A peer of the other is refused.
inline constexpr uint16_t handshake_version = 1;
inline constexpr uint16_t message_handshake_version = 2;

} // namespace sansock::verbs
