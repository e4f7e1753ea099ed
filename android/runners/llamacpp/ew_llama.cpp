// ew_llama: EdgeWisePersona's on-device llama.cpp runner.  One process per case (one user's
// requests): the model is loaded once, the KV cache stays across requests, and a request only
// evaluates the tokens after the longest common prefix with what the cache already holds (the
// incremental strategy's questions share a long `cache_prefix`, so each costs a few tokens).
//
//   ew_llama --model FILE --case DIR [--threads N] [--ctx N] [--batch N] [--verbose]
//
// DIR is the case folder device_runner/phone_runtime.py makes: requests.tsv, one line per request,
//   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
// and ID.prompt (the whole prompt, any number of lines), GRAMMAR_FILE (GBNF, root rule `root`),
// PREFIX_FILE (the request's cache_prefix, a prefix of its prompt).
//
// It mirrors the host runtime (runtimes/llamacpp.py) so that both give the same answers:
// the same tokenization (BOS as the model asks, special tokens parsed), the same context
// (flash attention, full-size sliding-window cache, batches of 512), the same evaluation splits
// (from the reused prefix to the end of cache_prefix, then the rest), greedy decoding, and the
// grammar fast path: the argmax token is checked against the grammar alone (a one-element
// candidate array); only when the grammar rejects it are the most likely 64, then 4096 tokens,
// then the whole vocabulary filtered by the grammar, and the best allowed one taken.  That is
// exactly greedy decoding under the grammar, without a pass over Gemma's 262k-token vocabulary
// at every step.  (A temperature above 0 samples from the grammar-filtered distribution.)
//
// Output on stdout, one record per line (device_runner/engines.py parses it):
//   EW_NOTE text                   something worth recording (threads, context)
//   EW_NEXT request ID             printed before a request starts (names it if the process dies)
//   EW_BEGIN request ID            then, once the request is done:
//   EW_STAT key=value ...          its timings and token counts (../common/ew_runner.hpp print_record)
//   EW_RC 0 / EW_RSS_KB n / EW_WALL_MS n
//   EW_TEXT base64                 the generated text (several lines, concatenated)
//   EW_END request ID
//   EW_ERROR text                  a request it cannot serve, or a file it cannot read (exit 2-5)
// llama.cpp's own log goes to stderr (warnings and errors; everything with --verbose).

#include "llama.h"

#include "ew_runner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

using ew::common_prefix;
using ew::fail;
using ew::now_ms;
using ew::read_file;
using ew::Request;

// The host's tokenization (runtimes/llamacpp.py _tokenize): BOS when the model adds one,
// special tokens parsed, and a BOS written in the text itself not doubled.
std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text) {
    bool add_bos = llama_vocab_get_add_bos(vocab);
    std::vector<llama_token> tokens(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(),
                           add_bos, true);
    if (n < 0) {
        tokens.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(),
                           add_bos, true);
    }
    tokens.resize(std::max(n, 0));
    llama_token bos = llama_vocab_bos(vocab);
    if (add_bos && tokens.size() > 1 && tokens[0] == bos && tokens[1] == bos) tokens.erase(tokens.begin());
    return tokens;
}

std::string piece(const llama_vocab * vocab, llama_token token) {
    char buf[256];
    int n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, false);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab, token, &big[0], (int32_t) big.size(), 0, false);
    return big.substr(0, std::max(n, 0));
}

// The model, its context and what the KV cache holds.
struct Engine {
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    int n_vocab = 0;
    int n_batch = 512;
    llama_batch batch{};
    std::vector<llama_token> cached;  // the tokens whose keys and values are in the KV cache, in order

    // Evaluate n tokens after what the cache holds (chunks of n_batch; logits of each chunk's
    // last token, as llama-cpp-python's Llama.eval does).
    bool eval(const llama_token * tokens, size_t n) {
        for (size_t start = 0; start < n; start += n_batch) {
            size_t end = std::min(n, start + (size_t) n_batch);
            batch.n_tokens = 0;
            for (size_t i = start; i < end; i++) {
                int k = batch.n_tokens++;
                batch.token[k] = tokens[i];
                batch.pos[k] = (llama_pos) cached.size() + (llama_pos) (i - start);
                batch.n_seq_id[k] = 1;
                batch.seq_id[k][0] = 0;
                batch.logits[k] = i + 1 == end;
            }
            if (llama_decode(ctx, batch) != 0) return false;
            cached.insert(cached.end(), tokens + start, tokens + end);
        }
        return true;
    }

    // Keep the longest common prefix of the KV cache and `tokens` (at least one token is left to
    // evaluate, for the logits); returns its length.  llama_memory_seq_rm drops the rest.
    size_t reuse(const std::vector<llama_token> & tokens) {
        size_t common = std::min(common_prefix(cached, tokens), tokens.size() - 1);
        llama_memory_t memory = llama_get_memory(ctx);
        if (common > 0 && llama_memory_seq_rm(memory, 0, (llama_pos) common, -1)) {
            cached.resize(common);
            return common;
        }
        llama_memory_clear(memory, true);
        cached.clear();
        return 0;
    }
};

// Grammar-constrained choice of the next token (see the header): the argmax checked alone, then
// growing tiers of the most likely tokens, then the whole vocabulary.
struct GrammarPick {
    std::vector<llama_token_data> cand;
    int full_passes = 0;  // steps where the grammar had to look at the whole vocabulary

    static bool allowed(llama_sampler * grammar, llama_token token, float logit) {
        llama_token_data one = {token, logit, 0.0f};
        llama_token_data_array arr = {&one, 1, -1, false};
        llama_sampler_apply(grammar, &arr);
        return std::isfinite(arr.data[0].logit);
    }

    // Apply the grammar to cand[0, n) (ordered by logit, ties by id); the first survivor, or -1.
    llama_token first_allowed(llama_sampler * grammar, size_t n) {
        llama_token_data_array arr = {cand.data(), n, -1, false};
        llama_sampler_apply(grammar, &arr);
        for (size_t i = 0; i < arr.size; i++)
            if (std::isfinite(arr.data[i].logit)) return arr.data[i].id;
        return -1;
    }

    llama_token greedy(llama_sampler * grammar, const float * logits, int n_vocab) {
        llama_token best = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);  // first max: lowest id
        if (allowed(grammar, best, logits[best])) return best;
        auto by_logit = [](const llama_token_data & a, const llama_token_data & b) {
            return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
        };
        for (size_t k : {(size_t) 64, (size_t) 4096}) {
            if (k >= (size_t) n_vocab) break;
            fill(logits, n_vocab);
            std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), by_logit);
            llama_token token = first_allowed(grammar, k);
            if (token >= 0) return token;
        }
        full_passes++;
        fill(logits, n_vocab);
        std::sort(cand.begin(), cand.end(), by_logit);
        return first_allowed(grammar, cand.size());
    }

    void fill(const float * logits, int n_vocab) {
        cand.resize(n_vocab);
        for (int i = 0; i < n_vocab; i++) cand[i] = {i, logits[i], 0.0f};
    }
};

// One request's numbers (EW_STAT): the common ones and the grammar's full passes.
struct Stats : ew::Stats {
    int full_grammar_passes = 0;
};

bool verbose = false;

void log_to_stderr(ggml_log_level level, const char * text, void *) {
    if (verbose || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char ** argv) {
    int n_ctx = 4096, n_batch = 512;
    ew::Options options = ew::parse_options(argc, argv, "ew_llama", "FILE", "[--threads N] [--ctx N]",
                                            [&](const std::string & a, auto value) {
        if (a == "--ctx") n_ctx = std::atoi(value().c_str());
        else if (a == "--batch") n_batch = std::atoi(value().c_str());
        else if (a == "--verbose") verbose = true;
        else if (a == "--version") { std::printf("ew_llama on llama.cpp: %s\n", llama_print_system_info()); std::exit(0); }
        else return false;
        return true;
    });
    const std::string & model_path = options.model, & case_dir = options.case_dir;
    int threads = options.threads > 0 ? options.threads : ew::default_threads();
    n_batch = std::max(1, std::min(n_batch, n_ctx));
    std::vector<Request> requests = ew::read_requests(case_dir);

    llama_log_set(log_to_stderr, nullptr);
    llama_backend_init();
    double load_start = now_ms();
    Engine e;
    e.model = llama_model_load_from_file(model_path.c_str(), llama_model_default_params());
    if (!e.model) fail(3, "llama.cpp could not load the model " + model_path + " (see its log)");
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.swa_full = true;  // keep the whole sliding-window cache: prefix reuse needs it (Gemma 3)
    cp.no_perf = true;
    e.ctx = llama_init_from_model(e.model, cp);
    if (!e.ctx) fail(3, "llama.cpp could not create a context of " + std::to_string(n_ctx) + " tokens");
    double load_ms = now_ms() - load_start;
    e.vocab = llama_model_get_vocab(e.model);
    e.n_vocab = llama_vocab_n_tokens(e.vocab);
    e.n_batch = n_batch;
    e.batch = llama_batch_init(n_batch, 0, 1);
    std::printf("EW_NOTE ew_llama: %d threads, context %d, batch %d, model loaded in %.0f ms\n", threads,
                (int) llama_n_ctx(e.ctx), n_batch, load_ms);

    std::map<std::string, llama_sampler *> grammars;  // by file name, parsed once
    GrammarPick pick;
    for (const Request & r : requests) {
        ew::print_next(r);
        double start = now_ms();
        std::string prompt = ew::read_prompt(case_dir, r);
        llama_sampler * grammar = nullptr;
        if (r.grammar_file != "-") {
            auto found = grammars.find(r.grammar_file);
            if (found == grammars.end()) {
                std::string gbnf;
                if (!read_file(case_dir + "/" + r.grammar_file, gbnf)) fail(3, "request " + r.id + ": no grammar file " + r.grammar_file);
                llama_sampler * g = llama_sampler_init_grammar(e.vocab, gbnf.c_str(), "root");
                if (!g) fail(4, "request " + r.id + ": llama.cpp rejected the grammar " + r.grammar_file);
                found = grammars.emplace(r.grammar_file, g).first;
            }
            grammar = found->second;
            llama_sampler_reset(grammar);
        }
        llama_sampler * chain = nullptr;  // temperature sampling; greedy needs none
        if (r.temperature > 0) {
            chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
            llama_sampler_chain_add(chain, llama_sampler_init_temp(r.temperature));
            llama_sampler_chain_add(chain, llama_sampler_init_dist(r.seed));
        }

        std::vector<llama_token> tokens = tokenize(e.vocab, prompt);
        int ctx_size = (int) llama_n_ctx(e.ctx);
        if (tokens.empty()) fail(4, "request " + r.id + ": the prompt is empty");
        if ((int) tokens.size() >= ctx_size)
            fail(4, "request " + r.id + ": the prompt has " + std::to_string(tokens.size()) +
                    " tokens but the context holds " + std::to_string(ctx_size) + " (--ctx)");
        size_t prefix_len = 0;
        if (r.prefix_file != "-") {
            std::string prefix;
            if (!read_file(case_dir + "/" + r.prefix_file, prefix)) fail(3, "request " + r.id + ": no prefix file " + r.prefix_file);
            // The prefix's last token may merge with the text after it: keep what both agree on.
            prefix_len = common_prefix(tokenize(e.vocab, prefix), tokens);
        }

        Stats s;
        s.prompt_tokens = tokens.size();
        s.reused = e.reuse(tokens);
        double prefill_start = now_ms();
        bool ok = true;
        if (s.reused < prefix_len && prefix_len < tokens.size())  // the host's split (it keeps the prefix aside there)
            ok = e.eval(&tokens[s.reused], prefix_len - s.reused) && e.eval(&tokens[prefix_len], tokens.size() - prefix_len);
        else
            ok = e.eval(&tokens[s.reused], tokens.size() - s.reused);
        if (!ok) fail(5, "request " + r.id + ": llama_decode failed while evaluating the prompt");
        s.prefill_ms = now_ms() - prefill_start;
        s.evaluated = tokens.size() - s.reused;

        std::string text;
        int budget = std::min(r.max_tokens, ctx_size - (int) tokens.size());
        double first_at = -1, last_at = -1;
        while ((int) s.generated < budget) {
            double sample_start = now_ms();
            float * logits = llama_get_logits_ith(e.ctx, -1);
            llama_token token;
            if (chain == nullptr) {
                token = grammar ? pick.greedy(grammar, logits, e.n_vocab)
                                : (llama_token) (std::max_element(logits, logits + e.n_vocab) - logits);
            } else {
                pick.fill(logits, e.n_vocab);
                llama_token_data_array arr = {pick.cand.data(), pick.cand.size(), -1, false};
                if (grammar) llama_sampler_apply(grammar, &arr);
                llama_sampler_apply(chain, &arr);
                token = arr.data[arr.selected].id;
            }
            if (token < 0) fail(4, "request " + r.id + ": the grammar allows no token (a grammar that cannot end?)");
            if (grammar) llama_sampler_accept(grammar, token);
            if (chain) llama_sampler_accept(chain, token);
            double now = now_ms();
            s.sampling_ms += now - sample_start;
            if (llama_vocab_is_eog(e.vocab, token)) { s.finish = "stop"; break; }
            s.generated++;
            if (first_at < 0) first_at = now;
            last_at = now;
            text += piece(e.vocab, token);
            if ((int) s.generated >= budget) break;
            if (!e.eval(&token, 1))
                fail(5, "request " + r.id + ": llama_decode failed while decoding");
        }
        s.full_grammar_passes = pick.full_passes;
        pick.full_passes = 0;
        if (chain) llama_sampler_free(chain);
        s.set_times(start, first_at, last_at, now_ms());
        ew::print_record(r, s, load_ms, "full_grammar_passes=" + std::to_string(s.full_grammar_passes), text);
    }

    for (auto & g : grammars) llama_sampler_free(g.second);
    llama_batch_free(e.batch);
    llama_free(e.ctx);
    llama_model_free(e.model);
    llama_backend_free();
    return 0;
}
