// SPDX-License-Identifier: MIT
// The error model of docs/semantics.md section 1 and the verbs error adapter.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "provider/verbs/verbs_call.hpp"
#include "sansock/errors.h"

TEST_CASE("Each Windows condition has its named negated errno") {
    CHECK(SANSOCK_E_NOTSOCK == -ENOTSOCK);
    CHECK(SANSOCK_E_OPERATION_ABORTED == -ECANCELED);
    CHECK(SANSOCK_E_CONNRESET == -ECONNRESET);
    CHECK(SANSOCK_E_WOULDBLOCK == -EWOULDBLOCK);
    CHECK(SANSOCK_E_NETDOWN == -ENETDOWN);
    CHECK(SANSOCK_E_ASYNC == -EINPROGRESS);
    CHECK(SANSOCK_E_INVALID_OPERATION == -EBADFD);
    CHECK(SANSOCK_E_OBJECT_FAULTED == -ENOTRECOVERABLE);
    CHECK(SANSOCK_E_TIMED_OUT == -ETIMEDOUT);
    CHECK(SANSOCK_E_INVALIDARG == -EINVAL);
}

TEST_CASE("sansock_strerror names the Windows condition of every sansock code") {
    struct expectation {
        int code;
        const char* windows_name;
    };
    const expectation expected[] = {
        {SANSOCK_E_NOTSOCK, "WSAENOTSOCK"},
        {SANSOCK_E_OPERATION_ABORTED, "WSA_OPERATION_ABORTED"},
        {SANSOCK_E_CONNRESET, "WSAECONNRESET"},
        {SANSOCK_E_WOULDBLOCK, "WSAEWOULDBLOCK"},
        {SANSOCK_E_NETDOWN, "WSAENETDOWN"},
        {SANSOCK_E_ASYNC, "WS_S_ASYNC"},
        {SANSOCK_E_INVALID_OPERATION, "WS_E_INVALID_OPERATION"},
        {SANSOCK_E_OBJECT_FAULTED, "WS_E_OBJECT_FAULTED"},
        {SANSOCK_E_TIMED_OUT, "WS_E_OPERATION_TIMED_OUT"},
        {SANSOCK_E_INVALIDARG, "E_INVALIDARG"},
    };
    for (const auto& e : expected) {
        INFO("code " << e.code);
        REQUIRE(sansock_strerror(e.code) != nullptr);
        CHECK(std::string(sansock_strerror(e.code)).find(e.windows_name) != std::string::npos);
    }
}

TEST_CASE("sansock_strerror never returns NULL, whatever the code") {
    CHECK(std::string(sansock_strerror(0)) == "success");
    CHECK(std::string(sansock_strerror(-ENOMEM)) == strerrordesc_np(ENOMEM));
    for (int code : {1, 42, -100000, -4096, INT32_MIN + 1, INT32_MIN, INT32_MAX}) {
        INFO("code " << code);
        const char* text = sansock_strerror(code);
        REQUIRE(text != nullptr);
        CHECK(std::strlen(text) > 0);
    }
}

TEST_CASE("The verbs adapter turns each rdma-core convention into a negated errno") {
    using sansock::verbs::checked;
    SUBCASE("0 is success") { CHECK(checked(0) == 0); }
    SUBCASE("libibverbs' positive errno") { CHECK(checked(EINVAL) == -EINVAL); }
    SUBCASE("librdmacm's -1 with errno") {
        errno = EADDRINUSE;
        CHECK(checked(-1) == -EADDRINUSE);
    }
    SUBCASE("-1 with errno left at 0 is still a failure") {
        errno = 0;
        CHECK(checked(-1) == -EIO);
    }
    SUBCASE("a provider's negative errno passes through") { CHECK(checked(-ENOMEM) == -ENOMEM); }
    SUBCASE("a NULL pointer with errno") {
        errno = ENODEV;
        CHECK(sansock::verbs::checked_pointer(static_cast<void*>(nullptr)) == -ENODEV);
        int x = 0;
        CHECK(sansock::verbs::checked_pointer(&x) == 0);
    }
}
