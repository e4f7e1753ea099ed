// ew_ort: EdgeWisePersona's on-device onnxruntime-genai runner.  One process per case (one user's
// requests): the model is loaded once, one generator (its KV cache) is kept across requests, and a
// request only evaluates the tokens after the longest common prefix with what the generator holds
// (OgaGenerator_RewindTo), as the host runtime does.
//
//   ew_ort --model DIR --case DIR [--threads N] [--verbose]
//
// DIR (--model) is the artifact folder of `make export FORMAT=onnx` (genai_config.json, model.onnx,
// tokenizer.json).  --case is the folder device_runner/phone_runtime.py makes: requests.tsv, one line
// per request,
//   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
// and ID.prompt (the whole prompt).  GRAMMAR_FILE is *.choices (one choice per line, exact UTF-8) or
// *.schema.json (a JSON schema): phone_runtime's grammar_format "plain".
//
// It mirrors the host runtime (runtimes/onnxruntime.py and runtimes/_decode.py) so that both give the
// same answers:
// - tokenization: the tokenizer's encode, then BOS added when tokenizer_config.json's add_bos_token asks
//   for it and genai_config.json names one (encode_prompt);
// - one generator kept with max_length min(context_length, max(prompt + max_tokens + 1, 4096)); a request
//   reuses min(common prefix, prompt - 1) tokens when it fits in that generator, else a new generator;
//   the rest of the prompt is appended in one call (the host does not split at the cache_prefix, so
//   PREFIX_FILE is not read: reuse comes from the common prefix alone);
// - greedy decoding (the first maximum, the lowest id on a tie); temperature > 0 is refused (EW_ERROR);
// - choices (_choice_token): at each step the candidates are the first token of each live choice's
//   remainder (encoded alone, with and without its leading spaces), best logit first; the first that keeps
//   the decoded text a prefix of a live choice wins; if none does, the 2048 most likely tokens
//   (CHOICE_SCAN) are scanned in order.  Text is decoded relative to the last prompt token.  It stops
//   when the text is a choice and no longer choice is live, or, when a longer one is live, when the best
//   end-of-text logit is at least the best continuing candidate's.  Ties between exactly equal logits
//   are broken by the lower token id here; numpy's order may differ there (only on exact float ties).
// - JSON schema: onnxruntime-genai's own guidance (OgaGeneratorParamsSetGuidance "json_schema",
//   llguidance inside libonnxruntime-genai), with the host's whitespace bound (x-guidance
//   whitespace_pattern, runtimes/_decode.py JSON_WHITESPACE) added to the schema.  The guidance lives in
//   a generator's params, so a schema request runs on a fresh generator of its own (the kept one is
//   dropped first, so only one KV cache is held): it evaluates its whole prompt where the host may reuse
//   its cache (on a near tie the answer can then differ), and the next request starts a new kept
//   generator.  Each step: the logits (OgaGenerator_GetLogits), our filter (WhitespaceBound: the
//   whitespace bound and no added tokens inside the JSON, where genai's bundled llguidance is more
//   lenient than the host's llguidance 1.9.1), OgaGenerator_SetLogits, then GenerateNextToken applies
//   the guidance mask and takes the argmax (genai_config.json's repetition_penalty / min_length apply
//   too: 1.0 / 0 in our exports).  When the document is complete llguidance forces the first
//   eos_token_id, which ends the text ("stop"; the host stops on the token that completed it: the same
//   text, but a document completed exactly at max_tokens is "length" here, "stop" there).  Token masks
//   can still differ from the host's llguidance (seen on tiny-llama: the byte-fallback token <0x22> for
//   '"' after a space, allowed here only).  sampling_ms counts the filter, the mask and the argmax.
//
// Output on stdout, one record per line (device_runner/engines.py parses it), as ew_llama's:
//   EW_NOTE text                   something worth recording (threads, context)
//   EW_NEXT request ID             printed before a request starts (names it if the process dies)
//   EW_BEGIN request ID            then, once the request is done:
//   EW_STAT key=value ...          its timings and token counts (../common/ew_runner.hpp print_record)
//   EW_RC 0 / EW_RSS_KB n / EW_WALL_MS n
//   EW_TEXT base64                 the generated text (several lines, concatenated)
//   EW_END request ID
//   EW_ERROR text                  a request it cannot serve, or a file it cannot read (exit 2-5)

#include "ew_runner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

// ---- onnxruntime-genai's C API: our own declarations of the functions this file calls, written
// after src/ort_genai_c.h of microsoft/onnxruntime-genai v0.15.2 (the version of the wheel the host
// runtime uses; the library exports them with C linkage).  The structs are opaque handles.
extern "C" {
typedef struct OgaResult OgaResult;
typedef struct OgaConfig OgaConfig;
typedef struct OgaModel OgaModel;
typedef struct OgaTokenizer OgaTokenizer;
typedef struct OgaSequences OgaSequences;
typedef struct OgaGeneratorParams OgaGeneratorParams;
typedef struct OgaGenerator OgaGenerator;
typedef struct OgaTensor OgaTensor;
enum { kOgaFloat32 = 1, kOgaFloat16 = 10 };  // OgaElementType_float32, OgaElementType_float16

const char * OgaResultGetError(const OgaResult * result);
void OgaDestroyResult(OgaResult * result);
void OgaDestroyString(const char * s);
void OgaShutdown();
OgaResult * OgaCreateConfig(const char * config_path, OgaConfig ** out);
OgaResult * OgaConfigOverlay(OgaConfig * config, const char * json);
void OgaDestroyConfig(OgaConfig * config);
OgaResult * OgaCreateModelFromConfig(const OgaConfig * config, OgaModel ** out);
void OgaDestroyModel(OgaModel * model);
OgaResult * OgaCreateTokenizer(const OgaModel * model, OgaTokenizer ** out);
void OgaDestroyTokenizer(OgaTokenizer * tokenizer);
OgaResult * OgaCreateSequences(OgaSequences ** out);
void OgaDestroySequences(OgaSequences * sequences);
size_t OgaSequencesGetSequenceCount(const OgaSequences * sequences, size_t index);
const int32_t * OgaSequencesGetSequenceData(const OgaSequences * sequences, size_t index);
OgaResult * OgaTokenizerEncode(const OgaTokenizer * tokenizer, const char * str, OgaSequences * sequences);
OgaResult * OgaTokenizerDecode(const OgaTokenizer * tokenizer, const int32_t * tokens, size_t count, const char ** out);
OgaResult * OgaCreateGeneratorParams(const OgaModel * model, OgaGeneratorParams ** out);
void OgaDestroyGeneratorParams(OgaGeneratorParams * params);
OgaResult * OgaGeneratorParamsSetSearchNumber(OgaGeneratorParams * params, const char * name, double value);
OgaResult * OgaGeneratorParamsSetSearchBool(OgaGeneratorParams * params, const char * name, bool value);
OgaResult * OgaGeneratorParamsSetGuidance(OgaGeneratorParams * params, const char * type, const char * data,
                                          bool enable_ff_tokens);
OgaResult * OgaCreateGenerator(const OgaModel * model, const OgaGeneratorParams * params, OgaGenerator ** out);
void OgaDestroyGenerator(OgaGenerator * generator);
OgaResult * OgaGenerator_AppendTokens(OgaGenerator * generator, const int32_t * ids, size_t count);
OgaResult * OgaGenerator_RewindTo(OgaGenerator * generator, size_t new_length);
size_t OgaGenerator_TokenCount(const OgaGenerator * generator);
OgaResult * OgaGenerator_GetLogits(OgaGenerator * generator, OgaTensor ** out);
OgaResult * OgaGenerator_SetLogits(OgaGenerator * generator, OgaTensor * tensor);
OgaResult * OgaGenerator_GenerateNextToken(OgaGenerator * generator);
OgaResult * OgaGenerator_GetNextTokens(const OgaGenerator * generator, const int32_t ** out, size_t * count);
bool OgaGenerator_IsDone(OgaGenerator * generator);
OgaResult * OgaCreateTensorFromBuffer(void * data, const int64_t * dims, size_t rank, int element_type,
                                      OgaTensor ** out);  // element_type: OgaElementType
void OgaDestroyTensor(OgaTensor * tensor);
OgaResult * OgaTensorGetType(OgaTensor * tensor, int * out);
OgaResult * OgaTensorGetShapeRank(OgaTensor * tensor, size_t * out);
OgaResult * OgaTensorGetShape(OgaTensor * tensor, int64_t * dims, size_t count);
OgaResult * OgaTensorGetData(OgaTensor * tensor, void ** out);
}

namespace {

constexpr size_t CACHE_TOKENS = 4096;  // runtimes/onnxruntime.py cache_tokens (its default)
// runtimes/_decode.py JSON_WHITESPACE, as a JSON string: none, one space, or a newline and up to 20
// spaces or tabs between JSON tokens.
const char * const JSON_WHITESPACE_JSON = "\"(?: |\\\\n[ \\\\t]{0,20})?\"";

using ew::CHOICE_SCAN;
using ew::fail;
using ew::now_ms;
using ew::read_file;
using ew::Request;
using ew::starts_with;

// An onnxruntime-genai call that failed: its message, and the request it was serving.
void check(OgaResult * result, int code, const std::string & what) {
    if (result == nullptr) return;
    std::string message = OgaResultGetError(result) ? OgaResultGetError(result) : "(no message)";
    OgaDestroyResult(result);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
    for (char & c : message) if (c == '\n' || c == '\r') c = ' ';
    fail(code, what + ": onnxruntime-genai says: " + message);
}

// ---- the few values of genai_config.json / tokenizer_config.json the host reads -----------------
// A small JSON reader: numbers, booleans and lists of numbers, found by path.
struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool b = false;
    double n = 0;
    std::string s;
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json * get(const std::string & key) const {
        if (kind != Object) return nullptr;
        for (const auto & m : members) if (m.first == key) return &m.second;
        return nullptr;
    }
};

struct JsonReader {
    const std::string & t;
    size_t i = 0;
    explicit JsonReader(const std::string & text) : t(text) {}
    void ws() { while (i < t.size() && std::strchr(" \t\r\n", t[i])) i++; }
    bool lit(const char * w) {
        size_t n = std::strlen(w);
        if (t.compare(i, n, w) != 0) return false;
        i += n;
        return true;
    }
    bool string(std::string & out) {
        if (i >= t.size() || t[i] != '"') return false;
        i++;
        while (i < t.size() && t[i] != '"') {
            if (t[i] == '\\' && i + 1 < t.size()) {
                char c = t[i + 1];
                i += 2;
                if (c == 'u' && i + 4 <= t.size()) {  // keep it simple: \uXXXX as UTF-8 (BMP)
                    unsigned cp = (unsigned) std::strtoul(t.substr(i, 4).c_str(), nullptr, 16);
                    i += 4;
                    if (cp < 0x80) out += (char) cp;
                    else if (cp < 0x800) { out += (char) (0xC0 | (cp >> 6)); out += (char) (0x80 | (cp & 63)); }
                    else { out += (char) (0xE0 | (cp >> 12)); out += (char) (0x80 | ((cp >> 6) & 63)); out += (char) (0x80 | (cp & 63)); }
                } else {
                    out += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b' : c == 'f' ? '\f' : c;
                }
            } else {
                out += t[i++];
            }
        }
        if (i >= t.size()) return false;
        i++;
        return true;
    }
    bool value(Json & v) {
        ws();
        if (i >= t.size()) return false;
        char c = t[i];
        if (c == '{') {
            v.kind = Json::Object;
            i++;
            ws();
            if (i < t.size() && t[i] == '}') { i++; return true; }
            while (true) {
                ws();
                std::string key;
                if (!string(key)) return false;
                ws();
                if (i >= t.size() || t[i] != ':') return false;
                i++;
                Json member;
                if (!value(member)) return false;
                v.members.emplace_back(key, member);
                ws();
                if (i < t.size() && t[i] == ',') { i++; continue; }
                if (i < t.size() && t[i] == '}') { i++; return true; }
                return false;
            }
        }
        if (c == '[') {
            v.kind = Json::Array;
            i++;
            ws();
            if (i < t.size() && t[i] == ']') { i++; return true; }
            while (true) {
                Json item;
                if (!value(item)) return false;
                v.items.push_back(item);
                ws();
                if (i < t.size() && t[i] == ',') { i++; continue; }
                if (i < t.size() && t[i] == ']') { i++; return true; }
                return false;
            }
        }
        if (c == '"') { v.kind = Json::String; return string(v.s); }
        if (lit("true")) { v.kind = Json::Bool; v.b = true; return true; }
        if (lit("false")) { v.kind = Json::Bool; v.b = false; return true; }
        if (lit("null")) { v.kind = Json::Null; return true; }
        char * end = nullptr;
        v.n = std::strtod(t.c_str() + i, &end);
        if (end == t.c_str() + i) return false;
        v.kind = Json::Number;
        i = (size_t) (end - t.c_str());
        return true;
    }
};

Json read_json(const std::string & path, bool required) {
    std::string text;
    Json v;
    if (!read_file(path, text)) {
        if (required) fail(3, "cannot read " + path + " (make export MODEL=... FORMAT=onnx writes it)");
        return v;
    }
    JsonReader reader(text);
    if (!reader.value(v)) fail(3, path + " is not valid JSON; re-export the model (make export FORMAT=onnx)");
    return v;
}

// An id or a list of ids (genai_config's bos_token_id / eos_token_id).
std::vector<int32_t> ids_of(const Json * v) {
    std::vector<int32_t> out;
    if (v == nullptr) return out;
    if (v->kind == Json::Number) out.push_back((int32_t) v->n);
    for (const Json & item : v->items) if (item.kind == Json::Number) out.push_back((int32_t) item.n);
    return out;
}

float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t) (h >> 15) << 31, exp = (h >> 10) & 31, mant = h & 1023, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {
            exp = 113;  // 127 - 15 + 1
            while (!(mant & 1024)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 1023) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// ---- the model, its tokenizer and the kept generator ---------------------------------------------
struct Engine {
    OgaModel * model = nullptr;
    OgaTokenizer * tokenizer = nullptr;
    OgaGenerator * generator = nullptr;  // the kept one (nullptr: none)
    size_t generator_length = 0;         // its max_length
    std::vector<int32_t> sequence;       // the tokens in its KV cache, in order
    std::vector<int32_t> eos;            // genai_config.json eos_token_id
    int32_t bos = -1;                    // genai_config.json bos_token_id, when tokenizer_config.json adds one
    size_t context = 4096;               // genai_config.json context_length
    std::string rid;                     // the request being served (for messages)

    std::vector<int32_t> encode(const std::string & text) {
        OgaSequences * seqs = nullptr;
        check(OgaCreateSequences(&seqs), 5, "request " + rid);
        check(OgaTokenizerEncode(tokenizer, text.c_str(), seqs), 4, "request " + rid + ": tokenizing");
        size_t n = OgaSequencesGetSequenceCount(seqs, 0);
        const int32_t * data = OgaSequencesGetSequenceData(seqs, 0);
        std::vector<int32_t> ids(data, data + n);
        OgaDestroySequences(seqs);
        return ids;
    }

    // runtimes/onnxruntime.py encode_prompt
    std::vector<int32_t> encode_prompt(const std::string & text) {
        std::vector<int32_t> ids = encode(text);
        if (bos >= 0 && (ids.empty() || ids[0] != bos)) ids.insert(ids.begin(), bos);
        return ids;
    }

    std::string decode(const std::vector<int32_t> & ids) {
        const char * out = nullptr;
        check(OgaTokenizerDecode(tokenizer, ids.data(), ids.size(), &out), 5, "request " + rid + ": decoding");
        std::string text = out ? out : "";
        if (out) OgaDestroyString(out);
        return text;
    }

    void drop() {
        if (generator) OgaDestroyGenerator(generator);
        generator = nullptr;
        generator_length = 0;
        sequence.clear();
    }

    OgaGenerator * new_generator(size_t length, const std::string * schema) {
        OgaGeneratorParams * params = nullptr;
        check(OgaCreateGeneratorParams(model, &params), 5, "request " + rid);
        check(OgaGeneratorParamsSetSearchNumber(params, "max_length", (double) length), 5, "request " + rid);
        check(OgaGeneratorParamsSetSearchBool(params, "do_sample", false), 5, "request " + rid);
        if (schema)
            check(OgaGeneratorParamsSetGuidance(params, "json_schema", schema->c_str(), false), 4,
                  "request " + rid + ": the JSON schema");
        OgaGenerator * g = nullptr;
        check(OgaCreateGenerator(model, params, &g), 5, "request " + rid + ": creating a generator");
        OgaDestroyGeneratorParams(params);
        return g;
    }

    void logits_of(OgaGenerator * g, std::vector<float> & out) {
        OgaTensor * tensor = nullptr;
        check(OgaGenerator_GetLogits(g, &tensor), 5, "request " + rid + ": reading the logits");
        int type = 0;
        size_t rank = 0;
        void * data = nullptr;
        check(OgaTensorGetType(tensor, &type), 5, "request " + rid);
        check(OgaTensorGetShapeRank(tensor, &rank), 5, "request " + rid);
        std::vector<int64_t> shape(rank);
        check(OgaTensorGetShape(tensor, shape.data(), rank), 5, "request " + rid);
        check(OgaTensorGetData(tensor, &data), 5, "request " + rid);
        size_t total = 1;
        for (int64_t d : shape) total *= (size_t) d;
        size_t width = rank ? (size_t) shape.back() : 0;
        out.resize(width);
        size_t at = total - width;  // the last position (the host's [0, -1])
        if (type == kOgaFloat32) {
            std::memcpy(out.data(), (const float *) data + at, width * sizeof(float));
        } else if (type == kOgaFloat16) {
            const uint16_t * h = (const uint16_t *) data + at;
            for (size_t i = 0; i < width; i++) out[i] = half_to_float(h[i]);
        } else {
            OgaDestroyTensor(tensor);
            fail(5, "request " + rid + ": the model's logits are of element type " + std::to_string(type) +
                    ", which ew_ort does not read (float32 and float16 only); re-export with fp32 or fp16 logits");
        }
        OgaDestroyTensor(tensor);
    }

    // Hands (edited) logits back to the generator: its next GenerateNextToken picks from them.
    void set_logits(OgaGenerator * g, std::vector<float> & values) {
        int64_t dims[2] = {1, (int64_t) values.size()};
        OgaTensor * tensor = nullptr;
        check(OgaCreateTensorFromBuffer(values.data(), dims, 2, kOgaFloat32, &tensor), 5, "request " + rid);
        check(OgaGenerator_SetLogits(g, tensor), 5, "request " + rid + ": setting the logits");
        OgaDestroyTensor(tensor);
    }

    // runtimes/onnxruntime.py _engine(...).prefill: returns the reused token count.
    size_t prefill(const std::vector<int32_t> & ids, size_t needed, std::vector<float> & logits) {
        size_t keep = 0;
        if (generator && needed <= generator_length) keep = std::min(ew::common_prefix(sequence, ids), ids.size() - 1);
        if (keep == 0) {
            size_t length = std::min(context, std::max(needed, CACHE_TOKENS));
            drop();
            generator = new_generator(length, nullptr);
            generator_length = length;
        } else if (keep < sequence.size()) {
            check(OgaGenerator_RewindTo(generator, keep), 5, "request " + rid + ": rewinding the generator");
            sequence.resize(keep);
        }
        check(OgaGenerator_AppendTokens(generator, ids.data() + keep, ids.size() - keep), 5,
              "request " + rid + ": evaluating the prompt");
        sequence.insert(sequence.end(), ids.begin() + keep, ids.end());
        logits_of(generator, logits);
        return keep;
    }

    void step(int32_t token, std::vector<float> & logits) {
        check(OgaGenerator_AppendTokens(generator, &token, 1), 5, "request " + rid + ": decoding");
        sequence.push_back(token);
        logits_of(generator, logits);
    }

    bool is_eos(int32_t t) const { return std::find(eos.begin(), eos.end(), t) != eos.end(); }
};

// Generated text decoded relative to the last prompt token (runtimes/_decode.py _Text).
struct TextOf {
    Engine & e;
    std::vector<int32_t> anchor;
    std::string base;
    TextOf(Engine & engine, const std::vector<int32_t> & prompt) : e(engine) {
        if (!prompt.empty()) { anchor.push_back(prompt.back()); base = e.decode(anchor); }
    }
    std::string of(const std::vector<int32_t> & generated) {
        if (anchor.empty() && generated.empty()) return "";
        std::vector<int32_t> ids = anchor;
        ids.insert(ids.end(), generated.begin(), generated.end());
        std::string text = e.decode(ids);
        return text.compare(0, base.size(), base) == 0 ? text.substr(base.size()) : text;
    }
};

// runtimes/_decode.py _choice_token: (token or -1, the text is now complete).
struct ChoicePick {
    int scans = 0;  // steps that had to scan the most likely tokens (no candidate kept a prefix)

    std::pair<int32_t, bool> pick(Engine & e, TextOf & text_of, std::vector<int32_t> & generated,
                                  const std::vector<float> & logits, const std::vector<std::string> & choices) {
        std::string current = generated.empty() ? "" : text_of.of(generated);
        std::vector<std::string> live;
        for (const auto & c : choices) if (starts_with(c, current)) live.push_back(c);
        bool is_choice = ew::is_choice(choices, current);
        bool longer = false;
        for (const auto & c : live) longer = longer || c.size() > current.size();
        if (is_choice && !longer) return {-1, true};
        std::vector<int32_t> candidates;
        for (const auto & c : live) {
            std::string rest = c.substr(current.size());
            std::string stripped = rest.substr(std::min(rest.find_first_not_of(' '), rest.size()));
            for (const std::string & variant : {rest, stripped}) {
                if (variant.empty()) continue;
                std::vector<int32_t> ids = e.encode(variant);
                if (!ids.empty()) candidates.push_back(ids[0]);
            }
        }
        auto logit = [&](int32_t t) { return t >= 0 && (size_t) t < logits.size() ? logits[t] : -INFINITY; };
        std::vector<int32_t> ordered(candidates);
        std::sort(ordered.begin(), ordered.end());
        ordered.erase(std::unique(ordered.begin(), ordered.end()), ordered.end());
        std::stable_sort(ordered.begin(), ordered.end(), [&](int32_t a, int32_t b) { return logit(a) > logit(b); });
        auto text_with = [&](int32_t t) {
            generated.push_back(t);
            std::string text = text_of.of(generated);
            generated.pop_back();
            return text;
        };
        auto keeps = [&](int32_t t) {
            std::string text = text_with(t);
            if (text.empty() || text.size() <= current.size()) return false;
            for (const auto & c : live) if (starts_with(c, text)) return true;
            return false;
        };
        auto is_final = [&](const std::string & text) {
            for (const auto & c : live) if (c.size() > text.size() && starts_with(c, text)) return false;
            return true;
        };
        auto in_choices = [&](const std::string & text) { return ew::is_choice(choices, text); };
        if (is_choice) {  // the text is already a choice: stopping competes with going on to a longer one
            int32_t eos = -1;
            for (int32_t t : e.eos) if (eos < 0 || logit(t) > logit(eos)) eos = t;
            int32_t best_go = -1;
            for (int32_t t : ordered) if (keeps(t)) { best_go = t; break; }
            if (best_go < 0 || (eos >= 0 && logit(eos) >= logit(best_go))) return {-1, true};
            return {best_go, in_choices(text_with(best_go))};
        }
        for (int32_t t : ordered) {
            if (keeps(t)) {
                std::string text = text_with(t);
                return {t, in_choices(text) && is_final(text)};
            }
        }
        scans++;
        for (int32_t t : ew::most_likely<int32_t>(logits, CHOICE_SCAN)) {
            if (std::find(candidates.begin(), candidates.end(), t) != candidates.end()) continue;
            if (keeps(t)) {
                std::string text = text_with(t);
                return {t, in_choices(text) && is_final(text)};
            }
        }
        std::string shown;
        for (size_t i = 0; i < live.size() && i < 5; i++) shown += (i ? ", '" : "'") + live[i] + "'";
        fail(4, "request " + e.rid + ": no token continues the text '" + current + "' towards any of the choices " +
                shown + " (the host runtime fails the same way)");
    }
};

// The host's whitespace bound between JSON tokens (JSON_WHITESPACE: nothing, one space, or a newline
// and up to 20 spaces or tabs).  onnxruntime-genai 0.15.2's llguidance reads the same whitespace_pattern
// but lets it repeat between two JSON tokens (seen here: ":  \n" after a key), so the bound is applied
// here as well: before each step, every token whose text would make a whitespace run outside a JSON
// string more than one such match gets -inf (OgaGenerator_SetLogits), then genai's guidance masks the
// rest.  Together they allow what the host's grammar allows.  Each token's text is decoded once (after
// the request's last prompt token, as the host decodes) on the first schema request; only the tokens
// with whitespace in it are checked at each step.
// Likewise the added tokens of tokenizer.json ("added_tokens": chat markers, <unk>, ...) are never text
// for the host's llguidance (its tokenizer marks them special) but can be for genai's: they get -inf too,
// except the end-of-text ids (genai's guidance allows those where the document may end).
struct WhitespaceBound {
    bool ready = false;
    std::vector<std::pair<int32_t, std::string>> pieces;  // tokens whose text holds whitespace
    std::vector<int32_t> special;                          // added tokens that are not end-of-text

    struct State {
        bool in_string = false, escape = false, ok = true;
        std::string run;  // the whitespace run outside strings at the end of the text
    };

    static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

    static bool valid(const std::string & run) {  // a prefix of one match of JSON_WHITESPACE
        if (run.empty()) return true;
        if (run[0] == ' ') return run.size() == 1;
        if (run[0] != '\n' || run.size() > 21) return false;
        return run.find_first_not_of(" \t", 1) == std::string::npos;
    }

    static void feed(State & st, const std::string & text) {
        for (char c : text) {
            if (!st.ok) return;
            if (st.in_string) {
                if (st.escape) st.escape = false;
                else if (c == '\\') st.escape = true;
                else if (c == '"') st.in_string = false;
            } else if (is_ws(c)) {
                st.run += c;
                st.ok = valid(st.run);
            } else {
                st.run.clear();
                st.in_string = c == '"';
            }
        }
    }

    void prepare(Engine & e, int32_t anchor, size_t vocab, const std::string & model_dir) {
        std::string tj;
        if (read_file(model_dir + "/tokenizer.json", tj)) {
            size_t at = tj.find("\"added_tokens\"");
            at = at == std::string::npos ? at : tj.find('[', at);
            Json added;
            if (at != std::string::npos) {
                JsonReader reader(tj);
                reader.i = at;
                if (!reader.value(added)) added = Json();
            }
            for (const Json & item : added.items) {
                const Json * id = item.get("id");
                if (id && id->kind == Json::Number && !e.is_eos((int32_t) id->n)) special.push_back((int32_t) id->n);
            }
        }
        std::vector<int32_t> ids = {anchor, 0};
        std::string base = e.decode({anchor});
        for (size_t t = 0; t < vocab; t++) {
            ids[1] = (int32_t) t;
            std::string text = e.decode(ids);
            std::string piece = text.compare(0, base.size(), base) == 0 ? text.substr(base.size()) : text;
            if (std::any_of(piece.begin(), piece.end(), is_ws)) pieces.emplace_back((int32_t) t, piece);
        }
        ready = true;
    }

    void apply(const std::string & text, std::vector<float> & logits) const {
        for (int32_t t : special) if ((size_t) t < logits.size()) logits[t] = -INFINITY;
        State now;
        feed(now, text);
        for (const auto & tp : pieces) {
            if ((size_t) tp.first >= logits.size()) continue;
            State st = now;
            feed(st, tp.second);
            if (!st.ok) logits[tp.first] = -INFINITY;
        }
    }
};

// One request's numbers (EW_STAT): the common ones, the choice scans and the constraint.
struct Stats : ew::Stats {
    int choice_scans = 0;
    const char * mode = "free";
};

std::vector<std::string> read_choices(const std::string & text) {
    std::vector<std::string> choices;
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        choices.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return choices;  // phone_runtime writes "\n".join(choices): no trailing newline, no empty choice
}

// The schema with the host's whitespace bound: llguidance reads its options from "x-guidance"
// (the host passes them as overrides, which land there too).  Appended last, so it wins over a
// key of the same name in the schema.
std::string schema_with_whitespace(const std::string & schema) {
    size_t close = schema.find_last_of('}');
    size_t open = schema.find_first_of('{');
    if (close == std::string::npos || open == std::string::npos || open > close) return schema;
    std::string inner = schema.substr(open + 1, close - open - 1);
    bool empty = inner.find_first_not_of(" \t\r\n") == std::string::npos;
    return schema.substr(0, close) + (empty ? "" : ",") +
           "\"x-guidance\":{\"whitespace_flexible\":true,\"whitespace_pattern\":" + JSON_WHITESPACE_JSON + "}" +
           schema.substr(close);
}

}  // namespace

int main(int argc, char ** argv) {
    bool verbose = false;
    ew::Options options = ew::parse_options(argc, argv, "ew_ort", "DIR", "[--threads N] [--verbose]",
                                            [&](const std::string & a, auto value) {
        if (a == "--ctx") value();  // the scripts' common argument; the model's context_length decides
        else if (a == "--verbose") verbose = true;
        else if (a == "--version") { std::printf("ew_ort on onnxruntime-genai (C API of v0.15.2)\n"); std::exit(0); }
        else return false;
        return true;
    });
    const std::string & model_dir = options.model, & case_dir = options.case_dir;
    int threads = options.threads;  // 0: onnxruntime's default
    std::vector<Request> requests = ew::read_requests(case_dir);

    Json genai = read_json(model_dir + "/genai_config.json", true);
    Json tok_config = read_json(model_dir + "/tokenizer_config.json", false);
    Engine e;
    e.rid = "(loading)";
    const Json * m = genai.get("model");
    if (m == nullptr) fail(3, model_dir + "/genai_config.json has no \"model\" section; re-export the model");
    e.eos = ids_of(m->get("eos_token_id"));
    std::vector<int32_t> bos = ids_of(m->get("bos_token_id"));
    const Json * add_bos = tok_config.get("add_bos_token");
    if (!bos.empty() && add_bos && add_bos->kind == Json::Bool && add_bos->b) e.bos = bos[0];
    const Json * ctx = m->get("context_length");
    if (ctx && ctx->kind == Json::Number && ctx->n > 0) e.context = (size_t) ctx->n;

    double load_start = now_ms();
    OgaConfig * config = nullptr;
    check(OgaCreateConfig(model_dir.c_str(), &config), 3, "loading the model " + model_dir);
    if (threads > 0)  // the host's overlay (runtimes/onnxruntime.py load)
        check(OgaConfigOverlay(config, ("{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": " +
                                        std::to_string(threads) + "}}}}").c_str()), 3, "setting --threads");
    check(OgaCreateModelFromConfig(config, &e.model), 3, "loading the model " + model_dir);
    OgaDestroyConfig(config);
    check(OgaCreateTokenizer(e.model, &e.tokenizer), 3, "loading the tokenizer of " + model_dir);
    double load_ms = now_ms() - load_start;
    std::printf("EW_NOTE ew_ort: %s threads, context %zu, model loaded in %.0f ms%s\n",
                threads > 0 ? std::to_string(threads).c_str() : "onnxruntime's default", e.context, load_ms,
                verbose ? " (verbose)" : "");

    ChoicePick chooser;
    WhitespaceBound bound;
    std::vector<float> logits;
    for (const Request & r : requests) {
        ew::print_next(r);
        e.rid = r.id;
        if (r.temperature > 0)
            fail(4, "request " + r.id + " asks for temperature " + std::to_string(r.temperature) +
                    ", but ew_ort decodes greedily only; run it with --device host (the host adapter samples)");
        std::string prompt = ew::read_prompt(case_dir, r);
        std::vector<std::string> choices;
        std::string schema;
        bool has_choices = false, has_schema = false;
        if (r.grammar_file != "-") {
            std::string text;
            if (!read_file(case_dir + "/" + r.grammar_file, text)) fail(3, "request " + r.id + ": no grammar file " + r.grammar_file);
            if (ew::ends_with(r.grammar_file, ".choices")) { choices = read_choices(text); has_choices = true; }
            else if (ew::ends_with(r.grammar_file, ".schema.json")) {
                schema = schema_with_whitespace(text);
                has_schema = true;
                if (verbose) std::fprintf(stderr, "ew_ort: request %s: guidance json_schema %s\n", r.id.c_str(), schema.c_str());
            }
            else fail(4, "request " + r.id + ": " + r.grammar_file + " is neither a .choices nor a .schema.json file; "
                         "ew_ort takes phone_runtime's grammar_format \"plain\"");
        }
        std::vector<int32_t> ids = e.encode_prompt(prompt);
        if (ids.empty()) fail(4, "request " + r.id + ": the prompt is empty");
        if (ids.size() + 1 >= e.context)
            fail(4, "request " + r.id + ": the prompt has " + std::to_string(ids.size()) +
                    " tokens but the model's context holds " + std::to_string(e.context) + "; shorten the prompt");
        size_t needed = std::min(e.context, ids.size() + (size_t) std::max(r.max_tokens, 0) + 1);

        Stats s;
        s.prompt_tokens = ids.size();
        s.mode = has_choices ? "choices" : has_schema ? "json_schema" : "free";
        std::vector<int32_t> generated;
        std::string text;
        double start = now_ms(), first_at = -1, last_at = -1;
        size_t budget = (size_t) std::max(r.max_tokens, 0);
        TextOf text_of(e, ids);
        if (!has_schema) {
            s.reused = e.prefill(ids, needed, logits);
            s.prefill_ms = now_ms() - start;
            while (generated.size() < budget) {
                double pick_start = now_ms();
                int32_t token;
                bool done = false;
                if (has_choices) {
                    auto picked = chooser.pick(e, text_of, generated, logits, choices);
                    token = picked.first;
                    done = picked.second;
                } else {
                    token = ew::argmax<int32_t>(logits);
                }
                double now = now_ms();
                s.sampling_ms += now - pick_start;
                if (token < 0 || (!has_choices && e.is_eos(token))) { s.finish = "stop"; break; }
                generated.push_back(token);
                if (first_at < 0) first_at = now;
                last_at = now;
                text = text_of.of(generated);
                if (has_choices && done) { s.finish = "stop"; break; }
                if (generated.size() >= budget) break;
                e.step(token, logits);
            }
            if (has_choices && !ew::is_choice(choices, text))
                fail(4, "request " + r.id + ": constrained decoding ended on '" + text + "', which is none of the " +
                        std::to_string(choices.size()) + " choices (max_tokens=" + std::to_string(budget) +
                        " may be too small for the longest choice)");
        } else {
            // A fresh guided generator for this request (see the header); the kept one is dropped.
            e.drop();
            size_t length = std::min(e.context, std::max(needed, CACHE_TOKENS));
            OgaGenerator * g = e.new_generator(length, &schema);
            check(OgaGenerator_AppendTokens(g, ids.data(), ids.size()), 5, "request " + r.id + ": evaluating the prompt");
            s.prefill_ms = now_ms() - start;
            while (generated.size() < budget) {
                if (!generated.empty() && OgaGenerator_IsDone(g)) break;  // max_length
                e.logits_of(g, logits);  // (after the first step: evaluates the last token)
                double pick_start = now_ms();
                if (!bound.ready) bound.prepare(e, ids.back(), logits.size(), model_dir);  // once: sampling time, as the host's tokenizer
                bound.apply(text, logits);
                e.set_logits(g, logits);
                check(OgaGenerator_GenerateNextToken(g), 5, "request " + r.id + ": JSON-schema decoding");  // mask + argmax
                const int32_t * next = nullptr;
                size_t count = 0;
                check(OgaGenerator_GetNextTokens(g, &next, &count), 5, "request " + r.id);
                if (count == 0) fail(5, "request " + r.id + ": onnxruntime-genai returned no next token");
                int32_t token = next[0];
                double now = now_ms();
                s.sampling_ms += now - pick_start;
                if (e.is_eos(token)) { s.finish = "stop"; break; }
                generated.push_back(token);
                if (first_at < 0) first_at = now;
                last_at = now;
                text = text_of.of(generated);
            }
            OgaDestroyGenerator(g);
        }
        double end = now_ms();
        s.generated = generated.size();
        s.evaluated = ids.size() - s.reused;
        s.choice_scans = chooser.scans;
        chooser.scans = 0;
        s.set_times(start, first_at, last_at, end);
        ew::print_record(r, s, load_ms, "choice_scans=" + std::to_string(s.choice_scans) + " constraint=" + s.mode, text);
    }

    e.drop();
    OgaDestroyTokenizer(e.tokenizer);
    OgaDestroyModel(e.model);
    OgaShutdown();
    return 0;
}
