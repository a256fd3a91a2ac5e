// vectoradd_cu's harness: the field's protocol (`key: value` lines on POPCORN_FD) in CUDA C++.
// Usage: eval.out {test|benchmark|leaderboard|profile} CASES_FILE
// Exit codes: 0 pass, 110 CUDA failure, 111 no pipe, 112 check failed, 113 bad test spec.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "task.h"

static FILE* g_out = nullptr;

static void emit(const std::string& key, const std::string& value) {
    std::fprintf(g_out, "%s: %s\n", key.c_str(), value.c_str());
    std::fflush(g_out);
}

static std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

#define CHECK_CUDA(call)                                                                  \
    do {                                                                                  \
        cudaError_t err_ = (call);                                                        \
        if (err_ != cudaSuccess) {                                                        \
            std::fprintf(stderr, "CUDA error: %s failed: %s\n", #call,                    \
                         cudaGetErrorString(err_));                                       \
            emit("error", std::string("CUDA error: ") + cudaGetErrorString(err_));       \
            emit("check", "fail");                                                        \
            std::exit(110);                                                               \
        }                                                                                 \
    } while (0)

struct Case {
    std::string spec;
    long long size = 0;
    long long seed = 0;
};

static std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t\r\n");
    size_t b = s.find_last_not_of(" \t\r\n");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

static bool read_cases(const char* path, std::vector<Case>& cases) {
    std::ifstream in(path);
    if (!in) return false;
    std::string line;
    while (std::getline(in, line)) {
        line = trim(line);
        if (line.empty()) continue;
        Case c;
        c.spec = line;
        std::stringstream parts(line);
        std::string part;
        while (std::getline(parts, part, ';')) {
            size_t colon = part.find(':');
            if (colon == std::string::npos) return false;
            std::string key = trim(part.substr(0, colon));
            long long value = std::atoll(trim(part.substr(colon + 1)).c_str());
            if (key == "size") c.size = value;
            else if (key == "seed") c.seed = value;
        }
        if (c.size <= 0 || c.size > (1LL << 30)) return false;
        cases.push_back(c);
    }
    return true;
}

// Deterministic inputs in [-1, 1) from a splitmix64 stream.
static void generate(long long seed, std::vector<float>& a, std::vector<float>& b) {
    uint64_t x = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull + 1;
    auto next = [&x]() {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return static_cast<float>((z >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
    };
    for (size_t i = 0; i < a.size(); ++i) {
        a[i] = next();
        b[i] = next();
    }
}

struct Buffers {
    int n;
    float *a = nullptr, *b = nullptr, *c = nullptr;
    std::vector<float> ha, hb, hc;
    explicit Buffers(int n_) : n(n_), ha(n_), hb(n_), hc(n_) {
        CHECK_CUDA(cudaMalloc(&a, sizeof(float) * n));
        CHECK_CUDA(cudaMalloc(&b, sizeof(float) * n));
        CHECK_CUDA(cudaMalloc(&c, sizeof(float) * n));
    }
    ~Buffers() {
        cudaFree(a);
        cudaFree(b);
        cudaFree(c);
    }
    void upload(long long seed) {
        generate(seed, ha, hb);
        CHECK_CUDA(cudaMemcpy(a, ha.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(b, hb.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemset(c, 0, sizeof(float) * n));
    }
    // "" when c == a + b within rtol/atol 1e-5 (a NaN anywhere is a mismatch), else the reason.
    std::string check() {
        CHECK_CUDA(cudaMemcpy(hc.data(), c, sizeof(float) * n, cudaMemcpyDeviceToHost));
        long long bad = 0, first = -1;
        for (int i = 0; i < n; ++i) {
            float want = ha[i] + hb[i];
            bool ok = !std::isnan(hc[i]) && std::fabs(hc[i] - want) <= 1e-5f + 1e-5f * std::fabs(want);
            if (!ok) {
                if (first < 0) first = i;
                ++bad;
            }
        }
        if (!bad) return "";
        char buf[200];
        std::snprintf(buf, sizeof buf, "%lld of %d elements mismatch; at %lld: got %g, expected %g",
                      bad, n, first, hc[first], ha[first] + hb[first]);
        return buf;
    }
};

static long long secret_seed() {
    const char* s = std::getenv("POPCORN_SEED");
    return s ? std::atoll(s) : 0;
}

static bool run_tests(const std::vector<Case>& cases) {
    emit("test-count", std::to_string(cases.size()));
    bool ok = !cases.empty();
    for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        std::string p = "test." + std::to_string(i) + ".";
        emit(p + "spec", c.spec);
        Buffers buf(static_cast<int>(c.size));
        buf.upload(c.seed + secret_seed());
        vectoradd(buf.a, buf.b, buf.c, buf.n);
        CHECK_CUDA(cudaGetLastError());
        CHECK_CUDA(cudaDeviceSynchronize());
        std::string err = buf.check();
        emit(p + "status", err.empty() ? "pass" : "fail");
        if (!err.empty()) {
            emit(p + "error", err);
            ok = false;
        }
    }
    return ok;
}

static bool run_benchmarks(const std::vector<Case>& cases, bool recheck, int max_repeats) {
    emit("benchmark-count", std::to_string(cases.size()));
    bool ok = !cases.empty();
    // Writing 256 MiB before each timed call evicts the inputs from L2.
    const size_t flush_bytes = 256u << 20;
    void* flush = nullptr;
    CHECK_CUDA(cudaMalloc(&flush, flush_bytes));
    cudaEvent_t start, end;
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&end));
    for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        std::string p = "benchmark." + std::to_string(i) + ".";
        emit(p + "spec", c.spec);
        Buffers buf(static_cast<int>(c.size));
        long long seed = c.seed + secret_seed();
        buf.upload(seed);
        vectoradd(buf.a, buf.b, buf.c, buf.n);  // correctness first; also the first warm-up
        CHECK_CUDA(cudaGetLastError());
        CHECK_CUDA(cudaDeviceSynchronize());
        std::string err = buf.check();
        for (int w = 0; w < 3 && err.empty(); ++w) vectoradd(buf.a, buf.b, buf.c, buf.n);
        CHECK_CUDA(cudaDeviceSynchronize());
        std::vector<double> ns;
        double elapsed_total = 0;
        for (int r = 0; r < max_repeats && err.empty(); ++r) {
            if (recheck) buf.upload(seed + r + 1);
            CHECK_CUDA(cudaMemset(flush, r & 0xff, flush_bytes));
            CHECK_CUDA(cudaEventRecord(start));
            vectoradd(buf.a, buf.b, buf.c, buf.n);
            CHECK_CUDA(cudaEventRecord(end));
            CHECK_CUDA(cudaEventSynchronize(end));
            float ms = 0;
            CHECK_CUDA(cudaEventElapsedTime(&ms, start, end));
            ns.push_back(ms * 1e6);
            elapsed_total += ms * 1e6;
            if (recheck) {
                err = buf.check();
                if (!err.empty()) err = "timed run " + std::to_string(r) + " with fresh inputs: " + err;
            }
            if (ns.size() >= 3) {
                double mean = std::accumulate(ns.begin(), ns.end(), 0.0) / ns.size();
                double var = 0;
                for (double v : ns) var += (v - mean) * (v - mean);
                double std_ = std::sqrt(var / (ns.size() - 1));
                if (std_ / std::sqrt(double(ns.size())) / mean < 0.001 || elapsed_total > 10e9) break;
            }
        }
        if (!err.empty()) {
            emit(p + "status", "fail");
            emit(p + "error", err);
            ok = false;
            continue;
        }
        double n = ns.size();
        double mean = std::accumulate(ns.begin(), ns.end(), 0.0) / n;
        double var = 0;
        for (double v : ns) var += (v - mean) * (v - mean);
        double std_ = n > 1 ? std::sqrt(var / (n - 1)) : 0.0;
        std::vector<double> sorted = ns;
        std::sort(sorted.begin(), sorted.end());
        double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                          : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
        emit(p + "status", "pass");
        emit(p + "runs", std::to_string(ns.size()));
        emit(p + "mean", num(mean));
        emit(p + "std", num(std_));
        emit(p + "err", num(std_ / std::sqrt(n)));
        emit(p + "best", num(sorted.front()));
        emit(p + "worst", num(sorted.back()));
        emit(p + "median", num(median));
        emit(p + "clock", "cuda_events");
    }
    cudaFree(flush);
    return ok;
}

int main(int argc, char** argv) {
    const char* fd = std::getenv("POPCORN_FD");
    g_out = fd ? fdopen(std::atoi(fd), "w") : stdout;
    if (!g_out) {
        std::fprintf(stderr, "cannot open POPCORN_FD\n");
        return 111;
    }
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s {test|benchmark|leaderboard|profile} CASES_FILE\n", argv[0]);
        return 113;
    }
    std::string mode = argv[1];
    std::vector<Case> cases;
    if (!read_cases(argv[2], cases)) {
        std::fprintf(stderr, "bad test spec in %s\n", argv[2]);
        emit("check", "fail");
        return 113;
    }
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        std::string why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
        std::fprintf(stderr, "no usable CUDA GPU: %s\n", why.c_str());
        emit("error", "no usable CUDA GPU: " + why);
        emit("check", "fail");
        return 110;
    }
    bool ok;
    if (mode == "test") ok = run_tests(cases);
    else if (mode == "benchmark") ok = run_benchmarks(cases, false, 100);
    else if (mode == "leaderboard") ok = run_benchmarks(cases, true, 100);
    else if (mode == "profile") ok = run_benchmarks(cases, false, 10);
    else {
        std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 113;
    }
    emit("check", ok ? "pass" : "fail");
    return ok ? 0 : 112;
}
