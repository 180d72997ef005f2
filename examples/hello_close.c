/* SPDX-License-Identifier: MIT */
/* Connect, send, close gracefully; the other end reads it all, then end of stream. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "sansock/sansock.h"

int main(int argc, char** argv) {
    struct sansock_context_attr attr;
    sansock_context_attr_init(&attr); /* verbs provider, own progress thread */
    if (argc > 2 && strcmp(argv[2], "loopback") == 0) attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof addr;
    inet_pton(AF_INET, argc > 1 ? argv[1] : "10.0.0.1", &addr.sin_addr); /* the device's */
    sansock_context* ctx;
    sansock_socket_t server, client, peer;
    int rc = sansock_context_create(&attr, &ctx);
    if (rc == 0) rc = sansock_socket(ctx, &server);
    if (rc == 0) rc = sansock_bind(server, (struct sockaddr*)&addr, len);
    if (rc == 0) rc = sansock_listen(server, 4);
    if (rc == 0) rc = sansock_getsockname(server, (struct sockaddr*)&addr, &len); /* the port */
    if (rc == 0) rc = sansock_socket(ctx, &client);
    if (rc == 0) rc = sansock_connect(client, (struct sockaddr*)&addr, len);
    if (rc < 0) return fprintf(stderr, "set-up failed: %s\n", sansock_strerror(rc)), 1;
    const char message[] = "hello over RDMA";
    sansock_send(client, message, sizeof message, 0);
    sansock_close(client); /* SO_DONTLINGER: returns at once, and the data still arrives */
    sansock_accept(server, &peer, NULL, NULL);
    char got[64];
    ssize_t n, total = 0;
    while ((n = sansock_recv(peer, got + total, sizeof got - total, 0)) > 0) total += n;
    printf("received \"%s\" (%zd bytes), then %s\n", got, total,
           n == 0 ? "end of stream" : sansock_strerror((int)n));
    sansock_close(peer);
    sansock_close(server);
    sansock_context_destroy(ctx);
    return n == 0 && total == sizeof message && memcmp(got, message, total) == 0 ? 0 : 1;
}
