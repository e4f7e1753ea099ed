"""optimum-cli's ExecuTorch export with a bf16 source quantized one module at a time (executorch env).

Run as `python -m export.et_optimum <optimum-cli arguments>`: the same command as
`optimum-cli export executorch ...`, with one change when the arguments say `--dtype bfloat16`
(or float16) and a dynamic-activation linear quantization (`--qlinear 8da4w|8da8w`):

optimum-executorch 1.1.0 loads the model in the given dtype and quantizes it whole.  From a bf16
model the dynamic-activation (8da*) lowering stops with "Missing out variants:
torchao::quantize_affine, ..." (XNNPACK takes torchao's dynamic quantization only in float32), and
loading in float32 instead costs twice the checkpoint's size before anything is quantized (15.5 GB
for Gemma 3 4B).  So the model is loaded in bf16 and each Embedding / Linear is converted to
float32 just before optimum's own `quantize_model_` quantizes it; what stays unquantized (norms,
linears whose width the group size does not divide) is converted at the end.  bf16 -> float32 is
exact, so the weights quantized are the ones a float32 load would quantize: the .pte is the same,
at about the bf16 model's memory.  A module's float32 weight is a new Parameter (a tied lm_head keeps
the bf16 one until its own turn), a weight over CHUNK_ELEMENTS is quantized a block of rows at a
time, and freed heap goes back to the system after each module and after torch.export (glibc keeps
it otherwise: a 1.3 GB bf16 test model's exporter held 2.74 GiB after torch.export, 1.53 GiB after
trimming).  This is the only place that patches optimum (and, while it quantizes, torchao's quantize_).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch


@functools.cache
def _malloc_trim():  # -> the C function, or None
    # Looked up once: find_library runs `ldconfig -p` in a child process, forked from an exporter of many GB.
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _as_float32(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with its own parameters float32, as new Parameters: one it shares (a tied lm_head) stays as it is."""
    for name, param in list(module.named_parameters(recurse=False)):
        if param.is_floating_point() and param.dtype != torch.float32:
            setattr(module, name, torch.nn.Parameter(param.detach().float(), requires_grad=param.requires_grad))
    return module


# A weight with more elements than this is quantized a block of rows at a time (Gemma 3 4B's 262k-row
# embedding and tied lm_head: torchao's hqq parameter search over the whole float32 matrix held about
# 6.7 GB of temporaries beside its 2.7 GB float32 copy, the export's peak).
CHUNK_ELEMENTS = 64 * 2**20


def row_chunked(quantize_, chunk_elements: int):
    """Wrap torchao's `quantize_(model, config, filter_fn)` as optimum calls it on our one-module holder: a big
    weight is quantized in row blocks (each converted to float32 on its own) and the blocks' quantized tensors
    joined into one.  Row blocks quantize independently (the groups run along a row), so the result is the
    whole matrix's; `tests/test_export_executorch.py` checks that against quantizing it whole."""

    def quantize_in_rows(model: torch.nn.Module, config, filter_fn=None, *args, **kwargs):
        target = getattr(model, "m", None)
        weight = getattr(target, "weight", None)
        if (weight is None or weight.dim() != 2 or weight.numel() <= chunk_elements
                or (filter_fn is not None and not filter_fn(target, "m"))):
            return quantize_(model, config, filter_fn, *args, **kwargs)
        rows = max(1, chunk_elements // weight.shape[1])
        pieces = []
        for start in range(0, weight.shape[0], rows):
            block = weight[start:start + rows].detach().float()
            piece = (torch.nn.Embedding(*block.shape) if isinstance(target, torch.nn.Embedding)
                     else torch.nn.Linear(block.shape[1], block.shape[0], bias=False))
            piece.weight = torch.nn.Parameter(block, requires_grad=False)
            holder = torch.nn.Module()
            holder.add_module("m", piece)
            quantize_(holder, config, filter_fn, *args, **kwargs)
            pieces.append(holder.m.weight)
            del block, piece, holder
            release_freed_memory()
        names, meta = pieces[0].__tensor_flatten__()
        if any(getattr(piece, n).shape[0] != piece.shape[0] for piece in pieces for n in names):
            raise RuntimeError(f"This torchao's {type(pieces[0]).__name__} keeps a tensor not laid out by rows, so "
                               f"export/et_optimum.py cannot quantize a {tuple(weight.shape)} weight in row blocks; "
                               f"raise CHUNK_ELEMENTS there above {weight.numel()} to quantize it whole.")
        kind = type(pieces[0])
        joined = {n: torch.cat([getattr(piece, n) for piece in pieces]) for n in names}
        del pieces
        target.weight = torch.nn.Parameter(kind.__tensor_unflatten__(joined, meta, None, None), requires_grad=False)
        return None

    return quantize_in_rows


def quantize_by_module(original, chunk_elements: int = CHUNK_ELEMENTS):
    """Wrap optimum's `quantize_model_(model, qlinear_config=..., qembedding_config=..., ...)`."""

    def quantize(eager_model: torch.nn.Module, qlinear_config=None, qembedding_config=None, **kwargs):
        floats = {p.dtype for p in eager_model.parameters() if p.is_floating_point()}
        if floats <= {torch.float32} or not str(qlinear_config or "").startswith("8da"):
            return original(eager_model, qlinear_config=qlinear_config, qembedding_config=qembedding_config, **kwargs)
        from torchao.quantization import quant_api  # optimum imports quantize_ from it at call time

        whole = quant_api.quantize_
        quant_api.quantize_ = row_chunked(whole, chunk_elements)
        try:
            by_module(eager_model, qlinear_config, qembedding_config, **kwargs)
        finally:
            quant_api.quantize_ = whole
        return None

    def by_module(eager_model: torch.nn.Module, qlinear_config, qembedding_config, **kwargs) -> None:
        # Embeddings before linears, as optimum does (a tied lm_head keeps the float weight and is quantized
        # as a linear afterwards).
        for kind, key in ((torch.nn.Embedding, "qembedding_config"), (torch.nn.Linear, "qlinear_config")):
            config = {"qlinear_config": qlinear_config, "qembedding_config": qembedding_config}[key]
            if not config:
                continue
            targets = [(name, module) for name, module in eager_model.named_modules() if isinstance(module, kind)]
            print(f"[et_optimum] quantizing {len(targets)} {kind.__name__} modules one at a time "
                  f"({config}, float32 per module)", flush=True)
            for name, module in targets:
                holder = torch.nn.Module()  # quantize_ replaces matching children of the module it is given
                big = module.weight.numel() > chunk_elements  # converted to float32 a row block at a time
                holder.add_module("m", module if big else _as_float32(module))
                original(holder, **{key: config}, **kwargs)
                if holder.m is not module:
                    parent_name, _, child = name.rpartition(".")
                    setattr(eager_model.get_submodule(parent_name) if parent_name else eager_model, child, holder.m)
                del holder
                release_freed_memory()
        eager_model.float()  # norms, rotary tables, linears left unquantized
        # transformers keeps the load dtype beside the parameters (`model.dtype` reads `_dtype` first; optimum makes
        # the KV cache in it): say float32 there too.
        for module in eager_model.modules():
            if getattr(module, "_dtype", None) is not None:
                module._dtype = torch.float32
            config = getattr(module, "config", None)
            for sub in (config, getattr(config, "text_config", None)):
                if sub is not None and getattr(sub, "dtype", None) is not None:
                    sub.dtype = torch.float32
        return None

    return quantize


def trimmed_after(export):
    """Wrap CausalLMExportableModule.export: what torch.export freed goes back to the system before lowering."""

    def run(self, *args, **kwargs):
        programs = export(self, *args, **kwargs)
        release_freed_memory()
        return programs

    return run


def main(argv: list[str]) -> int:
    from optimum.commands.optimum_cli import main as optimum_cli
    from optimum.exporters.executorch import integrations
    from optimum.exporters.executorch.tasks import causal_lm

    # optimum's text-generation task looks quantize_model_ up in its module at call time.
    causal_lm.quantize_model_ = quantize_by_module(causal_lm.quantize_model_)
    integrations.CausalLMExportableModule.export = trimmed_after(integrations.CausalLMExportableModule.export)
    sys.argv = ["optimum-cli", *argv]
    optimum_cli()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
