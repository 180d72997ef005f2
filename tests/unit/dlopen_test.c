/* SPDX-License-Identifier: MIT */
/* No hidden process state (docs/architecture.md, "Process state"): loads libsansock.so (its
 * path is argv[1]) with dlopen, runs a loopback context with a connection and a service
 * listener and channels (so the context's service threads start), destroys everything, and
 * checks that the threads are gone, that the memory in use is exactly what it was before the
 * context, and that dlclose really unloads the library (dlopen RTLD_NOLOAD then fails).
 *
 * Memory in use is counted by the malloc family below, which replaces glibc's (every library
 * of the process, libstdc++'s operator new and ld.so's TLS allocations included, comes here)
 * and forwards to it. Under AddressSanitizer or ThreadSanitizer the sanitizer owns malloc and
 * the count is its __sanitizer_get_current_allocated_bytes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sansock/sansock.h"
#include "sansock/service.h"

/* ---- memory in use --------------------------------------------------------------------------- */

#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#else
#define TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
size_t __sanitizer_get_current_allocated_bytes(void);
static long long bytes_in_use(void) { return (long long)__sanitizer_get_current_allocated_bytes(); }
static long long blocks_in_use(void) { return 0; }
#else
#define SANITIZED 0
extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t count, size_t size);
extern void* __libc_realloc(void* p, size_t size);
extern void* __libc_memalign(size_t alignment, size_t size);
extern void* __libc_valloc(size_t size);
extern void* __libc_pvalloc(size_t size);
extern void __libc_free(void* p);

static atomic_llong live_bytes;
static atomic_llong live_blocks;

static void* counted(void* p) {
    if (p != NULL) {
        atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p));
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}
static void uncount(void* p) {
    atomic_fetch_sub(&live_bytes, (long long)malloc_usable_size(p));
    atomic_fetch_sub(&live_blocks, 1);
}

void* malloc(size_t size) { return counted(__libc_malloc(size)); }
void* calloc(size_t count, size_t size) { return counted(__libc_calloc(count, size)); }
void* memalign(size_t alignment, size_t size) { return counted(__libc_memalign(alignment, size)); }
void* aligned_alloc(size_t alignment, size_t size) { return counted(__libc_memalign(alignment, size)); }
void* valloc(size_t size) { return counted(__libc_valloc(size)); }
void* pvalloc(size_t size) { return counted(__libc_pvalloc(size)); }
int posix_memalign(void** out, size_t alignment, size_t size) {
    if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
    void* p = counted(__libc_memalign(alignment, size));
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
void free(void* p) {
    if (p == NULL) return;
    uncount(p);
    __libc_free(p);
}
void* realloc(void* p, size_t size) {
    if (p == NULL) return malloc(size);
    const long long old = (long long)malloc_usable_size(p);
    if (size == 0) { /* glibc frees and returns NULL */
        free(p);
        return NULL;
    }
    void* q = __libc_realloc(p, size);
    if (q != NULL) atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(q) - old);
    return q;
}

static long long bytes_in_use(void) { return atomic_load(&live_bytes); }
static long long blocks_in_use(void) { return atomic_load(&live_blocks); }
#endif

/* ---- the library, through dlsym ----------------------------------------------------------------- */

static struct {
    __typeof__(sansock_context_attr_init)* context_attr_init;
    __typeof__(sansock_context_create)* context_create;
    __typeof__(sansock_context_destroy)* context_destroy;
    __typeof__(sansock_socket)* socket;
    __typeof__(sansock_bind)* bind;
    __typeof__(sansock_listen)* listen;
    __typeof__(sansock_accept)* accept;
    __typeof__(sansock_connect)* connect;
    __typeof__(sansock_send)* send;
    __typeof__(sansock_recv)* recv;
    __typeof__(sansock_close)* close;
    __typeof__(sansock_listener_create)* listener_create;
    __typeof__(sansock_listener_open)* listener_open;
    __typeof__(sansock_listener_address)* listener_address;
    __typeof__(sansock_listener_accept)* listener_accept;
    __typeof__(sansock_listener_close)* listener_close;
    __typeof__(sansock_listener_free)* listener_free;
    __typeof__(sansock_channel_create)* channel_create;
    __typeof__(sansock_channel_open)* channel_open;
    __typeof__(sansock_channel_send)* channel_send;
    __typeof__(sansock_channel_receive)* channel_receive;
    __typeof__(sansock_channel_close)* channel_close;
    __typeof__(sansock_channel_free)* channel_free;
} api;

static int failures = 0;

#define EXPECT(condition)                                                                  \
    do {                                                                                   \
        if (!(condition)) {                                                                \
            fprintf(stderr, "dlopen_test.c:%d: FAILED: %s\n", __LINE__, #condition);       \
            ++failures;                                                                    \
        }                                                                                  \
    } while (0)
#define REQUIRE(condition)                                                                 \
    do {                                                                                   \
        if (!(condition)) {                                                                \
            fprintf(stderr, "dlopen_test.c:%d: FAILED (fatal): %s\n", __LINE__, #condition); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static void resolve(void* library, void* slot, const char* name) {
    void* symbol = dlsym(library, name);
    if (symbol == NULL) {
        fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
        exit(1);
    }
    memcpy(slot, &symbol, sizeof symbol); /* POSIX: a function pointer has an object pointer's representation */
}

static void resolve_all(void* library) {
#define RESOLVE(field, name) resolve(library, &api.field, name)
    RESOLVE(context_attr_init, "sansock_context_attr_init");
    RESOLVE(context_create, "sansock_context_create");
    RESOLVE(context_destroy, "sansock_context_destroy");
    RESOLVE(socket, "sansock_socket");
    RESOLVE(bind, "sansock_bind");
    RESOLVE(listen, "sansock_listen");
    RESOLVE(accept, "sansock_accept");
    RESOLVE(connect, "sansock_connect");
    RESOLVE(send, "sansock_send");
    RESOLVE(recv, "sansock_recv");
    RESOLVE(close, "sansock_close");
    RESOLVE(listener_create, "sansock_listener_create");
    RESOLVE(listener_open, "sansock_listener_open");
    RESOLVE(listener_address, "sansock_listener_address");
    RESOLVE(listener_accept, "sansock_listener_accept");
    RESOLVE(listener_close, "sansock_listener_close");
    RESOLVE(listener_free, "sansock_listener_free");
    RESOLVE(channel_create, "sansock_channel_create");
    RESOLVE(channel_open, "sansock_channel_open");
    RESOLVE(channel_send, "sansock_channel_send");
    RESOLVE(channel_receive, "sansock_channel_receive");
    RESOLVE(channel_close, "sansock_channel_close");
    RESOLVE(channel_free, "sansock_channel_free");
#undef RESOLVE
}

/* ---- helpers ------------------------------------------------------------------------------------ */

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int threads(void) {
    int n = 0;
    DIR* d = opendir("/proc/self/task");
    REQUIRE(d != NULL);
    for (struct dirent* e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

/* A joined thread may stay listed for a moment after pthread_join: wait (bounded). */
static int threads_settle_at(int expected) {
    for (int i = 0; i < 500; ++i) {
        const int n = threads();
        if (n == expected) return n;
        sleep_ms(10);
    }
    return threads();
}

/* glibc keeps the stacks of exited threads cached for reuse (mmap'd, not counted here)
 * together with each one's TLS descriptor (the DTV, calloc'd by ld.so in pthread_create
 * through our malloc), freed only when the cache drops the stack. So the first threads a
 * process ever has leave one DTV each behind. Warm-up: start and join as many threads at once
 * as a context has (its progress thread, the service engine's job and callback threads) plus
 * one, before measuring; sansock's threads then reuse those stacks. */
enum { warm_threads = 4 };
static pthread_barrier_t warm_barrier;
static void* warm_thread(void* arg) {
    pthread_barrier_wait(&warm_barrier);
    return arg;
}
static void warm_thread_cache(void) {
    pthread_t t[warm_threads];
    REQUIRE(pthread_barrier_init(&warm_barrier, NULL, warm_threads) == 0);
    for (int i = 0; i < warm_threads; ++i) REQUIRE(pthread_create(&t[i], NULL, warm_thread, NULL) == 0);
    for (int i = 0; i < warm_threads; ++i) REQUIRE(pthread_join(t[i], NULL) == 0);
    pthread_barrier_destroy(&warm_barrier);
}

static struct sockaddr_in ipv4(const char* dotted, uint16_t port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    REQUIRE(inet_pton(AF_INET, dotted, &a.sin_addr) == 1);
    return a;
}

static atomic_int accept_result = 1; /* 1: no callback yet */
static void on_accepted(int result, void* state) {
    (void)state;
    atomic_store(&accept_result, result);
}

/* One life of a context: sockets, then service objects, then nothing. */
static void one_cycle(void) {
    struct sansock_context_attr attr;
    api.context_attr_init(&attr);
    attr.provider = SANSOCK_PROVIDER_LOOPBACK;
    attr.progress_mode = SANSOCK_PROGRESS_THREAD;
    sansock_context* ctx = NULL;
    REQUIRE(api.context_create(&attr, &ctx) == 0);

    /* A connection, some bytes each way. */
    const struct sockaddr_in at = ipv4("10.8.8.8", 7000);
    sansock_socket_t l = 0, c = 0, a = 0;
    REQUIRE(api.socket(ctx, &l) == 0);
    REQUIRE(api.bind(l, (const struct sockaddr*)&at, sizeof at) == 0);
    REQUIRE(api.listen(l, 4) == 0);
    REQUIRE(api.socket(ctx, &c) == 0);
    REQUIRE(api.connect(c, (const struct sockaddr*)&at, sizeof at) == 0);
    REQUIRE(api.accept(l, &a, NULL, NULL) == 0);
    char out[4096], in[4096];
    for (size_t i = 0; i < sizeof out; ++i) out[i] = (char)i;
    for (int round = 0; round < 8; ++round) {
        EXPECT(api.send(c, out, sizeof out, 0) == (ssize_t)sizeof out);
        EXPECT(api.recv(a, in, sizeof in, MSG_WAITALL) == (ssize_t)sizeof in);
        EXPECT(memcmp(in, out, sizeof in) == 0);
        EXPECT(api.send(a, "ok", 2, 0) == 2);
        EXPECT(api.recv(c, in, 2, MSG_WAITALL) == 2);
    }
    EXPECT(api.close(c) == 0);
    EXPECT(api.close(a) == 0);
    EXPECT(api.close(l) == 0);

    /* A service listener and two channels: the context's service threads start. */
    sansock_listener* listener = NULL;
    REQUIRE(api.listener_create(ctx, NULL, &listener) == 0);
    const struct sockaddr_in any_port = ipv4("10.8.8.8", 0);
    REQUIRE(api.listener_open(listener, (const struct sockaddr*)&any_port, sizeof any_port, NULL) == 0);
    struct sockaddr_in bound;
    socklen_t bound_length = sizeof bound;
    REQUIRE(api.listener_address(listener, (struct sockaddr*)&bound, &bound_length) == 0);
    const struct sansock_channel_attr kind = {sizeof kind, SANSOCK_CHANNEL_NONSESSION, 0, 0};
    sansock_channel *client = NULL, *server = NULL;
    REQUIRE(api.channel_create(ctx, &kind, &client) == 0);
    REQUIRE(api.channel_create(ctx, &kind, &server) == 0);
    atomic_store(&accept_result, 1);
    const struct sansock_async_context async = {on_accepted, NULL};
    REQUIRE(api.listener_accept(listener, server, &async) == -EINPROGRESS);
    REQUIRE(api.channel_open(client, (const struct sockaddr*)&bound, bound_length, NULL) == 0);
    for (int i = 0; i < 1000 && atomic_load(&accept_result) == 1; ++i) sleep_ms(10);
    REQUIRE(atomic_load(&accept_result) == 0);
    EXPECT(api.channel_send(client, "hello", 5) == 0);
    size_t size = 0;
    EXPECT(api.channel_receive(server, in, sizeof in, &size) == 0);
    EXPECT(size == 5 && memcmp(in, "hello", 5) == 0);
    EXPECT(api.channel_close(client, NULL) == 0);
    EXPECT(api.channel_close(server, NULL) == 0);
    EXPECT(api.channel_free(client) == 0);
    EXPECT(api.channel_free(server) == 0);
    EXPECT(api.listener_close(listener, NULL) == 0);
    EXPECT(api.listener_free(listener) == 0);

    EXPECT(api.context_destroy(ctx) == 0);
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen_test path/to/libsansock.so\n");
        return 2;
    }
    const char* path = argv[1];
    REQUIRE(dlopen(path, RTLD_NOW | RTLD_NOLOAD) == NULL); /* not loaded yet */
    const int threads_at_start = threads();
    void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        return 1;
    }
    resolve_all(library);

    /* Nothing of sansock runs before the first context: loading started no thread. */
    const int threads_loaded = threads();
    EXPECT(threads_loaded == threads_at_start);
    warm_thread_cache();
    /* ThreadSanitizer starts a background thread of its own with the process's first thread. */
    const int threads_before = threads_settle_at(threads_loaded + TSAN);
    EXPECT(threads_before == threads_loaded + TSAN);
    /* Measured before anything is printed: stdout's buffer is allocated by the first printf. */
    const long long bytes_before = bytes_in_use(), blocks_before = blocks_in_use();

    long long bytes_after[2], blocks_after[2];
    int threads_after[2];
    for (int cycle = 0; cycle < 2; ++cycle) { /* the first context of the process, then another */
        one_cycle();
        threads_after[cycle] = threads_settle_at(threads_before);
        bytes_after[cycle] = bytes_in_use();
        blocks_after[cycle] = blocks_in_use();
    }
    printf("before the first context: %d threads, %lld bytes in %lld blocks in use\n", threads_before, bytes_before,
           blocks_before);
    for (int cycle = 0; cycle < 2; ++cycle) {
        printf("after context %d is destroyed: %d threads, %lld bytes in %lld blocks\n", cycle + 1,
               threads_after[cycle], bytes_after[cycle], blocks_after[cycle]);
        EXPECT(threads_after[cycle] == threads_before);
        EXPECT(bytes_after[cycle] == bytes_before);
        EXPECT(blocks_after[cycle] == blocks_before);
    }
    if (failures != 0) { /* threads may still run in the library: do not unload it under them */
        fprintf(stderr, "dlopen_test: %d check(s) failed\n", failures);
        return 1;
    }

    EXPECT(dlclose(library) == 0);
    void* again = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    EXPECT(again == NULL); /* really unloaded */
    if (again != NULL)
        dlclose(again);
    else
        printf("dlclose unloaded %s\n", path);
    if (SANITIZED) printf("(memory counted by the sanitizer's allocator)\n");
    return failures == 0 ? 0 : 1;
}
