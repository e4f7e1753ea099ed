// ew_runner.hpp: what our four on-device runners (ew_llama, ew_ort, ew_et, ew_mnn) share, header
// only: the case folder's requests.tsv, files, timing and peak RSS, the record stream on stdout
// (EW_NEXT / EW_BEGIN / EW_STAT / EW_RC / EW_RSS_KB / EW_WALL_MS / EW_TEXT / EW_END, and EW_ERROR
// with its exit code), argument helpers, and the pieces of the host's choices rule
// (runtimes/_decode.py) that do not depend on an engine.  C++17, the standard library and POSIX
// getrusage only: it builds with the host's compiler, zig's static aarch64-linux-musl toolchain and
// the Android NDK alike.  Each runner's CMakeLists.txt adds this folder to its include path, and
// android/build.sh hashes this file into each runner's cache key.

#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ew {

// Where the records go: stdout, unless a runner moves them (ew_mnn: a copy of fd 1, whose fd 1
// becomes stderr for MNN's own printf output).
inline FILE * records = stdout;

// One line of requests.tsv:
//   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
// (a runner reads the columns it needs; every line must have the six).
struct Request {
    std::string id;
    int max_tokens = 0;
    float temperature = 0.0f;
    uint32_t seed = 0;
    std::string grammar_file;  // "-": none
    std::string prefix_file;   // "-": none
};

inline double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// Peak resident set size of this process so far, in KiB (Linux and Android report KiB).
inline long peak_rss_kb() {
    struct rusage usage;
    return getrusage(RUSAGE_SELF, &usage) == 0 ? usage.ru_maxrss : 0;
}

// A request the runner cannot serve, or a file it cannot read: one line, then exit.
[[noreturn]] inline void fail(int code, const std::string & message) {
    std::fprintf(records, "EW_ERROR %s\n", message.c_str());
    std::fflush(records);
    std::exit(code);
}

inline bool read_file(const std::string & path, std::string & out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream buffer;
    buffer << in.rdbuf();
    out = buffer.str();
    return true;
}

inline std::vector<std::string> split(const std::string & text, char sep) {
    std::vector<std::string> parts;
    std::string part;
    std::istringstream in(text);
    while (std::getline(in, part, sep)) parts.push_back(part);
    return parts;
}

// The lines of a text, a '\r' before each '\n' dropped.
inline std::vector<std::string> lines_of(const std::string & text) {
    std::vector<std::string> out = split(text, '\n');
    for (auto & line : out)
        if (!line.empty() && line.back() == '\r') line.pop_back();
    return out;
}

inline bool starts_with(const std::string & s, const std::string & head) {
    return s.size() >= head.size() && s.compare(0, head.size(), head) == 0;
}

inline bool ends_with(const std::string & s, const std::string & tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

inline std::vector<Request> read_requests(const std::string & dir) {
    std::string text;
    if (!read_file(dir + "/requests.tsv", text)) fail(3, "no " + dir + "/requests.tsv");
    std::vector<Request> requests;
    for (const std::string & line : lines_of(text)) {
        if (line.empty()) continue;
        std::vector<std::string> f = split(line, '\t');
        if (f.size() < 6) fail(3, "requests.tsv line '" + line + "' has fewer than 6 columns");
        Request r;
        r.id = f[0];
        r.max_tokens = std::atoi(f[1].c_str());
        r.temperature = std::strtof(f[2].c_str(), nullptr);
        r.seed = (uint32_t) std::strtoul(f[3].c_str(), nullptr, 10);
        r.grammar_file = f[4];
        r.prefix_file = f[5];
        requests.push_back(r);
    }
    return requests;
}

inline std::string base64(const std::string & data) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 2 < data.size(); i += 3) {
        uint32_t n = ((uint8_t) data[i] << 16) | ((uint8_t) data[i + 1] << 8) | (uint8_t) data[i + 2];
        out += abc[n >> 18]; out += abc[(n >> 12) & 63]; out += abc[(n >> 6) & 63]; out += abc[n & 63];
    }
    if (i + 1 == data.size()) {
        uint32_t n = (uint8_t) data[i] << 16;
        out += abc[n >> 18]; out += abc[(n >> 12) & 63]; out += "==";
    } else if (i + 2 == data.size()) {
        uint32_t n = ((uint8_t) data[i] << 16) | ((uint8_t) data[i + 1] << 8);
        out += abc[n >> 18]; out += abc[(n >> 12) & 63]; out += abc[(n >> 6) & 63]; out += '=';
    }
    return out;
}

// The length of the longest common prefix of two token sequences.
template <class Token>
size_t common_prefix(const std::vector<Token> & a, const std::vector<Token> & b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) n++;
    return n;
}

// One request's numbers (EW_STAT), the keys every runner prints; a runner adds its own (see
// print_record).
struct Stats {
    size_t prompt_tokens = 0, reused = 0, evaluated = 0, generated = 0;
    double prefill_ms = 0, ttft_ms = -1, decode_ms = 0, sampling_ms = 0, total_ms = 0;
    const char * finish = "length";

    // ttft, decode and total from the request's start, its first and last generated token's
    // times (first_at < 0: none was generated) and its end.
    void set_times(double start, double first_at, double last_at, double end) {
        ttft_ms = first_at >= 0 ? first_at - start : -1;
        decode_ms = first_at >= 0 ? last_at - first_at : 0;
        total_ms = end - start;
    }
};

// The request's prompt, CASE/ID.prompt (ew_et reads the host's token ids, ID.tokens, instead).
inline std::string read_prompt(const std::string & case_dir, const Request & r) {
    std::string prompt;
    if (!read_file(case_dir + "/" + r.id + ".prompt", prompt)) fail(3, "request " + r.id + ": no " + r.id + ".prompt");
    return prompt;
}

// Printed before a request starts: names it if the process dies.
inline void print_next(const Request & r) {
    std::fprintf(records, "EW_NEXT request %s\n", r.id.c_str());
    std::fflush(records);
}

// One finished request's record.  `keys`: the runner's own EW_STAT keys ("key=value ..."), printed
// between total_ms and finish (ew_llama, ew_mnn: full_grammar_passes; ew_et: constraint; ew_ort:
// choice_scans and constraint).
inline void print_record(const Request & r, const Stats & s, double load_ms, const std::string & keys,
                         const std::string & text) {
    std::fprintf(records, "EW_BEGIN request %s\n", r.id.c_str());
    std::fprintf(records, "EW_STAT prompt_tokens=%zu reused_tokens=%zu evaluated_tokens=%zu generated_tokens=%zu "
                 "load_ms=%.3f prefill_ms=%.3f ttft_ms=%.3f decode_ms=%.3f sampling_ms=%.3f total_ms=%.3f%s%s "
                 "finish=%s\n",
                 s.prompt_tokens, s.reused, s.evaluated, s.generated, load_ms, s.prefill_ms, s.ttft_ms,
                 s.decode_ms, s.sampling_ms, s.total_ms, keys.empty() ? "" : " ", keys.c_str(), s.finish);
    std::fprintf(records, "EW_RC 0\nEW_RSS_KB %ld\nEW_WALL_MS %.0f\n", peak_rss_kb(), s.total_ms);
    std::string encoded = base64(text);
    for (size_t i = 0; i < encoded.size(); i += 76) std::fprintf(records, "EW_TEXT %s\n", encoded.substr(i, 76).c_str());
    std::fprintf(records, "EW_END request %s\n", r.id.c_str());
    std::fflush(records);
}

// The value of the option argv[i] (the next argument; i moves on to it), or EW_ERROR and exit 2.
inline std::string arg_value(int argc, char ** argv, int & i) {
    if (i + 1 >= argc) fail(2, "argument " + std::string(argv[i]) + " needs a value");
    return argv[++i];
}

// What every runner's command line has.
struct Options {
    std::string model, case_dir;
    int threads = 0;  // 0: not given
};

// The command line: --model M, --case DIR and --threads N here; any other argument goes, in order,
// to other(a, value) (value() takes the argument after it), which returns false for one it does not
// know.  Errors are one EW_ERROR line and exit 2: an unknown argument (with the usage, "NAME --model
// MODEL --case DIR MORE"), an option without its value, no --model or no --case.
template <class Other>
Options parse_options(int argc, char ** argv, const std::string & name, const std::string & model,
                      const std::string & more, Other other) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&] { return arg_value(argc, argv, i); };
        if (a == "--model") o.model = value();
        else if (a == "--case") o.case_dir = value();
        else if (a == "--threads") o.threads = std::atoi(value().c_str());
        else if (!other(a, value)) fail(2, "unknown argument " + a + " (" + name + " --model " + model + " --case DIR " + more + ")");
    }
    if (o.model.empty() || o.case_dir.empty()) fail(2, name + " needs --model " + model + " and --case DIR");
    return o;
}

// Threads when --threads is not given: the cores, at most 4.
inline int default_threads() {
    return (int) std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
}

// ---- the host's choices rule (runtimes/_decode.py _choice_token): the engine-free pieces ---------

constexpr size_t CHOICE_SCAN = 2048;  // runtimes/_decode.py CHOICE_SCAN

// numpy's argmax: the first maximum (the lowest id on a tie).
template <class Id>
Id argmax(const std::vector<float> & logits) {
    return (Id) (std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// The min(k, vocabulary) most likely token ids, best first, equal logits by the lower id.
template <class Id>
std::vector<Id> most_likely(const std::vector<float> & logits, size_t k) {
    k = std::min(k, logits.size());
    std::vector<Id> order(logits.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = (Id) i;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](Id a, Id b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    order.resize(k);
    return order;
}

inline bool is_choice(const std::vector<std::string> & choices, const std::string & text) {
    return std::find(choices.begin(), choices.end(), text) != choices.end();
}

}  // namespace ew
