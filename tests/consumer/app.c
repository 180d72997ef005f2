/* SPDX-License-Identifier: MIT */
/* An outside C program: found through pkg-config (or as a meson subproject), it checks the
 * version it was built against, then moves a message over the loopback provider and reads it
 * back to end of stream. Exit 0 only if everything arrived. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <sansock/sansock.h>

int main(void) {
    if (sansock_version() / 10000 != SANSOCK_VERSION_MAJOR)
        return fprintf(stderr, "built against %s, loaded %d\n", SANSOCK_VERSION_STRING, sansock_version()), 1;
    struct sansock_context_attr attr;
    sansock_context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof addr;
    inet_pton(AF_INET, "10.7.7.7", &addr.sin_addr);
    sansock_context* ctx;
    sansock_socket_t server, client, peer;
    int rc = sansock_context_create(&attr, &ctx);
    if (rc == 0) rc = sansock_socket(ctx, &server);
    if (rc == 0) rc = sansock_bind(server, (struct sockaddr*)&addr, len);
    if (rc == 0) rc = sansock_listen(server, 4);
    if (rc == 0) rc = sansock_getsockname(server, (struct sockaddr*)&addr, &len);
    if (rc == 0) rc = sansock_socket(ctx, &client);
    if (rc == 0) rc = sansock_connect(client, (struct sockaddr*)&addr, len);
    if (rc == 0) rc = sansock_accept(server, &peer, NULL, NULL);
    if (rc < 0) return fprintf(stderr, "set-up failed: %s\n", sansock_strerror(rc)), 1;
    const char message[] = "an outside C program";
    if (sansock_send(client, message, sizeof message, 0) != (ssize_t)sizeof message) return 1;
    sansock_close(client);
    char got[64];
    ssize_t n, total = 0;
    while ((n = sansock_recv(peer, got + total, sizeof got - total, 0)) > 0) total += n;
    sansock_close(peer);
    sansock_close(server);
    sansock_context_destroy(ctx);
    if (n != 0 || total != (ssize_t)sizeof message || memcmp(got, message, sizeof message) != 0)
        return fprintf(stderr, "received %zd bytes, then %zd\n", total, n), 1;
    printf("sansock %s: received \"%s\", then end of stream\n", SANSOCK_VERSION_STRING, got);
    return 0;
}
