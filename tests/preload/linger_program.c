/* SPDX-License-Identifier: MIT */
/* A plain POSIX program (it knows nothing of sansock) for the preload's close tests in the rxe
 * suite: run under sansock-run, its SO_LINGER settings must get the switch's close semantics.
 *   linger_program receive ADDR PORT DELAY_MS   accepts one connection, waits DELAY_MS, reads
 *       to the end; prints "bytes N end" (end of stream), or "bytes N reset" (ECONNRESET)
 *   linger_program send ADDR PORT MODE BYTES    connects, writes BYTES, closes; MODE is
 *       default, abort (SO_LINGER {1, 0}) or linger (SO_LINGER {1, 10}); prints
 *       "close R errno E after MS ms". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int fail(const char* what) {
    fprintf(stderr, "linger_program: %s: %s\n", what, strerror(errno));
    return 2;
}

int main(int argc, char** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: linger_program receive ADDR PORT DELAY_MS | send ADDR PORT MODE BYTES\n");
        return 2;
    }
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &address.sin_addr) != 1) return fail("address");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket");
    static char buffer[1 << 16];
    if (strcmp(argv[1], "receive") == 0) {
        const int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, (struct sockaddr*)&address, sizeof address) != 0) return fail("bind");
        if (listen(fd, 1) != 0) return fail("listen");
        printf("listening\n");
        fflush(stdout);
        const int c = accept(fd, NULL, NULL);
        if (c < 0) return fail("accept");
        usleep((useconds_t)atoi(argv[4]) * 1000);
        long long total = 0;
        for (;;) {
            const ssize_t n = read(c, buffer, sizeof buffer);
            if (n > 0) {
                total += n;
                continue;
            }
            printf("bytes %lld %s\n", total, n == 0 ? "end" : errno == ECONNRESET ? "reset" : strerror(errno));
            return 0;
        }
    }
    if (strcmp(argv[1], "send") != 0 || argc < 6) return fail("usage");
    if (connect(fd, (struct sockaddr*)&address, sizeof address) != 0) return fail("connect");
    long long left = atoll(argv[5]);
    memset(buffer, 'x', sizeof buffer);
    while (left > 0) {
        const ssize_t n = write(fd, buffer, left < (long long)sizeof buffer ? (size_t)left : sizeof buffer);
        if (n <= 0) return fail("write");
        left -= n;
    }
    struct linger l = {0, 0};
    if (strcmp(argv[4], "abort") == 0) l = (struct linger){1, 0};
    else if (strcmp(argv[4], "linger") == 0) l = (struct linger){1, 10};
    else if (strcmp(argv[4], "default") != 0) return fail("mode");
    if (l.l_onoff && setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0) return fail("SO_LINGER");
    const double start = now_ms();
    errno = 0;
    const int r = close(fd);
    printf("close %d errno %d after %.0f ms\n", r, r == 0 ? 0 : errno, now_ms() - start);
    return 0;
}
