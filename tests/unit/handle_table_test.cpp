// SPDX-License-Identifier: MIT
// The generation-checked handle table of lib/handle_table.hpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <set>

#include "lib/handle_table.hpp"

using sansock::handle_table;

TEST_CASE("An inserted object is found by its handle until it is removed") {
    handle_table<int> table(8);
    int a = 1, b = 2;
    const uint64_t ha = table.insert(&a);
    const uint64_t hb = table.insert(&b);
    REQUIRE(ha != 0);
    REQUIRE(hb != 0);
    CHECK(ha != hb);
    CHECK(table.size() == 2);
    CHECK(table.find(ha) == &a);
    CHECK(table.find(hb) == &b);

    CHECK(table.remove(ha) == &a);
    CHECK(table.size() == 1);
    CHECK(table.find(ha) == nullptr);
    CHECK(table.find(hb) == &b);
    // A second remove of the same handle finds nothing.
    CHECK(table.remove(ha) == nullptr);
    CHECK(table.size() == 1);
}

TEST_CASE("A handle stays invalid after its slot is reused") {
    handle_table<int> table(1);
    int a = 1, b = 2;
    const uint64_t old_handle = table.insert(&a);
    REQUIRE(table.remove(old_handle) == &a);
    const uint64_t new_handle = table.insert(&b);
    REQUIRE(new_handle != 0);
    // Same slot (capacity 1), new generation.
    CHECK(static_cast<uint32_t>(new_handle) == static_cast<uint32_t>(old_handle));
    CHECK(new_handle != old_handle);
    CHECK(table.find(old_handle) == nullptr);
    CHECK(table.remove(old_handle) == nullptr);
    CHECK(table.find(new_handle) == &b);
}

TEST_CASE("No handle is ever 0, and 0 or an unknown handle finds nothing") {
    handle_table<int> table(4);
    int object = 0;
    CHECK(table.find(0) == nullptr);
    CHECK(table.remove(0) == nullptr);
    CHECK(table.find(12345) == nullptr);
    CHECK(table.find(uint64_t(1) << 32) == nullptr); // slot 0, generation 1, never inserted
    std::set<uint64_t> seen;
    for (int round = 0; round < 10000; ++round) {
        const uint64_t handle = table.insert(&object);
        REQUIRE(handle != 0);
        // Every reuse of the slot gives a handle never seen before.
        CHECK(seen.insert(handle).second);
        REQUIRE(table.remove(handle) == &object);
    }
}

TEST_CASE("Insert returns 0 when the table is at capacity, and works again after a remove") {
    handle_table<int> table(3);
    int objects[4] = {};
    uint64_t handles[3];
    for (int i = 0; i < 3; ++i) {
        handles[i] = table.insert(&objects[i]);
        REQUIRE(handles[i] != 0);
    }
    CHECK(table.insert(&objects[3]) == 0);
    CHECK(table.size() == 3);
    REQUIRE(table.remove(handles[1]) == &objects[1]);
    const uint64_t again = table.insert(&objects[3]);
    CHECK(again != 0);
    CHECK(table.find(again) == &objects[3]);
    CHECK(table.insert(&objects[1]) == 0);
}

TEST_CASE("A table of capacity 0 holds nothing") {
    handle_table<int> table(0);
    int object = 0;
    CHECK(table.insert(&object) == 0);
    CHECK(table.size() == 0);
}

TEST_CASE("for_each visits exactly the live handles with their objects") {
    handle_table<int> table(16);
    int objects[10];
    std::map<uint64_t, int*> live;
    for (int i = 0; i < 10; ++i) {
        objects[i] = i;
        const uint64_t handle = table.insert(&objects[i]);
        REQUIRE(handle != 0);
        live[handle] = &objects[i];
    }
    // Remove every other one.
    int index = 0;
    for (auto it = live.begin(); it != live.end(); ++index) {
        if (index % 2 == 0) {
            REQUIRE(table.remove(it->first) == it->second);
            it = live.erase(it);
        } else {
            ++it;
        }
    }
    std::map<uint64_t, int*> visited;
    table.for_each([&](uint64_t handle, int* object) { visited[handle] = object; });
    CHECK(visited == live);
    CHECK(table.size() == live.size());

    handle_table<int> empty(4);
    int visits = 0;
    empty.for_each([&](uint64_t, int*) { ++visits; });
    CHECK(visits == 0);
}

TEST_CASE("A table started at its predecessor's next generation matches none of its handles") {
    std::set<uint64_t> old_handles;
    uint32_t next = 0;
    {
        handle_table<int> first(4);
        int a = 1;
        for (int round = 0; round < 5; ++round) { // slot 0 goes through five generations
            const uint64_t h = first.insert(&a);
            REQUIRE(h != 0);
            old_handles.insert(h);
            REQUIRE(first.remove(h) == &a);
        }
        const uint64_t other = first.insert(&a); // slot 0 again
        old_handles.insert(other);
        REQUIRE(first.remove(other) == &a);
        next = first.next_generation();
        CHECK(next == 7);
    }
    handle_table<int> second(4, next);
    int b = 2;
    for (int i = 0; i < 4; ++i) {
        const uint64_t h = second.insert(&b);
        REQUIRE(h != 0);
        CHECK(old_handles.count(h) == 0);
    }
    for (uint64_t h : old_handles) CHECK(second.find(h) == nullptr);
    CHECK(handle_table<int>(1, 0).insert(&b) != 0); // generation 0 is never used
}
