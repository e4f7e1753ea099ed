#!/bin/sh
# Build the on-device runner binaries into android/build/<abi>/bin (ignored by git).
#
#   ANDROID_NDK=/path/to/ndk android/build.sh [--abi arm64-v8a] [--only llamacpp,executorch,mnn,ortgenai]
#   android/build.sh --abi arm64-v8a     # no NDK: static aarch64-linux-musl llama.cpp runners, by zig
#   android/build.sh --abi host          # the llama.cpp runners for this machine (tests, laptop)
#   options: --toolchain ndk|zig (default: ndk when ANDROID_NDK is set, else zig), --out DIR
#
# llama.cpp comes from the source vendored in the llama-cpp-python sdist the host runtime
# uses (same version, same numbers); it is downloaded once with pip and unpacked under
# $CACHE/src.  Builds are cached under $CACHE/build keyed by source version + flags, so a
# second run only copies.  The other engines build from a checkout you point to
# (EXECUTORCH_SRC, MNN_SRC, ORTGENAI_SRC); what is missing is said, and the rest goes on.
set -eu

ABI=arm64-v8a
ONLY=llamacpp,executorch,mnn,ortgenai
KIND=
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --abi) ABI=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --toolchain) KIND=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

case "$KIND" in ''|ndk|zig) ;; *) echo "build.sh: --toolchain $KIND: use ndk or zig" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-${HOME}/.cache/edgewise-harness}
# Pinned versions are written once, in runtimes/versions.env (the Makefile passes them too).
[ -n "${LLAMACPP_VERSION:-}" ] || LLAMACPP_VERSION=$(sed -n 's/^LLAMACPP_VERSION=//p' "$HERE/../runtimes/versions.env")
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
ANDROID_PLATFORM=${ANDROID_PLATFORM:-android-28}
OUT=${OUT:-$HERE/build/$ABI}
case "$OUT" in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
missing=""
# The runners' shared header (android/runners/common): part of each runner's cache key (sha256 of its sources).
COMMON_HPP=$HERE/runners/common/ew_runner.hpp

say() { echo "build.sh: $*" >&2; }
want() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }
digest() { if command -v sha256sum >/dev/null 2>&1; then printf '%s' "$1" | sha256sum | cut -c1-12; else printf '%s' "$1" | cksum | cut -d' ' -f1; fi; }

if [ "$ABI" = host ]; then
    case "$(uname -m)" in
        x86_64) LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF"} ;;
        *) LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"} ;;
    esac
    TOOLCHAIN=""
    TOOLCHAIN_ID=""
    KIND=host
elif [ "${KIND:-$( [ -n "${ANDROID_NDK:-}" ] && echo ndk || echo zig)}" = zig ]; then
    # No NDK: zig (PyPI's ziglang, `make install-cross`) as a cross C/C++ compiler for a static
    # musl executable.  It needs no bionic and no dynamic loader, so it runs on any arm64 Android
    # phone (and on Linux, or under qemu-user here).  CMake gets wrapper scripts as CC/CXX/AR.
    KIND=zig
    case "$ABI" in
        arm64-v8a) ZIG_TARGET=aarch64-linux-musl; PROCESSOR=aarch64 ;;
        x86_64) ZIG_TARGET=x86_64-linux-musl; PROCESSOR=x86_64 ;;
        *) say "--abi $ABI: without an NDK only arm64-v8a and x86_64 are built (static, with zig); set ANDROID_NDK for $ABI"; exit 3 ;;
    esac
    ZIG=$("$PYTHON" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))' 2>/dev/null) \
        && [ -x "$ZIG" ] || { say "zig is missing: make install-cross (pip install -e '.[cross]' into $PYTHON's environment), or set ANDROID_NDK"; exit 3; }
    ZIG_VERSION=$("$ZIG" version)
    # ZIG_CPU (e.g. cortex_a76): tune for one phone; the default is zig's baseline armv8-a (NEON)
    ZIG_CPU=${ZIG_CPU:-}
    wrappers=$CACHE/toolchains/zig-$ZIG_VERSION-$ZIG_TARGET${ZIG_CPU:+-$ZIG_CPU}
    mkdir -p "$wrappers"
    for tool in cc c++ ar ranlib; do
        case "$tool" in cc|c++) args="$tool -target $ZIG_TARGET${ZIG_CPU:+ -mcpu=$ZIG_CPU}" ;; *) args=$tool ;; esac
        printf '#!/bin/sh\nexec "%s" %s "$@"\n' "$ZIG" "$args" >"$wrappers/$tool.tmp"
        chmod 755 "$wrappers/$tool.tmp" && mv -f "$wrappers/$tool.tmp" "$wrappers/$tool"
    done
    ZIG_GLOBAL_CACHE_DIR=${ZIG_GLOBAL_CACHE_DIR:-$CACHE/zig-cache}
    ZIG_LOCAL_CACHE_DIR=${ZIG_LOCAL_CACHE_DIR:-$ZIG_GLOBAL_CACHE_DIR}
    export ZIG_GLOBAL_CACHE_DIR ZIG_LOCAL_CACHE_DIR
    LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"}
    # static, and stripped: zig's libc++ and musl carry debug info (110 MB binaries instead of 8 MB)
    ZIG_LINK="-DCMAKE_EXE_LINKER_FLAGS=-static -DCMAKE_EXE_LINKER_FLAGS_RELEASE=-s"
    TOOLCHAIN="-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=$PROCESSOR -DCMAKE_C_COMPILER=$wrappers/cc \
-DCMAKE_CXX_COMPILER=$wrappers/c++ -DCMAKE_AR=$wrappers/ar -DCMAKE_RANLIB=$wrappers/ranlib $ZIG_LINK"
    TOOLCHAIN_ID="zig $ZIG_VERSION $ZIG_TARGET${ZIG_CPU:+ $ZIG_CPU} static $ZIG_LINK"
    say "no ANDROID_NDK: building static $ZIG_TARGET runners with zig $ZIG_VERSION, CPU ${ZIG_CPU:-baseline (ZIG_CPU=cortex_a55 adds dotprod and fp16)}; CPU backend only, and they need no bionic."
    say "An NDK build (ANDROID_NDK=...) adds what only Android's toolchain links: bionic (Android's own C library), GPU backends (OpenCL, Vulkan) and the vendor NPU libraries (Qualcomm QNN, MediaTek NeuroPilot)."
else
    KIND=ndk
    if [ -z "${ANDROID_NDK:-}" ] || [ ! -f "${ANDROID_NDK:-}/build/cmake/android.toolchain.cmake" ]; then
        say "ANDROID_NDK is not set to an Android NDK (no build/cmake/android.toolchain.cmake under '${ANDROID_NDK:-}')."
        say "Install one (Android Studio > SDK Manager > NDK, or https://developer.android.com/ndk/downloads, r26 or newer)"
        say "and rerun: ANDROID_NDK=\$HOME/Android/Sdk/ndk/<version> android/build.sh --abi $ABI"
        say "(for this machine's own binaries: android/build.sh --abi host; static CPU-only ones without an NDK: --toolchain zig)"
        exit 3
    fi
    LLAMA_FLAGS=${LLAMA_FLAGS:-"-DGGML_OPENMP=OFF -DGGML_LLAMAFILE=OFF"}
    TOOLCHAIN="-DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake -DANDROID_ABI=$ABI -DANDROID_PLATFORM=$ANDROID_PLATFORM"
    TOOLCHAIN_ID=$TOOLCHAIN
fi
command -v cmake >/dev/null 2>&1 || { say "cmake is missing: apt install cmake ninja-build (or brew install cmake ninja)"; exit 3; }
if [ -z "${CMAKE_GENERATOR:-}" ]; then
    if command -v ninja >/dev/null 2>&1; then CMAKE_GENERATOR=Ninja; else CMAKE_GENERATOR="Unix Makefiles"; fi
fi
export CMAKE_GENERATOR
mkdir -p "$OUT/bin"

# ---- llama.cpp: our runner ew_llama (android/runners/llamacpp: one process per case, the KV cache
# kept across requests), and llama.cpp's stock llama-completion and llama-bench beside it
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
    key=$(digest "$LLAMACPP_VERSION $ABI $LLAMA_FLAGS $TOOLCHAIN_ID")
    build=$CACHE/build/llama.cpp-$LLAMACPP_VERSION-$ABI$( [ "$KIND" = zig ] && echo -static)-$key
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
        echo "$LLAMACPP_VERSION $ABI $LLAMA_FLAGS${TOOLCHAIN_ID:+ ($TOOLCHAIN_ID)}" > "$build/FLAGS"
    fi
    cp -f "$build/bin/llama-completion" "$build/bin/llama-bench" "$OUT/bin/"
    cp -f "$build/FLAGS" "$OUT/llamacpp.flags"
    say "llama.cpp: $OUT/bin/llama-completion"
    build_ew_llama "$src" "$build" || return 1
    [ "$KIND" != zig ] || say "llama.cpp: $(elf_summary "$OUT/bin/ew_llama")"
}

# ew_llama: one source file compiled with the llama.cpp build's toolchain and linked against its
# static libraries; cached by that build and the sha256 of the runner's source.
build_ew_llama() {  # $1 = llama.cpp source, $2 = its build folder
    runner_src=$HERE/runners/llamacpp
    sums=$(cat "$runner_src/ew_llama.cpp" "$runner_src/CMakeLists.txt" "$COMMON_HPP" | { sha256sum 2>/dev/null || cksum; } | cut -c1-12)
    ew=$CACHE/build/ew_llama-$(basename "$2")-$sums
    if [ ! -x "$ew/ew_llama" ]; then
        say "building ew_llama (android/runners/llamacpp) against $2"
        rm -rf "$ew"
        # shellcheck disable=SC2086
        cmake -S "$runner_src" -B "$ew" -DCMAKE_BUILD_TYPE=Release -DLLAMA_SRC="$1" -DLLAMA_BUILD="$2" \
            $TOOLCHAIN >"$ew.cmake.log" 2>&1 || { say "ew_llama: cmake configure failed; see $ew.cmake.log"; return 1; }
        cmake --build "$ew" -j "$JOBS" || { say "ew_llama build failed (above)"; return 1; }
    fi
    cp -f "$ew/ew_llama" "$OUT/bin/"
    say "llama.cpp: $OUT/bin/ew_llama"
}

# "aarch64 ELF (e_machine 183), static: no dynamic loader": what a phone needs from a zig build.
elf_summary() {
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null || echo "(could not read its ELF header)"
import struct, sys
data = open(sys.argv[1], "rb").read(1 << 16)
order = "<" if data[5] == 1 else ">"
machine, = struct.unpack_from(order + "H", data, 18)
phoff, = struct.unpack_from(order + "Q", data, 32)
phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
interp = any(struct.unpack_from(order + "I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))
name = {183: "aarch64", 62: "x86_64"}.get(machine, "machine %d" % machine)
print("%s ELF (e_machine %d), %s" % (name, machine, "needs a dynamic loader (PT_INTERP)" if interp else "static: no dynamic loader"))
EOF
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

# ---- ExecuTorch: our runner ew_et (android/runners/executorch: one process per case, the .pte and
# its KV cache kept across requests, choices), linked against the executorch wheel of the project's
# executorch toolchain env (export/env.py env_python("executorch"), made by `make export ...
# FORMAT=executorch`): its runtime, optimized + quantized kernels, XNNPACK and threadpool libraries
# go to $OUT/lib.  Host only: the wheel is x86_64/aarch64 glibc (manylinux), not Android's bionic.
build_ew_et() {
    envpy=$(cd "$HERE/.." && EDGEWISE_CACHE=$CACHE "$PYTHON" -c 'from export.env import env_python, env_ready
print(env_python("executorch") if env_ready("executorch") else "")' 2>/dev/null) || envpy=
    if [ -z "$envpy" ]; then
        say "executorch: ew_et skipped, the executorch toolchain env is missing: \`make export MODEL=tiny-llama FORMAT=executorch\` creates it (from export/requirements/executorch.txt), then rerun"
        missing="$missing executorch(ew_et)"
        return 0
    fi
    pkg=$("$envpy" -c 'import importlib.util as u; print(u.find_spec("executorch").submodule_search_locations[0])' 2>/dev/null) || pkg=
    if [ -z "$pkg" ] || [ ! -f "$pkg/share/cmake/executorch-config.cmake" ]; then
        say "executorch: ew_et skipped, $envpy has no executorch wheel with its CMake package (share/cmake); recreate the env (delete $(dirname "$(dirname "$envpy")") and rerun make export FORMAT=executorch)"
        missing="$missing executorch(ew_et)"
        return 0
    fi
    runner_src=$HERE/runners/executorch
    sums=$(cat "$runner_src/ew_et.cpp" "$runner_src/ew_llm_ops.cpp" "$runner_src/CMakeLists.txt" "$COMMON_HPP" "$pkg/lib/libexecutorch.so" | { sha256sum 2>/dev/null || cksum; } | cut -c1-12)
    ew=$CACHE/build/ew_et-$ABI-$sums
    if [ ! -x "$ew/ew_et" ]; then
        say "building ew_et (android/runners/executorch) against $pkg"
        rm -rf "$ew"
        cmake -S "$runner_src" -B "$ew" -DCMAKE_BUILD_TYPE=Release -Dexecutorch_DIR="$pkg/share/cmake" \
            >"$ew.cmake.log" 2>&1 || { say "ew_et: cmake configure failed; see $ew.cmake.log"; return 1; }
        cmake --build "$ew" -j "$JOBS" || { say "ew_et build failed (above)"; return 1; }
    fi
    mkdir -p "$OUT/lib"
    cp -f "$ew/ew_et" "$OUT/bin/"
    for lib in executorch executorch_kernels_optimized executorch_kernels_quantized executorch_backend_xnnpack executorch_threadpool; do
        cp -f "$pkg/lib/lib$lib.so" "$OUT/lib/"
    done
    say "executorch: $OUT/bin/ew_et, libraries in $OUT/lib"
}

build_executorch() {
    if [ "$ABI" = host ]; then build_ew_et; return; fi
    need_src EXECUTORCH_SRC executorch "https://github.com/pytorch/executorch (git submodule update --init --recursive)" || return 0
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

# ---- MNN: our runner ew_mnn (android/runners/mnn: one process per case, the model loaded once,
# choices applied as the host adapter applies them), linked against MNN's LLM engine, whose
# libraries go to $OUT/lib (run_ew_mnn.sh finds them there).  ew_mnn declares the few MNN functions
# it calls itself (no MNN headers are needed; see ew_mnn.cpp).
#   host: the MNN wheel of the mnn toolchain env (export/env.py env_dir("mnn"), made by `make export
#     MODEL=tiny-llama FORMAT=mnn`): its Python extension _mnncengine*.so holds the engine and exports
#     the C++ API; it needs libpython3.11, which ew_mnn links (no Python code runs).
#   Android (NDK): MNN_SRC=an MNN 3.6.1 checkout, built here once more as one shared libMNN.so with the
#     LLM engine in it (MNN_BUILD_LLM=ON, MNN_SEP_BUILD=OFF) and the NDK's libc++_shared.so; not tried
#     here (no NDK on the machine that wrote this).
build_ew_mnn() {  # $1 = the cmake argument naming the engine, $2.. = libraries to put in $OUT/lib
    engine_arg=$1; shift
    runner_src=$HERE/runners/mnn
    sums=$(cat "$runner_src/ew_mnn.cpp" "$runner_src/CMakeLists.txt" "$COMMON_HPP" "$@" | { sha256sum 2>/dev/null || cksum; } | cut -c1-12)
    ew=$CACHE/build/ew_mnn-$ABI-$(digest "$TOOLCHAIN_ID")-$sums
    if [ ! -x "$ew/ew_mnn" ]; then
        say "building ew_mnn (android/runners/mnn) against $1"
        rm -rf "$ew"
        # shellcheck disable=SC2086
        cmake -S "$runner_src" -B "$ew" -DCMAKE_BUILD_TYPE=Release "$engine_arg" $TOOLCHAIN $MNN_STL \
            >"$ew.cmake.log" 2>&1 || { say "ew_mnn: cmake configure failed; see $ew.cmake.log"; return 1; }
        cmake --build "$ew" -j "$JOBS" || { say "ew_mnn build failed (above)"; return 1; }
    fi
    mkdir -p "$OUT/lib"
    cp -f "$ew/ew_mnn" "$OUT/bin/"
    for lib in "$@"; do cp -f "$lib" "$OUT/lib/"; done
    say "mnn: $OUT/bin/ew_mnn, libraries in $OUT/lib"
}

build_mnn() {
    MNN_STL=
    if [ "$ABI" = host ]; then
        site=$(cd "$HERE/.." && "$PYTHON" -c 'import glob
from export.env import env_dir, env_ready
print((glob.glob(str(env_dir("mnn") / "lib" / "python3*" / "site-packages")) + [""])[0] if env_ready("mnn") else "")' 2>/dev/null) || site=
        engine=$(ls "$site"/_mnncengine*.so 2>/dev/null | head -1)
        if [ -z "$engine" ]; then
            say "mnn: ew_mnn skipped, the mnn toolchain env (MNN's wheel) is missing: \`make export MODEL=tiny-llama FORMAT=mnn\` creates it, then rerun"
            missing="$missing mnn(ew_mnn)"
            return 0
        fi
        build_ew_mnn "-DMNN_WHEEL_DIR=$site" "$engine" "$site"/mnn.libs/*.so*
        return
    fi
    need_src MNN_SRC mnn "https://github.com/alibaba/MNN" || return 0
    b=$CACHE/build/mnn-$ABI
    # shellcheck disable=SC2086
    cmake -S "$MNN_SRC" -B "$b" $TOOLCHAIN -DCMAKE_BUILD_TYPE=Release -DMNN_BUILD_LLM=ON -DMNN_LOW_MEMORY=ON \
        -DMNN_CPU_WEIGHT_DEQUANT_GEMM=ON -DMNN_SUPPORT_TRANSFORMER_FUSE=ON -DMNN_BUILD_SHARED_LIBS=OFF -DMNN_SEP_BUILD=OFF
    cmake --build "$b" -j "$JOBS" --target llm_demo llm_bench
    cp -f "$b/llm_demo" "$b/llm_bench" "$OUT/bin/"
    say "mnn: $OUT/bin/llm_demo, llm_bench"
    [ "$KIND" = ndk ] || return 0
    # ew_mnn: the same options, as one shared libMNN.so (the LLM engine inside), with libc++_shared
    # so that the std::string and std::vector crossing into MNN come from one C++ library.
    MNN_STL=-DANDROID_STL=c++_shared
    bs=$CACHE/build/mnn-shared-$ABI
    # shellcheck disable=SC2086
    cmake -S "$MNN_SRC" -B "$bs" $TOOLCHAIN $MNN_STL -DCMAKE_BUILD_TYPE=Release -DMNN_BUILD_LLM=ON -DMNN_LOW_MEMORY=ON \
        -DMNN_CPU_WEIGHT_DEQUANT_GEMM=ON -DMNN_SUPPORT_TRANSFORMER_FUSE=ON -DMNN_BUILD_SHARED_LIBS=ON -DMNN_SEP_BUILD=OFF \
        || { say "mnn: cmake configure of the shared libMNN failed (above)"; return 1; }
    cmake --build "$bs" -j "$JOBS" --target MNN || { say "mnn: the shared libMNN build failed (above)"; return 1; }
    case "$ABI" in arm64-v8a) triple=aarch64-linux-android ;; armeabi-v7a) triple=arm-linux-androideabi ;;
        x86_64) triple=x86_64-linux-android ;; *) triple=i686-linux-android ;; esac
    stl=$(ls "$ANDROID_NDK"/toolchains/llvm/prebuilt/*/sysroot/usr/lib/$triple/libc++_shared.so 2>/dev/null | head -1)
    [ -n "$stl" ] || { say "mnn: no libc++_shared.so for $triple in $ANDROID_NDK"; return 1; }
    build_ew_mnn "-DMNN_LIBS=$bs/libMNN.so" "$bs/libMNN.so" "$stl"
}

# ---- onnxruntime-genai: our runner ew_ort (android/runners/onnxruntime: one process per case, the
# generator and its KV cache kept across requests, choices and JSON schemas), linked against a prebuilt
# libonnxruntime-genai.so; it and libonnxruntime.so(.1) go to $OUT/lib (run_ew_ort.sh finds them there).
#   host: the onnxruntime-genai wheel in $PYTHON's environment (make install-onnxruntime)
#   Android (NDK): ORTGENAI_LIBS=a folder with libonnxruntime-genai.so and libonnxruntime.so for $ABI
#     (jni/<abi> of the onnxruntime-genai and onnxruntime Android AARs, unpacked); not tried here.
# With ORTGENAI_SRC (and ORT_HOME) onnxruntime-genai's stock model_benchmark is built too (run_onnxruntime.sh).
build_ew_ort() {  # $1 = folder with libonnxruntime-genai.so, $2.. = libonnxruntime files to put beside it
    gdir=$1; shift
    runner_src=$HERE/runners/onnxruntime
    sums=$(cat "$runner_src/ew_ort.cpp" "$runner_src/CMakeLists.txt" "$COMMON_HPP" "$gdir/libonnxruntime-genai.so" | { sha256sum 2>/dev/null || cksum; } | cut -c1-12)
    ew=$CACHE/build/ew_ort-$ABI-$(digest "$TOOLCHAIN_ID")-$sums
    if [ ! -x "$ew/ew_ort" ]; then
        say "building ew_ort (android/runners/onnxruntime) against $gdir/libonnxruntime-genai.so"
        rm -rf "$ew"
        # shellcheck disable=SC2086
        cmake -S "$runner_src" -B "$ew" -DCMAKE_BUILD_TYPE=Release -DORTGENAI_LIB_DIR="$gdir" \
            $TOOLCHAIN >"$ew.cmake.log" 2>&1 || { say "ew_ort: cmake configure failed; see $ew.cmake.log"; return 1; }
        cmake --build "$ew" -j "$JOBS" || { say "ew_ort build failed (above)"; return 1; }
    fi
    mkdir -p "$OUT/lib"
    cp -f "$ew/ew_ort" "$OUT/bin/"
    cp -f "$gdir/libonnxruntime-genai.so" "$OUT/lib/"
    for lib in "$@"; do cp -f "$lib" "$OUT/lib/$(basename "$lib" | sed 's/\.so\.1\.[0-9.]*$/.so.1/')"; done
    say "ortgenai: $OUT/bin/ew_ort, libraries in $OUT/lib"
}

build_ortgenai() {
    if [ "$ABI" = host ]; then
        # The wheel's libonnxruntime-genai.so, and onnxruntime's libonnxruntime.so.1.x (it dlopens libonnxruntime.so.1).
        found=$("$PYTHON" -c 'import os, onnxruntime_genai as g, onnxruntime as o
print(os.path.dirname(g.__file__)); print(os.path.join(os.path.dirname(o.__file__), "capi"))' 2>/dev/null) || found=
        gdir=$(printf '%s\n' "$found" | sed -n 1p)
        odir=$(printf '%s\n' "$found" | sed -n 2p)
        ortlib=$(ls "$odir"/libonnxruntime.so.1* 2>/dev/null | head -1)
        if [ -z "$gdir" ] || [ ! -f "$gdir/libonnxruntime-genai.so" ] || [ -z "$ortlib" ]; then
            say "ortgenai: skipped, $PYTHON has no onnxruntime-genai wheel (libonnxruntime-genai.so and onnxruntime's libonnxruntime.so.1): make install-onnxruntime, or PYTHON=.venv/bin/python"
            missing="$missing ortgenai"
            return 0
        fi
        build_ew_ort "$gdir" "$ortlib"
        return
    fi
    if [ -n "${ORTGENAI_LIBS:-}" ]; then
        if [ ! -f "$ORTGENAI_LIBS/libonnxruntime-genai.so" ] || [ ! -f "$ORTGENAI_LIBS/libonnxruntime.so" ]; then
            say "ortgenai: ORTGENAI_LIBS=$ORTGENAI_LIBS lacks libonnxruntime-genai.so or libonnxruntime.so for $ABI (unpack jni/$ABI of the onnxruntime-genai and onnxruntime Android AARs there)"
            return 1
        fi
        build_ew_ort "$ORTGENAI_LIBS" "$ORTGENAI_LIBS/libonnxruntime.so" || return 1
    else
        say "ortgenai: ew_ort skipped, set ORTGENAI_LIBS to a folder with libonnxruntime-genai.so and libonnxruntime.so for $ABI (jni/$ABI of the onnxruntime-genai and onnxruntime Android AARs)"
        missing="$missing ortgenai(ew_ort)"
    fi
    [ -n "${ORTGENAI_SRC:-}" ] || return 0
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
no_ndk=""
want llamacpp && { build_llamacpp || failed="$failed llamacpp"; }
for engine in executorch mnn ortgenai; do
    want "$engine" || continue
    if [ "$KIND" = zig ]; then no_ndk="$no_ndk $engine"; continue; fi
    "build_$engine" || failed="$failed $engine"
done
cp -f "$HERE"/run_*.sh "$HERE"/common.sh "$OUT/" 2>/dev/null || true
[ -z "$no_ndk" ] || say "not built without an NDK:$no_ndk (their Android builds use the NDK's CMake toolchain and link Android-only libraries: the XNNPACK/QNN/NeuroPilot delegates, the onnxruntime Android AAR); set ANDROID_NDK for them."
[ -z "$missing" ] || say "not built (source not given):$missing"
[ -z "$failed" ] || { say "failed:$failed"; exit 1; }
say "done: $OUT"
