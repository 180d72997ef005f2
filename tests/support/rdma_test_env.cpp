// SPDX-License-Identifier: MIT
// Device discovery and resource accounting for the rxe test suite.
#include "tests/support/rdma_test_env.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <infiniband/verbs.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "provider/verbs/verbs_objects.hpp"

namespace sansock::test {

namespace {

template <typename Visit>
void for_each_active_port(Visit&& visit) {
    int count = 0;
    verbs::device_list devices(ibv_get_device_list(&count));
    if (!devices) return;
    // SANSOCK_TEST_DEVICE (sansock-bench --device) limits the search to one device.
    const char* wanted = std::getenv("SANSOCK_TEST_DEVICE");
    for (int d = 0; d < count; ++d) {
        if (wanted != nullptr && *wanted != '\0' && std::strcmp(ibv_get_device_name(devices.get()[d]), wanted) != 0)
            continue;
        verbs::device_context context(ibv_open_device(devices.get()[d]));
        if (!context) continue;
        ibv_device_attr device_attr{};
        if (ibv_query_device(context.get(), &device_attr) != 0) continue;
        for (uint8_t port = 1; port <= device_attr.phys_port_cnt; ++port) {
            ibv_port_attr port_attr{};
            if (ibv_query_port(context.get(), port, &port_attr) != 0) continue;
            if (port_attr.state != IBV_PORT_ACTIVE) continue;
            if (visit(context.get(), port, port_attr)) return;
        }
    }
}

} // namespace

bool rdma_device_present() {
    bool found = false;
    for_each_active_port([&](ibv_context*, uint8_t, const ibv_port_attr&) { return found = true; });
    return found;
}

std::string test_address() {
    if (const char* configured = std::getenv("SANSOCK_TEST_ADDR"); configured && *configured)
        return configured;
    std::string address;
    for_each_active_port([&](ibv_context* context, uint8_t port, const ibv_port_attr& attr) {
        for (int index = 0; index < attr.gid_tbl_len; ++index) {
            ibv_gid gid{};
            if (ibv_query_gid(context, port, index, &gid) != 0) continue;
            static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (std::memcmp(gid.raw, v4_mapped_prefix, sizeof v4_mapped_prefix) != 0) continue;
            char text[INET_ADDRSTRLEN];
            if (inet_ntop(AF_INET, gid.raw + 12, text, sizeof text) == nullptr) continue;
            address = text;
            return true;
        }
        return false;
    });
    return address;
}

std::string command_output(const std::string& command) {
    std::string output;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return output;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
    if (pclose(pipe) != 0) output.clear();
    return output;
}

std::map<std::string, long> rdma_resource_counts() {
    // Lines look like "0: rxe0: pd 2 cq 3 qp 4 cm_id 0 mr 0 ctx 0 srq 2".
    std::map<std::string, long> counts;
    std::istringstream lines(command_output("rdma resource show 2>/dev/null"));
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string word, previous;
        while (words >> word) {
            char* end = nullptr;
            long value = std::strtol(word.c_str(), &end, 10);
            if (!previous.empty() && end != word.c_str() && *end == '\0' && previous.back() != ':')
                counts[previous] += value;
            previous = word;
        }
    }
    return counts;
}

long rdma_resource_count_of_pid(const std::string& type, int pid) {
    // The listing names the thread that created each object: match any thread of `pid`.
    std::set<std::string> needles;
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    if (DIR* dir = opendir(tasks.c_str())) {
        while (dirent* entry = readdir(dir))
            if (entry->d_name[0] != '.') needles.insert(std::string(" pid ") + entry->d_name + " ");
        closedir(dir);
    }
    needles.insert(" pid " + std::to_string(pid) + " ");
    std::istringstream lines(command_output("rdma resource show " + type + " 2>/dev/null"));
    long count = 0;
    std::string line;
    while (std::getline(lines, line)) {
        line += " ";
        for (const std::string& needle : needles)
            if (line.find(needle) != std::string::npos) {
                ++count;
                break;
            }
    }
    return count;
}

} // namespace sansock::test
