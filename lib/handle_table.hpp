// SPDX-License-Identifier: MIT
// Handles with generations: a slot index in the low 32 bits and the slot's generation in the
// high 32, so a handle stays invalid after its slot is reused. Not thread-safe: the owner
// holds its own lock around every call.
#pragma once

#include <algorithm>
#include <cstdint>
#include <new>
#include <vector>

namespace sansock {

template <typename T>
class handle_table {
public:
    // Every slot's first handle has generation `first_generation` (never 0): a table that
    // replaces another starts at the old one's next_generation(), so no handle of the old
    // table ever matches in the new one.
    explicit handle_table(uint32_t capacity, uint32_t first_generation = 1)
        : capacity_(capacity), first_generation_(first_generation != 0 ? first_generation : 1) {}

    // A new handle for `object` (never 0), or 0 when the table is full or no memory is left
    // to grow it.
    uint64_t insert(T* object) noexcept {
        uint32_t index;
        if (!free_.empty()) {
            index = free_.back();
            free_.pop_back();
        } else {
            if (slots_.size() >= capacity_) return 0;
            index = static_cast<uint32_t>(slots_.size());
            try {
                // Room in free_ for every slot, so that remove never allocates (closes must
                // work with no memory left).
                if (free_.capacity() < slots_.size() + 1) free_.reserve(std::max<size_t>(2 * slots_.size(), 8));
                slots_.push_back({nullptr, first_generation_});
            } catch (const std::bad_alloc&) {
                return 0;
            }
        }
        slot& s = slots_[index];
        s.object = object;
        ++size_;
        return make_handle(index, s.generation);
    }

    // The object behind `handle`, or nullptr if it is not (or no longer) a live handle.
    T* find(uint64_t handle) const {
        const uint32_t index = static_cast<uint32_t>(handle);
        if (handle == 0 || index >= slots_.size()) return nullptr;
        const slot& s = slots_[index];
        return s.object != nullptr && s.generation == generation_of(handle) ? s.object : nullptr;
    }

    // Releases `handle`; returns its object, or nullptr if it was not live. The slot's
    // generation advances, so the old handle never matches again. Never allocates.
    T* remove(uint64_t handle) noexcept {
        T* object = find(handle);
        if (object == nullptr) return nullptr;
        const uint32_t index = static_cast<uint32_t>(handle);
        slot& s = slots_[index];
        s.object = nullptr;
        // Generation 0 is skipped so that no handle is ever 0.
        if (++s.generation == 0) s.generation = 1;
        free_.push_back(index);
        --size_;
        return object;
    }

    uint32_t size() const { return size_; }

    // Once the table is empty: a generation above that of every handle it gave out (a
    // successor's first_generation), the largest next generation of any slot.
    uint32_t next_generation() const {
        uint32_t next = first_generation_;
        for (const slot& s : slots_) next = std::max(next, s.generation);
        return next;
    }

    template <typename Visit>
    void for_each(Visit&& visit) const {
        for (uint32_t index = 0; index < slots_.size(); ++index)
            if (slots_[index].object != nullptr)
                visit(make_handle(index, slots_[index].generation), slots_[index].object);
    }

private:
    struct slot {
        T* object = nullptr;
        uint32_t generation = 1;
    };
    static uint64_t make_handle(uint32_t index, uint32_t generation) {
        return (uint64_t(generation) << 32) | index;
    }
    static uint32_t generation_of(uint64_t handle) { return static_cast<uint32_t>(handle >> 32); }

    uint32_t capacity_;
    uint32_t first_generation_;
    uint32_t size_ = 0;
    std::vector<slot> slots_;
    std::vector<uint32_t> free_;
};

} // namespace sansock
