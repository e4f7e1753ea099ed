// ew_et: EdgeWisePersona's on-device ExecuTorch runner.  One process per case (one user's
// requests): the .pte is loaded once, its KV cache (inside the program) stays across requests,
// and a request evaluates only the tokens after the longest common prefix with what the cache
// holds, under the host runtime's restrictions (runtimes/executorch.py _reusable).
//
//   ew_et --model FILE.pte --case DIR [--threads N] [--vocab FILE] [--verbose]
//
// DIR is the case folder device_runner/phone_runtime.py makes: requests.tsv, one line per request,
//   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
// and, per request, ID.prompt (for people) and ID.tokens (the prompt's token ids, made on the host).
// GRAMMAR_FILE is G.choices (one choice per line, UTF-8) with G.choices.first beside it, or
// G.schema.json.
//
// Tokenization happens on the host (the host runtime's own tokenizer, transformers'), because the
// executorch wheel ships no C++ tokenizer: the prompt arrives as ids, and the generated text is the
// concatenation of each token's bytes from the vocabulary file (ew_et.vocab beside the .pte,
// written by the host from the same tokenizer and checked there against its decoder).
//
// Decoding mirrors runtimes/_decode.py, so that both give the same answers:
// - greedy (the first maximum); a temperature above 0 samples (its own generator: not the host's);
// - choices (_choice_token): only tokens that keep the text a prefix of some choice may win; the
//   first tokens of the remaining text of each live choice (as the host encodes them alone, with
//   and without a leading space: G.choices.first) are tried first, best logit first, then the 2048
//   most likely tokens; the request ends when the text is a choice and nothing longer is live, or
//   when an end-of-text token beats going on; the text must end as one of the choices;
// - a JSON schema cannot be applied here (no llguidance for phones): it decodes free (greedy),
//   the record says constraint=schema-free, and the host parses the text as it comes.
//
// Output on stdout, one record per line, as ew_llama's (device_runner/engines.py parses it; ../common/ew_runner.hpp):
//   EW_NOTE text / EW_NEXT request ID / EW_BEGIN request ID / EW_STAT key=value ... /
//   EW_RC 0 / EW_RSS_KB n / EW_WALL_MS n / EW_TEXT base64 / EW_END request ID
//   EW_ERROR text                  a request it cannot serve, or a file it cannot read (exit 2-5)
// ExecuTorch's own log goes to stderr.

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr.h>

#include "ew_runner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

// The wheel ships libexecutorch_threadpool.so (XNNPACK's threads) but not its header.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool * get_threadpool();
}  // namespace executorch::extension::threadpool

namespace ew_et {
extern int g_threads;  // ew_llm_ops.cpp
}

namespace {

using executorch::extension::Module;
using executorch::runtime::EValue;

using ew::fail;
using ew::is_choice;
using ew::lines_of;
using ew::now_ms;
using ew::read_file;
using ew::Request;  // prefix_file: not read (the host's ExecuTorch runtime does not use it either)
using ew::split;
using ew::starts_with;

std::vector<int64_t> parse_ids(const std::string & text, const std::string & what) {
    std::vector<int64_t> ids;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
        char * end = nullptr;
        long long v = std::strtoll(word.c_str(), &end, 10);
        if (end == word.c_str() || *end != '\0' || v < 0) fail(3, what + " holds '" + word + "', not a token id");
        ids.push_back((int64_t) v);
    }
    return ids;
}

// Whole UTF-8 characters only: the host decodes a cut character as U+FFFD, which no choice holds.
bool complete_utf8(const std::string & s) {
    size_t i = 0;
    while (i < s.size()) {
        uint8_t c = (uint8_t) s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (size_t k = 1; k < n; k++)
            if (((uint8_t) s[i + k] >> 6) != 2) return false;
        i += n;
    }
    return true;
}

// ew_et.vocab (device_runner/et_tokens.py writes it): a header, then one line per token id with
// its bytes in hex (empty: a special token, no text).
struct Vocab {
    std::vector<std::string> pieces;
    std::vector<bool> byte_token;  // SentencePiece's <0xNN> tokens (a "b" before the hex)
    std::set<int64_t> eos;
    long window = -1;   // the sliding window; -1: none; 0: unknown (no reuse past a changed token)
    long max_seq_len = 0;  // pte_config.json's, where the .pte has no get_max_seq_len method

    void load(const std::string & path) {
        std::string text;
        if (!read_file(path, text))
            fail(3, "no vocabulary file " + path + " (device_runner writes ew_et.vocab beside the .pte when it pushes the model)");
        std::vector<std::string> lines = lines_of(text);
        if (lines.empty() || !starts_with(lines[0], "ew_et-vocab 1 "))
            fail(3, path + " is not an ew_et vocabulary (version 1); push the model again");
        size_t n = std::strtoul(lines[0].c_str() + 14, nullptr, 10);
        size_t at = 1;
        for (; at < lines.size() && !lines[at].empty() && lines[at][0] != ':'; at++) {
            std::vector<std::string> kv = split(lines[at], ' ');
            if (kv.size() < 2) continue;
            if (kv[0] == "eos") for (const auto & e : split(kv[1], ',')) eos.insert(std::atoll(e.c_str()));
            else if (kv[0] == "window") window = kv[1] == "none" ? -1 : std::atol(kv[1].c_str());
            else if (kv[0] == "max_seq_len") max_seq_len = std::atol(kv[1].c_str());
        }
        if (at >= lines.size() || lines.size() - at - 1 < n) fail(3, path + " is cut short; push the model again");
        at++;  // the ':' line
        pieces.resize(n);
        byte_token.assign(n, false);
        for (size_t i = 0; i < n; i++) {
            const std::string & line = lines[at + i];
            byte_token[i] = !line.empty() && line[0] == 'b';
            const std::string hex = byte_token[i] ? line.substr(1) : line;
            std::string bytes;
            for (size_t k = 0; k + 1 < hex.size(); k += 2) bytes += (char) std::strtol(hex.substr(k, 2).c_str(), nullptr, 16);
            pieces[i] = bytes;
        }
    }

    // The generated text as the host decodes it (runtimes/_decode.py _Text: decode(anchor +
    // generated) less decode(anchor), the anchor being the prompt's last token).
    std::string text_after(int64_t anchor, const std::vector<int64_t> & generated) const {
        std::vector<int64_t> ids{anchor};
        ids.insert(ids.end(), generated.begin(), generated.end());
        std::string full = render(ids), base = render({anchor});
        return starts_with(full, base) ? full.substr(base.size()) : full;
    }

    // The pieces joined, except that a run of byte tokens that is not whole UTF-8 becomes one U+FFFD
    // per token (SentencePiece's ByteFallback decoder).
    std::string render(const std::vector<int64_t> & ids) const {
        std::string out, run;
        size_t run_tokens = 0;
        auto flush = [&]() {
            if (complete_utf8(run)) out += run;
            else for (size_t k = 0; k < run_tokens; k++) out += "\xEF\xBF\xBD";
            run.clear();
            run_tokens = 0;
        };
        for (int64_t id : ids) {
            if (id >= 0 && (size_t) id < byte_token.size() && byte_token[id]) {
                run += pieces[id];
                run_tokens++;
            } else {
                flush();
                out += piece(id);
            }
        }
        flush();
        return out;
    }

    const std::string & piece(int64_t id) const {
        static const std::string none;
        return id >= 0 && (size_t) id < pieces.size() ? pieces[id] : none;
    }
};

// The .pte and what its KV cache holds.
struct Engine {
    std::unique_ptr<Module> module;
    int64_t chunk = 1;        // the most tokens one forward call takes (input_ids' upper bound)
    int64_t max_seq_len = 0;
    int64_t vocab = 0;
    std::vector<int64_t> cached;  // the tokens whose keys and values the cache holds, at 0, 1, ...
    std::vector<float> logits;    // of the last token evaluated

    // One forward call: ids at positions start, start + 1, ...; keeps the last position's logits.
    bool forward(const int64_t * ids, int64_t n, int64_t start, std::string & why) {
        std::vector<int64_t> tokens(ids, ids + n), positions(n);
        for (int64_t i = 0; i < n; i++) positions[i] = start + i;
        auto t_ids = executorch::extension::make_tensor_ptr({1, (int32_t) n}, tokens.data(), executorch::aten::ScalarType::Long);
        auto t_pos = executorch::extension::make_tensor_ptr({(int32_t) n}, positions.data(), executorch::aten::ScalarType::Long);
        auto result = module->execute("forward", std::vector<EValue>{*t_ids, *t_pos});
        if (!result.ok()) {
            why = "ExecuTorch error " + std::to_string((int) result.error());
            return false;
        }
        const auto & out = (*result)[0].toTensor();
        int64_t width = out.size(out.dim() - 1);
        if (out.scalar_type() != executorch::aten::ScalarType::Float) {
            why = "the logits are not float32 (dtype " + std::to_string((int) out.scalar_type()) + ")";
            return false;
        }
        const float * data = out.const_data_ptr<float>();
        logits.assign(data + out.numel() - width, data + out.numel());
        vocab = width;
        return true;
    }

    // Evaluate ids[from:] at positions from, from + 1, ... in calls of at most `chunk` tokens.
    bool prefill(const std::vector<int64_t> & ids, size_t from, std::string & why) {
        cached.resize(from);
        for (size_t i = from; i < ids.size(); i += (size_t) chunk) {
            size_t n = std::min(ids.size() - i, (size_t) chunk);
            if (!forward(&ids[i], (int64_t) n, (int64_t) i, why)) {
                cached.clear();  // nothing is known to be cached if a call fails
                return false;
            }
            cached.insert(cached.end(), ids.begin() + i, ids.begin() + i + n);
        }
        return true;
    }

    bool step(int64_t token, std::string & why) {
        if (!forward(&token, 1, (int64_t) cached.size(), why)) {
            cached.clear();
            return false;
        }
        cached.push_back(token);
        return true;
    }

    // runtimes/executorch.py _reusable: the common prefix, at least one token left to evaluate;
    // with a sliding window (a ring cache), none once the old sequence ran more than a window past
    // it, and only from a multiple of the prefill chunk.
    size_t reusable(const std::vector<int64_t> & ids, long window) const {
        size_t keep = std::min(ew::common_prefix(cached, ids), ids.size() - 1);
        if (window >= 0) {
            if ((long) (cached.size() - keep) > window) return 0;
            keep -= keep % (size_t) chunk;
        }
        return keep;
    }
};

// A .choices file and its .choices.first table: for each choice and byte offset (the length of
// the text so far), the first token of the rest as the host encodes it, with and without its
// leading space.
struct Choices {
    std::vector<std::string> choices;
    std::map<std::pair<int, size_t>, std::vector<int64_t>> first;

    void load(const std::string & dir, const std::string & name, const std::string & rid) {
        std::string text, table;
        if (!read_file(dir + "/" + name, text)) fail(3, "request " + rid + ": no choices file " + name);
        if (!read_file(dir + "/" + name + ".first", table))
            fail(3, "request " + rid + ": no " + name + ".first (the host writes it beside the choices)");
        choices = split(text, '\n');
        for (const std::string & line : lines_of(table)) {
            std::vector<std::string> f = split(line, '\t');
            if (f.size() < 2) continue;
            std::vector<int64_t> & ids = first[{std::atoi(f[0].c_str()), std::strtoul(f[1].c_str(), nullptr, 10)}];
            for (size_t k = 2; k < f.size(); k++) ids.push_back(std::atoll(f[k].c_str()));
        }
    }
};

// runtimes/_decode.py _choice_token: the best token that keeps the text a prefix of some choice.
// Returns -1 to stop (the text is complete); `done` says the chosen token completes the text.
int64_t choice_token(const Engine & e, const Vocab & vocab, const Choices & c, const std::string & current,
                     const std::string & rid, bool & done) {
    const std::vector<float> & logits = e.logits;
    std::vector<int> live;
    bool longer = false;
    for (int i = 0; i < (int) c.choices.size(); i++)
        if (starts_with(c.choices[i], current)) {
            live.push_back(i);
            longer = longer || c.choices[i].size() > current.size();
        }
    bool complete = is_choice(c.choices, current);
    done = false;
    if (complete && !longer) return -1;
    auto keeps = [&](int64_t token) {
        const std::string & piece = vocab.piece(token);
        if (piece.empty()) return false;
        std::string text = current + piece;
        if (!complete_utf8(text)) return false;
        for (int i : live)
            if (starts_with(c.choices[i], text)) return true;
        return false;
    };
    auto final = [&](int64_t token) {  // the text is a choice and no longer one is live
        std::string text = current + vocab.piece(token);
        if (!is_choice(c.choices, text)) return false;
        for (int i : live)
            if (c.choices[i].size() > text.size() && starts_with(c.choices[i], text)) return false;
        return true;
    };
    std::vector<int64_t> candidates;
    for (int i : live) {
        auto found = c.first.find({i, current.size()});
        if (found != c.first.end())
            for (int64_t t : found->second)
                if (t >= 0 && t < (int64_t) logits.size()) candidates.push_back(t);
    }
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
    if (complete) {  // stopping competes with going on to a longer choice
        int64_t eos = -1;
        for (int64_t t : vocab.eos)
            if (t < (int64_t) logits.size() && (eos < 0 || logits[t] > logits[eos])) eos = t;
        int64_t go = -1;
        for (int64_t t : candidates)
            if (keeps(t)) { go = t; break; }
        if (go < 0 || (eos >= 0 && logits[eos] >= logits[go])) return -1;
        done = is_choice(c.choices, current + vocab.piece(go));
        return go;
    }
    for (int64_t t : candidates)
        if (keeps(t)) { done = final(t); return t; }
    for (int64_t t : ew::most_likely<int64_t>(logits, ew::CHOICE_SCAN)) {
        if (!std::binary_search(candidates.begin(), candidates.end(), t) && keeps(t)) { done = final(t); return t; }
    }
    fail(4, "request " + rid + ": no token continues the text '" + current + "' towards any of its choices");
}

// One request's numbers (EW_STAT): the common ones and the constraint.
struct Stats : ew::Stats {
    const char * constraint = "none";
};

std::string dir_of(const std::string & path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

int main(int argc, char ** argv) {
    std::string vocab_path;
    ew::Options options = ew::parse_options(argc, argv, "ew_et", "FILE.pte", "[--threads N] [--vocab FILE]",
                                            [&](const std::string & a, auto value) {
        if (a == "--vocab") vocab_path = value();
        else if (a == "--verbose") {}  // accepted, and not used
        else if (a == "--version") {
            std::printf("ew_et on the ExecuTorch runtime (XNNPACK, optimized and quantized kernels; our llama:: LLM kernels)\n");
            std::exit(0);
        } else return false;
        return true;
    });
    const std::string & model_path = options.model, & case_dir = options.case_dir;
    int threads = options.threads > 0 ? options.threads : ew::default_threads();
    if (vocab_path.empty()) vocab_path = dir_of(model_path) + "/ew_et.vocab";
    std::vector<Request> requests = ew::read_requests(case_dir);
    Vocab vocab;
    vocab.load(vocab_path);

    ew_et::g_threads = threads;
    auto * pool = executorch::extension::threadpool::get_threadpool();
    if (pool) pool->_unsafe_reset_threadpool((uint32_t) threads);

    double load_start = now_ms();
    Engine e;
    e.module = std::make_unique<Module>(model_path, Module::LoadMode::Mmap);
    if (e.module->load() != executorch::runtime::Error::Ok)
        fail(3, "ExecuTorch could not load the program " + model_path + " (see its log)");
    auto method_error = e.module->load_method("forward");
    if (method_error != executorch::runtime::Error::Ok)
        fail(3, "ExecuTorch could not load the .pte's forward method (error " + std::to_string((int) method_error) +
                 "): an operator without a kernel in this build? Its log (stderr) names the missing operators.");
    auto meta = e.module->method_meta("forward");
    if (!meta.ok()) fail(3, "the .pte's forward method has no metadata");
    auto input = meta->input_tensor_meta(0);
    if (!input.ok() || input->sizes().empty()) fail(3, "the .pte's forward method has no input_ids tensor");
    e.chunk = std::max<int64_t>(1, input->sizes()[input->sizes().size() - 1]);
    e.max_seq_len = vocab.max_seq_len > 0 ? vocab.max_seq_len : 2048;
    auto names = e.module->method_names();
    if (names.ok() && names->count("get_max_seq_len")) {
        auto got = e.module->execute("get_max_seq_len");
        if (got.ok() && !got->empty() && (*got)[0].isInt()) e.max_seq_len = (*got)[0].toInt();
    }
    double load_ms = now_ms() - load_start;
    std::printf("EW_NOTE ew_et: %d threads, max_seq_len %lld, prefill chunk %lld, model loaded in %.0f ms\n", threads,
                (long long) e.max_seq_len, (long long) e.chunk, load_ms);

    std::map<std::string, Choices> choice_files;
    bool noted_schema = false;
    for (const Request & r : requests) {
        ew::print_next(r);
        double start = now_ms();
        std::string token_text;
        if (!read_file(case_dir + "/" + r.id + ".tokens", token_text))
            fail(3, "request " + r.id + ": no " + r.id + ".tokens (the host tokenizes the prompts for ew_et; "
                    "device_runner/phone_runtime.py writes them)");
        std::vector<int64_t> ids = parse_ids(token_text, r.id + ".tokens");
        if (ids.empty()) fail(4, "request " + r.id + ": the prompt is empty");
        int64_t room = e.max_seq_len - (int64_t) ids.size();
        if (room < 1)
            fail(4, "request " + r.id + ": the prompt has " + std::to_string(ids.size()) + " tokens but the .pte holds " +
                    std::to_string(e.max_seq_len) + "; export with a larger max_seq_len or shorten the prompt");
        const Choices * choices = nullptr;
        Stats s;
        if (r.grammar_file != "-") {
            if (r.grammar_file.size() > 8 && r.grammar_file.compare(r.grammar_file.size() - 8, 8, ".choices") == 0) {
                auto found = choice_files.find(r.grammar_file);
                if (found == choice_files.end()) {
                    found = choice_files.emplace(r.grammar_file, Choices()).first;
                    found->second.load(case_dir, r.grammar_file, r.id);
                }
                choices = &found->second;
                s.constraint = "choices";
            } else if (r.grammar_file.size() > 12 &&
                       r.grammar_file.compare(r.grammar_file.size() - 12, 12, ".schema.json") == 0) {
                s.constraint = "schema-free";
                if (!noted_schema)
                    std::printf("EW_NOTE ew_et: JSON-schema requests decode free (greedy), their text is parsed as it comes\n");
                noted_schema = true;
            } else {
                fail(4, "request " + r.id + ": ew_et reads .choices and .schema.json constraints, not " + r.grammar_file);
            }
        }
        int budget = (int) std::min<int64_t>(r.max_tokens, room);
        std::mt19937_64 rng(r.seed);

        s.prompt_tokens = ids.size();
        s.reused = e.reusable(ids, vocab.window);
        double prefill_start = now_ms();
        std::string why;
        if (!e.prefill(ids, s.reused, why)) fail(5, "request " + r.id + ": the .pte's forward failed while evaluating the prompt (" + why + ")");
        s.prefill_ms = now_ms() - prefill_start;
        s.evaluated = ids.size() - s.reused;

        std::string text;  // the pieces joined (what the choices are checked against)
        std::vector<int64_t> generated;
        double first_at = -1, last_at = -1;
        while ((int) s.generated < budget) {
            double pick_start = now_ms();
            int64_t token;
            bool done = false;
            if (choices) {
                token = choice_token(e, vocab, *choices, text, r.id, done);
            } else if (r.temperature > 0) {
                std::vector<double> p(e.logits.size());
                float best = *std::max_element(e.logits.begin(), e.logits.end());
                for (size_t i = 0; i < p.size(); i++) p[i] = std::exp((e.logits[i] - best) / r.temperature);
                token = (int64_t) std::discrete_distribution<size_t>(p.begin(), p.end())(rng);
            } else {
                token = ew::argmax<int64_t>(e.logits);
            }
            double now = now_ms();
            s.sampling_ms += now - pick_start;
            if (token < 0 || (!choices && vocab.eos.count(token))) { s.finish = "stop"; break; }
            s.generated++;
            if (first_at < 0) first_at = now;
            last_at = now;
            text += vocab.piece(token);
            generated.push_back(token);
            if (choices && done) { s.finish = "stop"; break; }
            if ((int) s.generated >= budget) break;
            if (!e.step(token, why)) fail(5, "request " + r.id + ": the .pte's forward failed while decoding (" + why + ")");
        }
        if (choices && !is_choice(choices->choices, text))
            fail(4, "request " + r.id + ": constrained decoding ended on '" + text + "', which is none of its " +
                    std::to_string(choices->choices.size()) + " choices (max_tokens=" + std::to_string(budget) +
                    " may be too small for the longest choice)");
        s.set_times(start, first_at, last_at, now_ms());
        ew::print_record(r, s, load_ms, std::string("constraint=") + s.constraint, vocab.text_after(ids.back(), generated));
    }
    return 0;
}
