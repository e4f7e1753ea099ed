#!/bin/sh
# Build the on-device runner binaries into android/build/<abi>/bin (ignored by git).
#
#   ANDROID_NDK=/path/to/ndk android/build.sh [--abi arm64-v8a] [--only llamacpp,executorch,mnn,ortgenai]
#   android/build.sh --abi host          # llama.cpp's tools for this machine (tests, laptop)
#
# llama.cpp comes from the source vendored in the llama-cpp-python sdist the host runtime
# uses (same version, same numbers); it is downloaded once with pip and unpacked under
# $CACHE/src.  Builds are cached under $CACHE/build keyed by source version + flags, so a
# second run only copies.  The other engines build from a checkout you point to
# (EXECUTORCH_SRC, MNN_SRC, ORTGENAI_SRC); what is missing is said, and the rest goes on.
set -eu

ABI=arm64-v8a
ONLY=llamacpp,executorch,mnn,ortgenai
while [ $# -gt 0 ]; do
    case "$1" in
        --abi) ABI=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-${HOME}/.cache/edgewise-harness}
LLAMACPP_VERSION=${LLAMACPP_VERSION:-0.3.36}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
ANDROID_PLATFORM=${ANDROID_PLATFORM:-android-28}
OUT=$HERE/build/$ABI
missing=""

say() { echo "build.sh: $*" >&2; }
want() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }
digest() { if command -v sha256sum >/dev/null 2>&1; then printf '%s' "$1" | sha256sum | cut -c1-12; else printf '%s' "$1" | cksum | cut -d' ' -f1; fi; }

if [ "$ABI" = host ]; then
    case "$(uname -m)" in
        x86_64) LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF"} ;;
        *) LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"} ;;
    esac
    TOOLCHAIN=""
else
    if [ -z "${ANDROID_NDK:-}" ] || [ ! -f "${ANDROID_NDK:-}/build/cmake/android.toolchain.cmake" ]; then
        say "ANDROID_NDK is not set to an Android NDK (no build/cmake/android.toolchain.cmake under '${ANDROID_NDK:-}')."
        say "Install one (Android Studio > SDK Manager > NDK, or https://developer.android.com/ndk/downloads, r26 or newer)"
        say "and rerun: ANDROID_NDK=\$HOME/Android/Sdk/ndk/<version> android/build.sh --abi $ABI"
        say "(for this machine's own binaries: android/build.sh --abi host)"
        exit 3
    fi
    LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF"}
    TOOLCHAIN="-DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake -DANDROID_ABI=$ABI -DANDROID_PLATFORM=$ANDROID_PLATFORM"
fi
command -v cmake >/dev/null 2>&1 || { say "cmake is missing: apt install cmake ninja-build (or brew install cmake ninja)"; exit 3; }
if [ -z "${CMAKE_GENERATOR:-}" ]; then
    if command -v ninja >/dev/null 2>&1; then CMAKE_GENERATOR=Ninja; else CMAKE_GENERATOR="Unix Makefiles"; fi
fi
export CMAKE_GENERATOR
mkdir -p "$OUT/bin"

# ---- llama.cpp: llama-completion (one process per case, --prompt-cache for the shared prefix)
llama_source() {
    src=$CACHE/src/llama-cpp-python-$LLAMACPP_VERSION-full
    if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
        tarball=$CACHE/src/llama_cpp_python-$LLAMACPP_VERSION.tar.gz
        if [ ! -f "$tarball" ]; then
            say "downloading the llama-cpp-python $LLAMACPP_VERSION sdist (llama.cpp source) with pip"
            mkdir -p "$CACHE/src"
            "$PYTHON" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$LLAMACPP_VERSION" -d "$CACHE/src" \
                || { say "could not download llama-cpp-python==$LLAMACPP_VERSION (offline? put the sdist at $tarball)"; return 1; }
        fi
        rm -rf "$src.tmp" && mkdir -p "$src.tmp"
        tar xzf "$tarball" -C "$src.tmp" --strip-components=1
        rm -rf "$src" && mv "$src.tmp" "$src"
    fi
    echo "$src/vendor/llama.cpp"
}

build_llamacpp() {
    src=$(llama_source) || return 1
    key=$(digest "$LLAMACPP_VERSION $ABI $LLAMA_FLAGS $TOOLCHAIN")
    build=$CACHE/build/llama.cpp-$LLAMACPP_VERSION-$ABI-$key
    if [ ! -x "$build/bin/llama-completion" ]; then
        mkdir -p "$CACHE/build"
        say "building llama.cpp $LLAMACPP_VERSION ($ABI, $LLAMA_FLAGS) in $build; 10-15 minutes on 2 cores, once"
        # shellcheck disable=SC2086
        cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_BUILD_SERVER=OFF $TOOLCHAIN $LLAMA_FLAGS >"$build.cmake.log" 2>&1 \
            || { say "cmake configure failed; see $build.cmake.log"; return 1; }
        cmake --build "$build" -j "$JOBS" --target llama-completion llama-bench \
            || { say "llama.cpp build failed (above)"; return 1; }
        echo "$LLAMACPP_VERSION $ABI $LLAMA_FLAGS" > "$build/FLAGS"
    fi
    cp -f "$build/bin/llama-completion" "$build/bin/llama-bench" "$OUT/bin/"
    cp -f "$build/FLAGS" "$OUT/llamacpp.flags"
    say "llama.cpp: $OUT/bin/llama-completion"
}

# ---- other engines: built from a checkout the user points to ----------------------------
need_src() {  # $1 = variable name, $2 = engine, $3 = where to get it
    eval "value=\${$1:-}"
    if [ -z "$value" ] || [ ! -d "$value" ]; then
        say "$2: skipped, set $1 to a checkout of $3"
        missing="$missing $2"
        return 1
    fi
    return 0
}

build_executorch() {
    need_src EXECUTORCH_SRC executorch "https://github.com/pytorch/executorch (git submodule update --init --recursive)" || return 0
    [ "$ABI" = host ] && { say "executorch: host builds come from the export environment's pip package; skipped"; return 0; }
    b=$CACHE/build/executorch-$ABI
    # shellcheck disable=SC2086
    cmake -S "$EXECUTORCH_SRC" -B "$b" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release --preset android-arm64-v8a 2>/dev/null \
        || cmake -S "$EXECUTORCH_SRC" -B "$b" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release -DEXECUTORCH_BUILD_XNNPACK=ON \
            -DEXECUTORCH_BUILD_EXTENSION_LLM=ON -DEXECUTORCH_BUILD_EXTENSION_LLM_RUNNER=ON -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON
    cmake --build "$b" -j "$JOBS" --target install
    cmake -S "$EXECUTORCH_SRC/examples/models/llama" -B "$b/llama" $TOOLCHAIN -DCMAKE_PREFIX_PATH="$b" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$b/llama" -j "$JOBS"
    cp -f "$b/llama/llama_main" "$OUT/bin/"
    say "executorch: $OUT/bin/llama_main (Qualcomm QNN: set QNN_SDK_ROOT and add -DEXECUTORCH_BUILD_QNN=ON; MediaTek: NeuroPilot libs go in $OUT/lib)"
}

build_mnn() {
    need_src MNN_SRC mnn "https://github.com/alibaba/MNN" || return 0
    b=$CACHE/build/mnn-$ABI
    # shellcheck disable=SC2086
    cmake -S "$MNN_SRC" -B "$b" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release -DMNN_BUILD_LLM=ON -DMNN_LOW_MEMORY=ON \
        -DMNN_CPU_WEIGHT_DEQUANT_GEMM=ON -DMNN_SUPPORT_TRANSFORMER_FUSE=ON -DMNN_BUILD_SHARED_LIBS=OFF -DMNN_SEP_BUILD=OFF
    cmake --build "$b" -j "$JOBS" --target llm_demo llm_bench
    cp -f "$b/llm_demo" "$b/llm_bench" "$OUT/bin/"
    say "mnn: $OUT/bin/llm_demo, llm_bench"
}

build_ortgenai() {
    need_src ORTGENAI_SRC ortgenai "https://github.com/microsoft/onnxruntime-genai (and ORT_HOME: an onnxruntime Android AAR unpacked)" || return 0
    [ -n "${ORT_HOME:-}" ] || { say "ortgenai: skipped, set ORT_HOME to an onnxruntime build for $ABI (headers + libonnxruntime.so)"; missing="$missing ortgenai"; return 0; }
    b=$CACHE/build/ortgenai-$ABI
    # shellcheck disable=SC2086
    cmake -S "$ORTGENAI_SRC" -B "$b" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release -DORT_HOME="$ORT_HOME" -DENABLE_TESTS=OFF -DENABLE_PYTHON=OFF
    cmake --build "$b" -j "$JOBS"
    cmake -S "$ORTGENAI_SRC/benchmark/c" -B "$b/bench" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release -DORT_GENAI_LIB_DIR="$b" -DORT_GENAI_INCLUDE_DIR="$ORTGENAI_SRC/src"
    cmake --build "$b/bench" -j "$JOBS"
    mkdir -p "$OUT/lib" && cp -f "$b/bench/model_benchmark" "$OUT/bin/" && cp -f "$b"/libonnxruntime-genai.so "$ORT_HOME"/lib/libonnxruntime.so "$OUT/lib/" 2>/dev/null || true
    say "ortgenai: $OUT/bin/model_benchmark"
}

failed=""
want llamacpp && { build_llamacpp || failed="$failed llamacpp"; }
want executorch && { build_executorch || failed="$failed executorch"; }
want mnn && { build_mnn || failed="$failed mnn"; }
want ortgenai && { build_ortgenai || failed="$failed ortgenai"; }
cp -f "$HERE"/run_*.sh "$OUT/" 2>/dev/null || true
[ -z "$missing" ] || say "not built (source not given):$missing"
[ -z "$failed" ] || { say "failed:$failed"; exit 1; }
say "done: $OUT"
