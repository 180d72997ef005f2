// SPDX-License-Identifier: MIT
// Defaults for the entries a provider leaves out of its ops table.
#include "provider/provider.hpp"

#include <cerrno>

namespace sansock::provider {

namespace {
int not_supported_create(const config&, const upcalls&, instance**) { return -EOPNOTSUPP; }
void nothing_to_destroy(instance*) {}
int not_supported_socket(instance*, socket_handle*) { return -EOPNOTSUPP; }
int not_supported_address(instance*, socket_handle, const sockaddr*, socklen_t) { return -EOPNOTSUPP; }
int not_supported_listen(instance*, socket_handle, int) { return -EOPNOTSUPP; }
int not_supported_operation(instance*, socket_handle, operation*) { return -EOPNOTSUPP; }
int not_supported_name(instance*, socket_handle, sockaddr*, socklen_t*) { return -EOPNOTSUPP; }
int not_supported_getsockopt(instance*, socket_handle, int, int, void*, socklen_t*) { return -EOPNOTSUPP; }
int not_supported_setsockopt(instance*, socket_handle, int, int, const void*, socklen_t) { return -EOPNOTSUPP; }
int not_supported_close(instance*, socket_handle) { return -EOPNOTSUPP; }
int not_supported_progress_socket(instance*, socket_handle, uint32_t) { return -EOPNOTSUPP; }
int not_supported_progress(instance*, int) { return -EOPNOTSUPP; }
int not_supported_instance(instance*) { return -EOPNOTSUPP; }
int not_supported_memory(instance*, memory_stats*) { return -EOPNOTSUPP; }
int not_supported_register(instance*, void*, size_t, uint32_t, memory_handle*) { return -EOPNOTSUPP; }
int not_supported_deregister(instance*, memory_handle) { return -EOPNOTSUPP; }
int not_supported_describe(instance*, memory_handle, socket_handle, remote_memory*) { return -EOPNOTSUPP; }

template <typename F>
void fill(F& entry, F fallback) {
    if (entry == nullptr) entry = fallback;
}
} // namespace

int check_config(const config& settings) {
    if (settings.slot_size < min_slot_size || settings.send_slots < 1 || settings.recv_slots < 2 ||
        settings.max_sockets < 1 || settings.resolve_timeout_ms <= 0)
        return -EINVAL;
    const uint64_t per_connection = (uint64_t(settings.send_slots) + settings.recv_slots) * settings.slot_size;
    return per_connection <= max_connection_bytes ? 0 : -EINVAL;
}

ops with_defaults(const ops& table) {
    ops filled = table;
    if (filled.name == nullptr) filled.name = "unnamed";
    fill(filled.create, &not_supported_create);
    fill(filled.destroy, &nothing_to_destroy);
    fill(filled.socket, &not_supported_socket);
    fill(filled.bind, &not_supported_address);
    fill(filled.listen, &not_supported_listen);
    fill(filled.accept, &not_supported_operation);
    fill(filled.connect, &not_supported_operation);
    fill(filled.send, &not_supported_operation);
    fill(filled.recv, &not_supported_operation);
    fill(filled.getsockname, &not_supported_name);
    fill(filled.getpeername, &not_supported_name);
    fill(filled.getsockopt, &not_supported_getsockopt);
    fill(filled.setsockopt, &not_supported_setsockopt);
    fill(filled.close, &not_supported_close);
    fill(filled.progress, &not_supported_progress);
    fill(filled.progress_socket, &not_supported_progress_socket);
    fill(filled.event_fd, &not_supported_instance);
    fill(filled.wake, &not_supported_instance);
    fill(filled.query_memory, &not_supported_memory);
    fill(filled.register_memory, &not_supported_register);
    fill(filled.deregister_memory, &not_supported_deregister);
    fill(filled.memory_idle, &not_supported_deregister); // -EOPNOTSUPP: the caller deregisters instead
    fill(filled.describe_memory, &not_supported_describe);
    fill(filled.rdma, &not_supported_operation);
    return filled;
}

} // namespace sansock::provider
