// SPDX-License-Identifier: MIT
// An outside C++17 program over the RAII header: a connection on the loopback provider, a
// message, a graceful close, end of stream. Exit 0 only if everything arrived.
#include <arpa/inet.h>

#include <cstdio>
#include <cstring>

#include <sansock/sansock.hpp>

int main() {
    sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    sansock::context_owner ctx;
    if (int rc = sansock::context_owner::create(&attr, ctx); rc < 0)
        return std::fprintf(stderr, "context: %s\n", sansock_strerror(rc)), 1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, "10.8.8.8", &addr.sin_addr);
    socklen_t len = sizeof addr;
    sansock::socket_owner server, client;
    sansock_socket_t accepted = 0;
    int rc = sansock::socket_owner::open(ctx.get(), server);
    if (rc == 0) rc = sansock_bind(server.get(), reinterpret_cast<sockaddr*>(&addr), len);
    if (rc == 0) rc = sansock_listen(server.get(), 4);
    if (rc == 0) rc = sansock_getsockname(server.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    if (rc == 0) rc = sansock::socket_owner::open(ctx.get(), client);
    if (rc == 0) rc = sansock_connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len);
    if (rc == 0) rc = sansock_accept(server.get(), &accepted, nullptr, nullptr);
    if (rc < 0) return std::fprintf(stderr, "set-up failed: %s\n", sansock_strerror(rc)), 1;
    sansock::socket_owner peer(accepted);
    const char message[] = "an outside C++ program";
    if (sansock_send(client.get(), message, sizeof message, 0) != static_cast<ssize_t>(sizeof message)) return 1;
    if (client.close() != 0) return 1;
    char got[64];
    ssize_t n, total = 0;
    while ((n = sansock_recv(peer.get(), got + total, sizeof got - total, 0)) > 0) total += n;
    if (n != 0 || total != static_cast<ssize_t>(sizeof message) || std::memcmp(got, message, sizeof message) != 0)
        return std::fprintf(stderr, "received %zd bytes, then %zd\n", total, n), 1;
    std::printf("sansock %s from C++: received \"%s\", then end of stream\n", SANSOCK_VERSION_STRING, got);
    return 0;
}
