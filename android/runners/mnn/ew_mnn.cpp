// ew_mnn: EdgeWisePersona's on-device MNN runner (the MNN twin of ew_llama).  One process per case
// (one user's requests), the model loaded once; each prompt is evaluated whole, as the host runtime
// does, unless --reuse-kv (see "KV cache" below).
//
//   ew_mnn --model DIR --case DIR [--threads N] [--reuse-kv] [--version]
//
// DIR (--model) is the folder of `make export FORMAT=mnn` (config.json, llm_config.json, llm.mnn,
// llm.mnn.weight, tokenizer.mtok).  DIR (--case) is the case folder device_runner/phone_runtime.py
// makes: requests.tsv, one line per request,
//   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
// ID.prompt (the whole prompt, any number of lines), and GRAMMAR_FILE in the "plain" format:
// NAME.choices (the request's choices, one per line, exact UTF-8) or NAME.schema.json (a JSON
// schema).  PREFIX_FILE is not needed: the common prefix with the cache is found by comparing tokens.
//
// It mirrors the host runtime (runtimes/mnn.py + runtimes/_decode.py) so that both give the same
// answers: the same tokenization (MNN's encode, BOS included; choices encoded without it), the
// same end-of-text id (the last id of llm_config.json's jinja.eos), the same text (each id's bytes
// as MNN decodes them, joined and read as UTF-8 with U+FFFD for invalid bytes, relative to the last
// prompt token), greedy decoding, and choices by the host's rule (_choice_token): only a token that
// keeps the text a prefix of some choice may win; the candidates are the first token of each
// choice's rest (with and without its leading space), then the 2048 most likely tokens; once the
// text is a choice, stopping competes with going on to a longer one.  Differences, all recorded:
//   - a JSON schema is not applied (decoded free; phone_runtime's Runner.schema_decoding="free"):
//     the host masks tokens with llguidance, which is Rust and not built for phones here;
//   - temperature > 0 samples with this runner's own generator (the host uses numpy's).
//
// KV cache: MNN's C++ API can keep a common prefix (eraseHistory(n, 0) drops the cache from token n
// on; generate_init() with reuse_kv=true then starts a new prompt on what is left), and --reuse-kv
// does that, so a request evaluates only the tokens after its longest common prefix with the cache.
// It is off by default because it changes the answers: with int8 weights MNN quantizes activations
// at run time, and a token's logits depend on which tokens share its forward (measured, not read
// in MNN's kernels).  Evaluated after a kept prefix instead of in the whole prompt, the last position's
// logits moved by up to 1.75 (smollm2-135m, int8 export) and 0.27 (tiny-llama); evaluated
// whole, they equal the host's bit for bit.  (The host's Python API can only reset.)
//
// Output on stdout, one record per line (device_runner/engines.py parses it; ../common/ew_runner.hpp), as ew_llama:
//   EW_NOTE text / EW_NEXT request ID / EW_BEGIN request ID / EW_STAT key=value ... /
//   EW_RC 0 / EW_RSS_KB n / EW_WALL_MS n / EW_TEXT base64 / EW_END request ID / EW_ERROR text (exit 2-5)
// MNN prints its own messages with printf: they are sent to stderr (the records keep stdout).

#include <unistd.h>

#include "ew_runner.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

// ---- MNN's LLM API: our own declarations ------------------------------------------------------
// No package this project installs ships MNN's C++ headers: PyPI has no MNN sdist, and its MNN wheel
// has the engine compiled into its Python extension, _mnncengine*.so, which exports the C++ API (a
// phone build links libMNN.so, built from an MNN checkout with the LLM engine inside).  So these few
// declarations are written here, following MNN 3.6.1's transformers/llm/engine/include/llm/llm.hpp
// and include/MNN/expr/Expr.hpp (export/requirements/mnn.txt pins MNN==3.6.1); they must be checked
// again when that pin moves.
//
// Every member function is declared NON-virtual, on purpose: a call then goes straight to the
// exported symbol (MNN::Transformer::Llm::load() etc., which `nm -D -C` lists), and no vtable
// layout is assumed.  A few of them are virtual in MNN (load, tokenizer_encode, generate_init);
// calling MNN's own implementation directly is what a virtual call does on a text-only model,
// whose object is a plain Llm (createLLM makes an Omni only for vision/audio models; ew_mnn
// refuses those: main checks is_visual / is_audio / has_talker in llm_config.json).  No object of these classes is created or copied
// here: only pointers from createLLM, and VARP, whose one member is a std::shared_ptr as in MNN.
namespace MNN {
namespace Express {
class Variable;
class VARP {  // Expr.hpp: a std::shared_ptr<Variable> and nothing else (returned by value)
public:
    std::shared_ptr<Variable> content;
};
class Variable {
public:
    struct Info {  // Expr.hpp 3.6.1: order, dim, type (halide_type_t, 4 bytes), size
        int order;
        std::vector<int> dim;
        uint32_t type;
        size_t size;
    };
    const Info * getInfo();
    void * readInternal(bool forShape);  // what readMap<float>() calls
};
}  // namespace Express
namespace Transformer {
class Llm {
public:
    static Llm * createLLM(const std::string & config_path);
    static void destroy(Llm * llm);
    bool load();
    bool set_config(const std::string & content);
    std::vector<int> tokenizer_encode(const std::string & query);
    std::string tokenizer_decode(int token);
    Express::VARP forward(const std::vector<int> & input_ids, bool is_prefill);
    void reset();
    void generate_init(std::ostream * os, const char * end_with);
    size_t getCurrentHistory() const;
    void eraseHistory(size_t begin, size_t end);
};
}  // namespace Transformer
}  // namespace MNN

namespace {

using MNN::Transformer::Llm;

using ew::CHOICE_SCAN;
using ew::ends_with;
using ew::fail;
using ew::now_ms;
using ew::read_file;
using ew::Request;  // prefix_file: not read (the common prefix with the cache is found by comparing tokens)
using ew::starts_with;

// Bytes read as UTF-8 the way Python's bytes.decode(errors="replace") reads them (the host's
// MnnModel.decode): each maximal invalid subpart becomes one U+FFFD.  The result is valid UTF-8,
// so prefixes and equality compare as the host's str do; code_points() gives len(str).
std::string utf8_replace(const std::string & s) {
    static const std::string fffd = "\xEF\xBF\xBD";
    std::string text;
    size_t i = 0, n = s.size();
    while (i < n) {
        uint8_t b = (uint8_t) s[i];
        if (b < 0x80) { text += (char) b; i++; continue; }
        int len = 0;
        uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
        if (b >= 0xC2 && b <= 0xDF) len = 2;
        else if (b == 0xE0) { len = 3; lo = 0xA0; }
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) len = 3;
        else if (b == 0xED) { len = 3; hi = 0x9F; }
        else if (b == 0xF0) { len = 4; lo = 0x90; }
        else if (b >= 0xF1 && b <= 0xF3) len = 4;
        else if (b == 0xF4) { len = 4; hi = 0x8F; }
        if (len == 0) { text += fffd; i++; continue; }
        size_t j = i + 1;
        for (int k = 1; k < len && j < n; k++, j++) {
            uint8_t c = (uint8_t) s[j];
            if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
        }
        if ((int) (j - i) == len) text.append(s, i, len);
        else text += fffd;
        i = j;
    }
    return text;
}

size_t code_points(const std::string & utf8) {
    size_t count = 0;
    for (char c : utf8) count += ((uint8_t) c & 0xC0) != 0x80;
    return count;
}

// ---- a small JSON reader: llm_config.json's jinja.eos and the config's llm_config name ----------
struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    std::string str;
    std::map<std::string, Json> obj;
    std::vector<Json> arr;
    const Json * get(const std::string & key) const {
        auto found = obj.find(key);
        return kind == Object && found != obj.end() ? &found->second : nullptr;
    }
};

struct JsonReader {
    const std::string & s;
    size_t at = 0;
    bool ok = true;

    void space() { while (at < s.size() && std::isspace((unsigned char) s[at])) at++; }
    bool eat(char c) { space(); if (at < s.size() && s[at] == c) { at++; return true; } return false; }
    void utf8(uint32_t cp, std::string & text) {
        if (cp < 0x80) text += (char) cp;
        else if (cp < 0x800) { text += (char) (0xC0 | (cp >> 6)); text += (char) (0x80 | (cp & 63)); }
        else if (cp < 0x10000) { text += (char) (0xE0 | (cp >> 12)); text += (char) (0x80 | ((cp >> 6) & 63)); text += (char) (0x80 | (cp & 63)); }
        else { text += (char) (0xF0 | (cp >> 18)); text += (char) (0x80 | ((cp >> 12) & 63)); text += (char) (0x80 | ((cp >> 6) & 63)); text += (char) (0x80 | (cp & 63)); }
    }
    uint32_t hex4() {
        if (at + 4 > s.size()) { ok = false; return 0; }
        uint32_t v = (uint32_t) std::strtoul(s.substr(at, 4).c_str(), nullptr, 16);
        at += 4;
        return v;
    }
    std::string string() {
        std::string text;
        while (ok && at < s.size() && s[at] != '"') {
            char c = s[at++];
            if (c != '\\') { text += c; continue; }
            if (at >= s.size()) break;
            char e = s[at++];
            switch (e) {
                case 'n': text += '\n'; break;
                case 't': text += '\t'; break;
                case 'r': text += '\r'; break;
                case 'b': text += '\b'; break;
                case 'f': text += '\f'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00 && at + 1 < s.size() && s[at] == '\\' && s[at + 1] == 'u') {
                        at += 2;
                        uint32_t low = hex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    }
                    utf8(cp, text);
                    break;
                }
                default: text += e;
            }
        }
        if (at >= s.size()) ok = false;
        at++;
        return text;
    }
    Json value(int depth = 0) {
        Json v;
        space();
        if (!ok || at >= s.size() || depth > 64) { ok = false; return v; }
        char c = s[at];
        if (c == '{') {
            at++;
            v.kind = Json::Object;
            if (eat('}')) return v;
            do {
                if (!eat('"')) { ok = false; return v; }
                std::string key = string();
                if (!eat(':')) { ok = false; return v; }
                v.obj[key] = value(depth + 1);
            } while (ok && eat(','));
            if (!eat('}')) ok = false;
        } else if (c == '[') {
            at++;
            v.kind = Json::Array;
            if (eat(']')) return v;
            do v.arr.push_back(value(depth + 1)); while (ok && eat(','));
            if (!eat(']')) ok = false;
        } else if (c == '"') {
            at++;
            v.kind = Json::String;
            v.str = string();
        } else {  // number, true, false, null: kept as text
            size_t start = at;
            while (at < s.size() && (std::isalnum((unsigned char) s[at]) || s[at] == '-' || s[at] == '+' || s[at] == '.')) at++;
            v.str = s.substr(start, at - start);
            v.kind = v.str == "null" ? Json::Null : (v.str == "true" || v.str == "false") ? Json::Bool : Json::Number;
            if (at == start) ok = false;
        }
        return v;
    }
};

bool parse_json(const std::string & text, Json & v) {
    JsonReader reader{text};
    v = reader.value();
    reader.space();
    return reader.ok && reader.at == text.size();
}

// ---- the model ------------------------------------------------------------------------------

struct Model {
    Llm * llm = nullptr;
    size_t bos = 0;                   // ids MNN's encode puts before every text (tokenizer prefix)
    std::set<int> eos;                // the host's end-of-text ids (MnnRuntime._eos)
    std::vector<int> cached;          // the ids whose keys and values the KV cache holds, in order
    std::map<int, std::string> piece_cache;
    std::map<std::string, std::vector<int>> encode_cache;
    bool reuse = false;

    std::vector<int> tokenize(const std::string & text) { return llm->tokenizer_encode(text); }

    // Engine.encode: text without the BOS prefix (for the choices' tokens).
    const std::vector<int> & encode(const std::string & text) {
        auto found = encode_cache.find(text);
        if (found != encode_cache.end()) return found->second;
        std::vector<int> ids = tokenize(text);
        ids.erase(ids.begin(), ids.begin() + std::min(bos, ids.size()));
        return encode_cache.emplace(text, ids).first->second;
    }

    const std::string & piece(int id) {
        auto found = piece_cache.find(id);
        if (found != piece_cache.end()) return found->second;
        return piece_cache.emplace(id, llm->tokenizer_decode(id)).first->second;
    }

    // Logits of the last position after evaluating `ids` (copied: the next forward reuses MNN's buffer).
    bool forward(const std::vector<int> & ids, std::vector<float> & logits) {
        MNN::Express::VARP var = llm->forward(ids, true);
        if (!var.content) return false;
        const MNN::Express::Variable::Info * info = var.content->getInfo();
        const float * data = (const float *) var.content->readInternal(false);
        if (info == nullptr || data == nullptr || info->size == 0 || info->dim.empty()) return false;
        size_t width = (size_t) info->dim.back();
        if (width == 0 || info->size % width != 0) return false;
        logits.assign(data + info->size - width, data + info->size);  // the last position's row
        cached.insert(cached.end(), ids.begin(), ids.end());
        return true;
    }

    // Keep the longest common prefix of the KV cache and `tokens` (at least one token is left to
    // evaluate, for the logits); returns its length.  MNN's eraseHistory(begin, 0) drops the cache
    // from `begin` on (applied at the next forward); generate_init() with reuse_kv=true keeps the
    // rest and starts a new prompt (its next forward runs MNN's prefill module, as after reset()).
    size_t keep_prefix(const std::vector<int> & tokens) {
        size_t common = std::min(ew::common_prefix(cached, tokens), tokens.size() - 1);
        if (!reuse || common == 0 || llm->getCurrentHistory() != cached.size()) {
            llm->reset();
            cached.clear();
            return 0;
        }
        if (common < cached.size()) llm->eraseHistory(common, 0);
        cached.resize(common);
        llm->generate_init(nullptr, nullptr);
        return common;
    }
};

// Generated text relative to the last prompt token (runtimes/_decode.py _Text).
struct TextOf {
    Model & m;
    std::string anchor, base;
    TextOf(Model & model, int last) : m(model) {
        anchor = m.piece(last);
        base = utf8_replace(anchor);
    }
    std::string of(const std::vector<int> & generated, int extra = -1) {
        std::string bytes = anchor;
        for (int t : generated) bytes += m.piece(t);
        if (extra >= 0) bytes += m.piece(extra);
        std::string text = utf8_replace(bytes);
        return starts_with(text, base) ? text.substr(base.size()) : text;
    }
};

// The host's _choice_token: the best token that keeps the text a prefix of some choice (greedy at
// any temperature, as there).  Returns the token (-1: stop here) and sets `done` when the text is
// then complete.  Equal logits go to the lower id (the host's order for exact ties is Python's set
// and numpy's argsort order).
struct ChoicePick {
    int scans = 0;  // steps that needed the vocabulary scan (no choice-derived candidate fitted)

    static bool in(const std::vector<std::string> & list, const std::string & s) { return ew::is_choice(list, s); }

    int pick(Model & m, TextOf & text_of, const std::vector<int> & generated, const std::vector<float> & logits,
             const std::vector<std::string> & choices, bool & done, const std::string & rid) {
        std::string current = generated.empty() ? "" : text_of.of(generated);
        size_t current_len = code_points(current);
        std::vector<std::string> live;
        for (const std::string & c : choices) if (starts_with(c, current)) live.push_back(c);
        bool longer = false;
        for (const std::string & c : live) longer = longer || code_points(c) > current_len;
        done = false;
        if (in(choices, current) && !longer) { done = true; return -1; }
        std::vector<int> candidates;
        for (const std::string & c : live) {
            std::string rest = c.substr(current.size());
            size_t spaces = rest.find_first_not_of(' ');
            std::string variants[2] = {rest, spaces == std::string::npos ? "" : rest.substr(spaces)};
            for (const std::string & variant : variants) {
                if (variant.empty()) continue;
                const std::vector<int> & ids = m.encode(variant);
                if (!ids.empty() && ids[0] >= 0 && (size_t) ids[0] < logits.size()) candidates.push_back(ids[0]);
            }
        }
        std::vector<int> ordered = candidates;
        std::sort(ordered.begin(), ordered.end());
        ordered.erase(std::unique(ordered.begin(), ordered.end()), ordered.end());
        auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
        std::stable_sort(ordered.begin(), ordered.end(), by_logit);
        auto keeps = [&](int token) {
            std::string text = text_of.of(generated, token);
            if (text.empty() || code_points(text) <= current_len) return false;
            for (const std::string & c : live) if (starts_with(c, text)) return true;
            return false;
        };
        auto final_text = [&](int token) {
            std::string text = text_of.of(generated, token);
            size_t len = code_points(text);
            for (const std::string & c : live) if (code_points(c) > len && starts_with(c, text)) return false;
            return true;
        };
        if (in(choices, current)) {  // already a choice: stopping competes with going on
            int eos = -1;
            for (int t : m.eos) if (t < (int) logits.size() && (eos < 0 || logits[t] > logits[eos])) eos = t;
            int best_go = -1;
            for (int t : ordered) if (keeps(t)) { best_go = t; break; }
            if (best_go < 0 || (eos >= 0 && logits[eos] >= logits[best_go])) { done = true; return -1; }
            done = in(choices, text_of.of(generated, best_go));
            return best_go;
        }
        for (int t : ordered) {
            if (keeps(t)) {
                done = in(choices, text_of.of(generated, t)) && final_text(t);
                return t;
            }
        }
        scans++;
        for (int t : ew::most_likely<int>(logits, CHOICE_SCAN)) {
            if (std::find(candidates.begin(), candidates.end(), t) == candidates.end() && keeps(t)) {
                done = in(choices, text_of.of(generated, t)) && final_text(t);
                return t;
            }
        }
        fail(4, "request " + rid + ": no token continues the text '" + current +
                "' towards any of its choices (runtimes/_decode.py raises the same); check the .choices file");
    }
};

// One request's numbers (EW_STAT): the common ones and the choice scans (as ew_llama's key).
struct Stats : ew::Stats {
    int full_grammar_passes = 0;
};

int sample(const std::vector<float> & logits, float temperature, std::mt19937 & rng) {
    float top = *std::max_element(logits.begin(), logits.end());
    std::vector<double> weights(logits.size());
    for (size_t i = 0; i < logits.size(); i++) weights[i] = std::exp((logits[i] - top) / temperature);
    std::discrete_distribution<int> pick(weights.begin(), weights.end());
    return pick(rng);
}

}  // namespace

int main(int argc, char ** argv) {
    // MNN prints with printf: our records get their own copy of stdout, and fd 1 becomes stderr.
    int records_fd = dup(1);
    if (records_fd >= 0 && (ew::records = fdopen(records_fd, "w")) != nullptr) {
        std::fflush(stdout);
        dup2(2, 1);
    } else {
        ew::records = stdout;
    }
    bool reuse = false;
    ew::Options options = ew::parse_options(argc, argv, "ew_mnn", "DIR", "[--threads N] [--reuse-kv]",
                                            [&](const std::string & a, auto) {
        if (a == "--reuse-kv") reuse = true;
        else if (a == "--version") { std::fprintf(ew::records, "ew_mnn on MNN's LLM engine (C++ API of MNN 3.6.1)\n"); std::exit(0); }
        else return false;
        return true;
    });
    std::string model_dir = options.model;
    const std::string & case_dir = options.case_dir;
    if (ends_with(model_dir, "/config.json")) model_dir.resize(model_dir.size() - 12);
    int threads = options.threads > 0 ? options.threads : ew::default_threads();
    std::vector<Request> requests = ew::read_requests(case_dir);

    std::string config_text, llm_config_text;
    Json config, llm_config;
    if (!read_file(model_dir + "/config.json", config_text))
        fail(3, "no config.json in the model folder " + model_dir + " (make export MODEL=... FORMAT=mnn)");
    if (!parse_json(config_text, config) || config.kind != Json::Object)
        fail(3, model_dir + "/config.json is not a JSON object; export the model again (make export FORMAT=mnn)");
    const Json * llm_config_name = config.get("llm_config");
    std::string llm_config_path = model_dir + "/" + (llm_config_name ? llm_config_name->str : "llm_config.json");
    if (read_file(llm_config_path, llm_config_text) && !parse_json(llm_config_text, llm_config))
        fail(3, llm_config_path + " is not valid JSON; export the model again (make export FORMAT=mnn)");
    for (const char * key : {"is_visual", "is_audio", "has_talker"}) {
        const Json * flag = llm_config.get(key);
        if (flag && flag->str == "true")
            fail(3, std::string("the model in ") + model_dir + " is multimodal (" + key + "); ew_mnn runs text-only "
                    "models (its declarations of MNN's API assume a plain Llm object)");
    }

    double load_start = now_ms();
    Model m;
    m.reuse = reuse;
    m.llm = Llm::createLLM(model_dir + "/config.json");
    if (!m.llm) fail(3, "MNN could not read the model's config " + model_dir + "/config.json");
    // The thread count is read by load(); the rest of the config stays as exported (the host
    // adapter's own set_config comes after load, when precision and threads no longer change).
    m.llm->set_config("{\"thread_num\": " + std::to_string(threads) + "}");
    if (!m.llm->load()) fail(3, "MNN could not load the model in " + model_dir + " (see its log on stderr)");
    // reuse_kv: generate_init() starts a new prompt without dropping the KV cache (keep_prefix).
    if (reuse) m.llm->set_config("{\"reuse_kv\": true}");
    double load_ms = now_ms() - load_start;
    m.bos = m.tokenize("").size();
    const Json * jinja = llm_config.get("jinja");
    const Json * eos_text = jinja ? jinja->get("eos") : nullptr;
    if (eos_text && eos_text->kind == Json::String && !eos_text->str.empty()) {
        std::vector<int> ids = m.tokenize(eos_text->str);
        if (!ids.empty()) m.eos.insert(ids.back());
    }
    std::fprintf(ew::records, "EW_NOTE ew_mnn: %d threads, %s, model loaded in %.0f ms\n", threads,
                 reuse ? "KV cache kept across requests (--reuse-kv)" : "each prompt evaluated whole, as the host does",
                 load_ms);
    bool noted_schema = false;

    std::map<std::string, std::vector<std::string>> choice_files;
    ChoicePick chooser;
    for (const Request & r : requests) {
        ew::print_next(r);
        double start = now_ms();
        std::string prompt = ew::read_prompt(case_dir, r);
        const std::vector<std::string> * choices = nullptr;
        if (r.grammar_file != "-") {
            if (ends_with(r.grammar_file, ".choices")) {
                auto found = choice_files.find(r.grammar_file);
                if (found == choice_files.end()) {
                    std::string text;
                    if (!read_file(case_dir + "/" + r.grammar_file, text))
                        fail(3, "request " + r.id + ": no choices file " + r.grammar_file);
                    std::vector<std::string> list;
                    if (!text.empty() && text.back() == '\n') text.pop_back();  // a final newline ends the last line
                    size_t begin = 0;
                    while (begin <= text.size()) {  // one choice per line, exact: no trimming
                        size_t end = text.find('\n', begin);
                        if (end == std::string::npos) end = text.size();
                        list.push_back(utf8_replace(text.substr(begin, end - begin)));
                        begin = end + 1;
                    }
                    if (list.empty() || std::any_of(list.begin(), list.end(), [](const std::string & c) { return c.empty(); }))
                        fail(4, "request " + r.id + ": " + r.grammar_file + " has an empty choice (one per line, none empty)");
                    found = choice_files.emplace(r.grammar_file, list).first;
                }
                choices = &found->second;
            } else if (ends_with(r.grammar_file, ".schema.json")) {
                if (!noted_schema) {
                    std::fprintf(ew::records, "EW_NOTE ew_mnn: JSON-schema requests decoded free (no schema masks on the phone)\n");
                    noted_schema = true;
                }
            } else {
                fail(4, "request " + r.id + ": " + r.grammar_file + " is neither a .choices nor a .schema.json file "
                        "(ew_mnn reads the plain grammar format of phone_runtime.py)");
            }
        }
        std::mt19937 rng(r.seed);

        std::vector<int> tokens = m.tokenize(prompt);
        if (tokens.empty()) fail(4, "request " + r.id + ": the prompt is empty");
        Stats s;
        s.prompt_tokens = tokens.size();
        s.reused = m.keep_prefix(tokens);
        double prefill_start = now_ms();
        std::vector<float> logits;
        if (!m.forward(std::vector<int>(tokens.begin() + s.reused, tokens.end()), logits))
            fail(5, "request " + r.id + ": MNN's forward failed while evaluating the prompt (see its log on stderr)");
        s.prefill_ms = now_ms() - prefill_start;
        s.evaluated = tokens.size() - s.reused;

        TextOf text_of(m, tokens.back());
        std::vector<int> generated;
        std::string text;
        double first_at = -1, last_at = -1;
        while ((int) generated.size() < r.max_tokens) {
            double pick_start = now_ms();
            int token;
            bool done = false;
            if (choices != nullptr) token = chooser.pick(m, text_of, generated, logits, *choices, done, r.id);
            else token = r.temperature > 0 ? sample(logits, r.temperature, rng) : ew::argmax<int>(logits);
            double now = now_ms();
            s.sampling_ms += now - pick_start;
            if (token < 0 || (choices == nullptr && m.eos.count(token))) { s.finish = "stop"; break; }
            generated.push_back(token);
            if (first_at < 0) first_at = now;
            last_at = now;
            text = text_of.of(generated);
            if (choices != nullptr && done) { s.finish = "stop"; break; }
            if ((int) generated.size() >= r.max_tokens) break;
            if (!m.forward({token}, logits))
                fail(5, "request " + r.id + ": MNN's forward failed while decoding (see its log on stderr)");
        }
        if (choices != nullptr && !ew::is_choice(*choices, text))
            fail(4, "request " + r.id + ": constrained decoding ended on '" + text + "', which is none of its " +
                    std::to_string(choices->size()) + " choices (max_tokens=" + std::to_string(r.max_tokens) +
                    " may be too small for the longest choice)");
        s.generated = generated.size();
        s.full_grammar_passes = chooser.scans;
        chooser.scans = 0;
        s.set_times(start, first_at, last_at, now_ms());
        ew::print_record(r, s, load_ms, "full_grammar_passes=" + std::to_string(s.full_grammar_passes), text);
    }
    Llm::destroy(m.llm);
    return 0;
}
