// Our own ExecuTorch kernels for the two LLM operators that optimum-executorch's .pte files call
// (--use_custom_sdpa --use_custom_kv_cache): llama::update_cache.out, llama::update_cache_with_indices.out
// (Gemma 3's sliding-window ring cache) and llama::custom_sdpa.out.
//
// Why here: the executorch wheel ships its kernels for them only inside
// extension/llm/custom_ops/libcustom_ops_aot_lib.so, which needs libtorch and the CPython
// extension _C (libpython): nothing a phone has, and 470 MB on a laptop.  The wheel's runtime
// (libexecutorch.so) has the operator registry, so a program registers kernels of its own.
// These are written from the operators' contracts (executorch/extension/llm/custom_ops/custom_ops.py
// in the wheel states the shapes): plain loops, float32, threads over heads.
//
//   update_cache(value [B, S, H, D], cache [B, MAX, H, D], start_pos) -> cache[:, start_pos:start_pos+S] = value
//   update_cache_with_indices(value, cache, start_pos, indices [B, S] int64) -> cache[b, indices[b, i]] = value[b, i]
//   custom_sdpa(q [B, S, Hq, D], k_cache, v_cache [B, MAX, Hkv, D], start_pos, attn_mask?, dropout_p,
//               is_causal, scale?) -> [B, S, Hq, D]
//     attention of query row i (position start_pos + i) over the cache's first start_pos + S
//     positions; is_causal hides key j > start_pos + i; an attn_mask ([S, K], float) is added to
//     the scores instead, over the cache's first K positions (K: its columns); grouped-query heads share a key/value head (Hq / Hkv each);
//     scale defaults to 1 / sqrt(D).

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

namespace ew_et {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

int g_threads = 1;  // set by ew_et's --threads

namespace {

bool contiguous4(const Tensor & t) {
    if (t.dim() != 4) return false;
    auto strides = t.strides();
    int64_t expect = 1;
    for (int d = 3; d >= 0; d--) {
        if (t.size(d) > 1 && strides[d] != expect) return false;
        expect *= t.size(d);
    }
    return true;
}

}  // namespace

Tensor & update_cache_out(KernelRuntimeContext & ctx, const Tensor & value, Tensor & cache, const int64_t start_pos,
                          Tensor & out) {
    ET_KERNEL_CHECK_MSG(ctx, contiguous4(value) && contiguous4(cache), InvalidArgument, out,
                        "ew_et update_cache: value and cache must be contiguous 4-D tensors");
    ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == cache.scalar_type(), InvalidArgument, out,
                        "ew_et update_cache: value and cache differ in dtype");
    const int64_t batch = value.size(0), seq = value.size(1), max = cache.size(1);
    ET_KERNEL_CHECK_MSG(ctx, cache.size(0) == batch && cache.size(2) == value.size(2) && cache.size(3) == value.size(3),
                        InvalidArgument, out, "ew_et update_cache: value and cache shapes differ");
    ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + seq <= max, InvalidArgument, out,
                        "ew_et update_cache: positions past the cache");
    const size_t row = (size_t) value.size(2) * value.size(3) * value.element_size();
    const char * src = static_cast<const char *>(value.const_data_ptr());
    char * dst = static_cast<char *>(cache.mutable_data_ptr());
    for (int64_t b = 0; b < batch; b++)
        std::memcpy(dst + ((size_t) b * max + start_pos) * row, src + (size_t) b * seq * row, (size_t) seq * row);
    return out;
}

Tensor & update_cache_with_indices_out(KernelRuntimeContext & ctx, const Tensor & value, Tensor & cache,
                                      const int64_t start_pos, const Tensor & indices, Tensor & out) {
    (void) start_pos;  // the indices say where each position goes (a sliding window's ring cache)
    ET_KERNEL_CHECK_MSG(ctx, contiguous4(value) && contiguous4(cache), InvalidArgument, out,
                        "ew_et update_cache_with_indices: value and cache must be contiguous 4-D tensors");
    ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == cache.scalar_type() && indices.scalar_type() == ScalarType::Long &&
                                 indices.dim() == 2 && indices.size(0) == value.size(0) &&
                                 indices.size(1) == value.size(1),
                        InvalidArgument, out, "ew_et update_cache_with_indices: indices must be int64 [B, S]");
    const int64_t batch = value.size(0), seq = value.size(1), max = cache.size(1);
    ET_KERNEL_CHECK_MSG(ctx, cache.size(0) == batch && cache.size(2) == value.size(2) && cache.size(3) == value.size(3),
                        InvalidArgument, out, "ew_et update_cache_with_indices: value and cache shapes differ");
    const size_t row = (size_t) value.size(2) * value.size(3) * value.element_size();
    const char * src = static_cast<const char *>(value.const_data_ptr());
    char * dst = static_cast<char *>(cache.mutable_data_ptr());
    const int64_t * where = indices.const_data_ptr<int64_t>();
    const auto istride = indices.strides();
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < seq; i++) {
            const int64_t pos = where[b * istride[0] + i * istride[1]];
            ET_KERNEL_CHECK_MSG(ctx, pos >= 0 && pos < max, InvalidArgument, out,
                                "ew_et update_cache_with_indices: an index outside the cache");
            std::memcpy(dst + ((size_t) b * max + pos) * row, src + ((size_t) b * seq + i) * row, row);
        }
    return out;
}

Tensor & custom_sdpa_out(KernelRuntimeContext & ctx, const Tensor & q, const Tensor & k, const Tensor & v,
                         const int64_t start_pos, const std::optional<Tensor> & attn_mask, const double dropout_p,
                         const bool is_causal, const std::optional<double> scale, Tensor & out) {
    (void) dropout_p;
    ET_KERNEL_CHECK_MSG(ctx, !(attn_mask.has_value() && is_causal), InvalidArgument, out,
                        "ew_et custom_sdpa: attn_mask and is_causal together");
    ET_KERNEL_CHECK_MSG(ctx, contiguous4(q) && contiguous4(k) && contiguous4(v), InvalidArgument, out,
                        "ew_et custom_sdpa: q, k and v must be contiguous 4-D tensors");
    ET_KERNEL_CHECK_MSG(ctx, q.scalar_type() == ScalarType::Float && k.scalar_type() == ScalarType::Float &&
                                 v.scalar_type() == ScalarType::Float,
                        InvalidArgument, out, "ew_et custom_sdpa: only float32 is implemented");
    ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == executorch::runtime::Error::Ok,
                    InvalidArgument, out);
    const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), dim = q.size(3);
    const int64_t max = k.size(1), kv_heads = k.size(2);
    // The keys: the cache's first start_pos + S positions; with a mask, as many as it has columns
    // (a sliding-window layer passes start_pos 0 and a mask over its whole ring cache).
    const bool masked = attn_mask.has_value() && attn_mask->numel() > 0;
    const int64_t keys = masked ? attn_mask->size(attn_mask->dim() - 1) : start_pos + seq;
    ET_KERNEL_CHECK_MSG(ctx, kv_heads > 0 && heads % kv_heads == 0 && k.size(3) == dim && v.size(1) == max &&
                                 v.size(2) == kv_heads && v.size(3) == dim && keys <= max,
                        InvalidArgument, out, "ew_et custom_sdpa: shapes do not match");
    const float * mask = nullptr;
    int64_t mask_row = 0;
    if (masked) {
        const Tensor & m = *attn_mask;
        ET_KERNEL_CHECK_MSG(ctx, m.dim() == 2 && m.size(0) == seq && m.scalar_type() == ScalarType::Float,
                            InvalidArgument, out, "ew_et custom_sdpa: attn_mask must be float [S, keys]");
        mask = m.const_data_ptr<float>();
        mask_row = m.strides()[0];
    }
    const float factor = (float) (scale.has_value() ? *scale : 1.0 / std::sqrt((double) dim));
    const float * qd = q.const_data_ptr<float>();
    const float * kd = k.const_data_ptr<float>();
    const float * vd = v.const_data_ptr<float>();
    float * od = out.mutable_data_ptr<float>();
    const int64_t group = heads / kv_heads;
    const int64_t rows = batch * heads * seq;  // one (batch, head, query) per work item

    auto work = [&](int64_t begin, int64_t end) {
        std::vector<float> scores(keys);
        std::vector<float> acc(dim);
        for (int64_t r = begin; r < end; r++) {
            const int64_t b = r / (heads * seq), h = (r / seq) % heads, i = r % seq;
            const int64_t kh = h / group;
            const float * qrow = qd + ((b * seq + i) * heads + h) * dim;
            const int64_t visible = is_causal ? std::min(keys, start_pos + i + 1) : keys;
            float best = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < visible; j++) {
                const float * krow = kd + ((b * max + j) * kv_heads + kh) * dim;
                float s = 0.0f;
                for (int64_t d = 0; d < dim; d++) s += qrow[d] * krow[d];
                s *= factor;
                if (mask) s += mask[i * mask_row + j];
                scores[j] = s;
                best = std::max(best, s);
            }
            std::fill(acc.begin(), acc.end(), 0.0f);
            float total = 0.0f;
            if (best != -std::numeric_limits<float>::infinity()) {
                for (int64_t j = 0; j < visible; j++) {
                    const float p = std::exp(scores[j] - best);
                    total += p;
                    const float * vrow = vd + ((b * max + j) * kv_heads + kh) * dim;
                    for (int64_t d = 0; d < dim; d++) acc[d] += p * vrow[d];
                }
            }
            float * orow = od + ((b * seq + i) * heads + h) * dim;
            for (int64_t d = 0; d < dim; d++) orow[d] = total > 0 ? acc[d] / total : 0.0f;
        }
    };
    // Threads only where there is enough to share (a prefill, or a long cache).
    const int64_t n = std::max<int64_t>(1, std::min<int64_t>(g_threads, rows * keys / 4096 + 1));
    if (n == 1) {
        work(0, rows);
    } else {
        std::vector<std::thread> pool;
        for (int64_t t = 0; t < n; t++) pool.emplace_back(work, rows * t / n, rows * (t + 1) / n);
        for (auto & th : pool) th.join();
    }
    return out;
}

}  // namespace ew_et

EXECUTORCH_LIBRARY(llama, "update_cache.out", ew_et::update_cache_out);
EXECUTORCH_LIBRARY(llama, "update_cache_with_indices.out", ew_et::update_cache_with_indices_out);
EXECUTORCH_LIBRARY(llama, "custom_sdpa.out", ew_et::custom_sdpa_out);
