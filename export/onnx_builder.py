"""onnxruntime-genai's model builder, run so that a 3-4B checkpoint fits a 24 GiB laptop.

    python -m export.onnx_builder -i CHECKPOINT -o OUT -p int4 -e cpu ...   (the builder's arguments)

Three workarounds around the builder 0.15.2 (onnxruntime_genai.models.builder), in this file only:

1. The builder calls AutoModelForCausalLM.from_pretrained without a dtype, which transformers
   loads in float32: a bf16 checkpoint takes twice its size.  Here it loads in the checkpoint's
   own dtype ("auto"); the builder casts each weight when it is written.

2. For int4 / int8 the builder keeps every MatMul weight as a lazy float32 tensor and, at save
   time (`Model.to_nbits`), turns the WHOLE graph into one protobuf (every weight materialised in
   float32: 15.5 GB for Gemma 3 4B, on top of the 7.8 GB bf16 source) before onnxruntime's
   MatMulNBitsQuantizer runs over it: measured here 23.6 GB, killed by the kernel.  `to_nbits` is
   replaced by a streaming version that hands the same quantizer one MatMul at a time (a one-node
   model holding just that weight; a weight over protobuf's 2 GB in column slices), splices the
   MatMulNBits node and its initializers it returns into the graph, and drops the float weight
   (and, once nothing refers to it, its source tensor) before the next one.  The quantizer, its
   settings and so its output bytes are onnxruntime's own (tests/test_onnx_builder.py compares the
   paths on a tiny model).  Gemma 3 4B: the builder alone 3 min, 12.9 GB.  Used only where the
   builder's own pass would do a single plain pass: no QDQ format and no per-node bit placement;
   otherwise the builder's `to_nbits` runs unchanged.

3. Gemma 3 with linear RoPE scaling (the 4B and larger: `rope_scaling = {"rope_type": "linear",
   "factor": 8}`): transformers scales only the global layers' RoPE; the sliding-window layers use
   `rope_local_base_freq` unscaled.  The builder keeps the factor when it makes the local layers'
   cos/sin caches, so every local layer rotates by the wrong angles (a tiny Gemma 3 with that
   scaling, fp32: relative logit difference 0.31 against transformers; 4e-7 with this).  Here the
   local caches are made with the factor reset to 1.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys
from typing import Any


def _rss_gb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("nan")


def _load_in_source_dtype() -> None:
    import transformers

    load = transformers.AutoModelForCausalLM.from_pretrained

    def in_source_dtype(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("dtype", "auto")
        return load(*args, **kwargs)

    transformers.AutoModelForCausalLM.from_pretrained = in_source_dtype


def _quantizable(graph: Any, node: Any, attrs: dict[str, Any]) -> bool:
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or "MatMul" not in attrs["op_types_to_quantize"]:
        return False
    if node.name in attrs["nodes_to_exclude"] or len(node.inputs) != 2:
        return False
    weight = node.inputs[1]
    return (weight is not None and weight.const_value is not None and weight.name in graph.initializers
            and weight.shape is not None and len(weight.shape) == 2)


# A protobuf message cannot hold 2 GB: a bigger weight (Gemma 3 4B's tied lm_head, 262,208 x 2560
# in float32 is 2.7 GB) goes to the quantizer in column slices.  MatMulNBits quantizes each output
# column (N) on its own, so the slices' arrays, stacked along N, are the whole weight's.
SLICE_BYTES = int(os.environ.get("EW_ONNX_QUANT_SLICE_BYTES", 1 << 30))


def _quantize_one(self: Any, node: Any, np: Any) -> tuple[str, list[str], dict[str, Any], dict[str, Any]] | None:
    """onnxruntime's MatMulNBitsQuantizer on `node`'s weight (one-node models, one per column slice).

    Returns the MatMulNBits node it made as plain data (name, input names, attributes, initializers
    as numpy arrays), or None when it left the MatMul alone.  Nothing returned refers to its protos:
    a tensor taken from a protobuf message keeps the whole message alive, here the one-node model
    with the float weight in it (that kept every float weight in memory, 20 GB at 4B)."""
    weight = node.inputs[1]
    array = np.ascontiguousarray(weight.const_value.numpy(), dtype=np.float32)
    k, n = array.shape
    step = max(1, min(n, SLICE_BYTES // max(1, 4 * k)))
    parts = []
    for first in range(0, n, step):
        part = _quantize_slice(self, node.name, weight.name, np.ascontiguousarray(array[:, first:first + step]), np)
        if part is None:
            return None
        parts.append(part)
    del array
    name, inputs, attributes, arrays = parts[0]
    if len(parts) > 1:
        for other in parts[1:]:
            if other[1] != inputs or set(other[3]) != set(arrays):
                raise SystemExit(f"quantizing {node.name} in column slices gave differing nodes; "
                                 "set EW_ONNX_QUANT_SLICE_BYTES higher")
        arrays = {key: np.concatenate([part[3][key] for part in parts], axis=0) for key in arrays}
        attributes = {**attributes, "N": n}
    return name, inputs, attributes, arrays


def _quantize_slice(self: Any, node_name: str, weight_name: str, array: Any,
                    np: Any) -> tuple[str, list[str], dict[str, Any], dict[str, Any]] | None:
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.quantization.quant_utils import QuantFormat

    attrs = self.quant_attrs
    k, n = array.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", weight_name], ["Y"], name=node_name)], "one_matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["s", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["s", n])],
        [numpy_helper.from_array(array, weight_name)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    del graph
    quant = MatMulNBitsQuantizer(model=model, bits=attrs["bits"], block_size=attrs["qdq_block_size"],
                                 is_symmetric=attrs["is_symmetric"], accuracy_level=attrs["accuracy_level"],
                                 nodes_to_exclude=[], quant_format=QuantFormat.QOperator,
                                 op_types_to_quantize=attrs["op_types_to_quantize"],
                                 algo_config=attrs["algo_config"])
    quant.process()
    out = quant.model.model
    if len(out.graph.node) != 1 or out.graph.node[0].op_type != "MatMulNBits":
        return None
    made = out.graph.node[0]
    arrays = {t.name: np.array(numpy_helper.to_array(t), copy=True) for t in out.graph.initializer
              if t.name in made.input}
    return (str(made.name), [str(name) for name in made.input],
            {a.name: helper.get_attribute_value(a) for a in made.attribute}, arrays)


def _streaming_to_nbits(self: Any) -> Any:
    import numpy as np
    import onnx_ir as ir

    graph = self.model.graph
    # The torch model is only needed through the graph's lazy tensors from here on: without this
    # reference each source weight is freed as soon as its MatMul has been quantized.
    self.weights = None
    gc.collect()
    todo = [node for node in graph if _quantizable(graph, node, self.quant_attrs)]
    print(f"[onnx_builder] quantizing {len(todo)} MatMul weights one at a time "
          f"({self.quant_attrs['bits']} bits, block {self.quant_attrs['qdq_block_size']})", flush=True)
    for index in range(1, len(todo) + 1):
        # Nothing may keep a done node (it holds its weight's float tensor): take it off the list.
        node, todo[index - 1] = todo[index - 1], None
        weight = node.inputs[1]
        made = _quantize_one(self, node, np)
        if made is None:  # the quantizer declined: leave it float
            continue
        made_name, input_names, attributes, arrays = made
        values = {"A": node.inputs[0]}
        for name, array in arrays.items():
            values[name] = ir.Value(name=name, shape=ir.Shape(array.shape),
                                    type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                                    const_value=ir.tensor(array, name=name))
        replacement = ir.node("MatMulNBits", inputs=[values[name] if name else None for name in input_names],
                              attributes=attributes, domain="com.microsoft", name=made_name, num_outputs=1)
        old_out = node.outputs[0]
        out = replacement.outputs[0]
        out.shape, out.dtype = old_out.shape, old_out.dtype
        graph.insert_after(node, replacement)
        ir.convenience.replace_all_uses_with(old_out, out, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        out.name = old_out.name
        for name, value in values.items():
            if name != "A":
                graph.register_initializer(value)
        if not weight.uses():
            del graph.initializers[weight.name]
            weight.const_value = None  # its lazy tensor holds the float copy (and the source tensor)
        del node, weight, made, arrays, values
        if index % 16 == 0 or index == len(todo):
            gc.collect()
            print(f"[onnx_builder] {index}/{len(todo)} weights quantized (RSS {_rss_gb():.1f} GB)", flush=True)
    self.model.opset_imports.setdefault("com.microsoft", 1)
    return self.model


def _builder_module(name: str) -> Any:
    """builder.py imports its classes as the top-level package `builders` (onnxruntime_genai.models
    puts its folder on sys.path): patch those module objects, not onnxruntime_genai.models.builders."""
    import importlib

    import onnxruntime_genai.models  # noqa: F401  (adds the folder to sys.path)

    return importlib.import_module(f"builders.{name}")


def _stream_quantization() -> None:
    base = _builder_module("base")

    plain = base.Model.to_nbits

    def to_nbits(self: Any) -> Any:
        if self.quant_attrs.get("use_qdq") or getattr(self, "int4_customized_weight_config", None) or \
                os.environ.get("EW_ONNX_WHOLE_GRAPH_QUANTIZATION"):
            return plain(self)  # the builder's own pass (QDQ, mixed bits, or asked for: tests compare)
        return _streaming_to_nbits(self)

    base.Model.to_nbits = to_nbits


def _gemma3_local_rope_unscaled() -> None:
    gemma = _builder_module("gemma")
    make_caches = gemma.Gemma2Model.make_rotary_embedding_caches  # the parent's: makes the caches

    def multi_cache(self: Any) -> None:
        self.cos_cache_global_name, self.sin_cache_global_name = "cos_cache_global", "sin_cache_global"
        make_caches(self, cos_cache_name=self.cos_cache_global_name, sin_cache_name=self.sin_cache_global_name)
        # The local layers: their own base frequency and no scaling (transformers' rotary_emb_local).
        self.rope_attrs["create_caches"] = True
        self.rope_attrs["theta"] = self.rope_local_theta
        self.rope_attrs["rescale_factors"] = 1
        self.cos_cache_local_name, self.sin_cache_local_name = "cos_cache_local", "sin_cache_local"
        make_caches(self, cos_cache_name=self.cos_cache_local_name, sin_cache_name=self.sin_cache_local_name)

    gemma.Gemma3Model.make_rotary_embedding_multi_cache = multi_cache


def main() -> None:
    _load_in_source_dtype()
    _stream_quantization()
    _gemma3_local_rope_unscaled()
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
