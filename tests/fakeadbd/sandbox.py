"""The fake phone's filesystem: a folder laid out like Android, that shell commands chroot into.

Path mapping, the one rule to remember: a device path `/data/local/tmp/x` is the host file
`<root>/data/local/tmp/x`. Shell commands run inside a chroot of `<root>` (as root, via
coreutils `chroot`; as a normal user, via `unshare --user --map-root-user --root`), so they
see device paths as real paths, with no rewriting. The sync service resolves paths itself, the
same way (symlinks inside the sandbox are followed relative to `<root>`, never the host's `/`).

The chroot holds static binaries copied from Debian packages: busybox (busybox-static) for the
usual commands and mksh (package mksh, the shell Android uses) as `/system/bin/sh`; without a
static mksh, busybox's sh is used. Android-shaped extras are small shell scripts:

- `getprop [NAME [DEFAULT]]` reads `/system/etc/fakeadbd/props` (NAME=VALUE lines).
- `dumpsys SERVICE` prints `/system/etc/fakeadbd/dumpsys/SERVICE` (`battery` is kept current).
- `df [-k] PATH` prints toybox's table for this machine's disk (/data, /storage/emulated or /);
  `set_free_space()` makes its Available column a chosen number.
- `/sys/class/thermal/thermal_zoneN/{type,temp}`, `/sys/class/power_supply/battery/*`,
  `/proc/meminfo` and `/proc/cpuinfo` are plain files that the test API rewrites.

Not root ("rooted=False", a phone without `adb root`): commands run as uid 2000 (shell), who
owns only `/data/local/tmp` and `/storage/emulated/0` (alias `/sdcard`); the sync service
applies the same rule and reports `/system` and friends as a read-only file system.

arm64 mode (`arch="arm64"`): the phone runs aarch64 executables, pushed like on a phone (static
ones: no Android loader here), through qemu-user: binfmt_misc's qemu-aarch64 entry, which
`binfmt.sh` beside this file registers (root) with the F flag, so the kernel starts qemu for them
inside the chroot too. What device_runner reads says aarch64 as well: getprop's ABI, `uname -m`
(and `arch`) and /proc/cpuinfo; the shell and its tools stay this machine's static busybox/mksh.
The default (`arch="host"`) runs this machine's binaries, as before.

Two ways in, chosen automatically:

- "chroot" (the daemon runs as root, as CI does): `chroot --userspec=2000:2000`; ownership and
  permissions are real, so a non-root shell cannot write /system ("Permission denied").
- "userns" (a developer's normal account): `unshare --user --root`, our uid mapped to 2000 or
  0. Every sandbox file then belongs to that one uid, so the non-root rule binds the sync
  service only, not shell commands; /dev/null and friends cannot be created (no mknod).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SHELL_UID = 2000  # AID_SHELL
ANDROID_PATH = "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin"

# What a non-root shell user may write (canonical paths: /sdcard resolves into the second).
WRITABLE_FOR_SHELL = ("/data/local/tmp", "/storage/emulated/0")
# Mounted read-only on a real phone: writes fail with EROFS rather than EACCES.
READ_ONLY_TREES = ("/system", "/system_ext", "/vendor", "/product", "/odm", "/apex")

DEFAULT_PROPS = {
    "ro.product.manufacturer": "Google",
    "ro.product.brand": "google",
    "ro.product.name": "fakeadbd",
    "ro.product.model": "Fake Pixel",
    "ro.product.device": "fakeadbd",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
    "ro.hardware": "fakeadbd",
    "ro.board.platform": "fakesoc",
    "ro.soc.manufacturer": "Fake",
    "ro.soc.model": "FakeSoC 8",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.fingerprint": "google/fakeadbd/fakeadbd:14/UQ1A.240205.004/1:userdebug/dev-keys",
    "ro.build.type": "userdebug",
    "ro.debuggable": "1",
    "ro.secure": "1",
    "ro.serialno": "FAKEADBD0001",
    "persist.sys.timezone": "UTC",
}

DEFAULT_THERMAL = (("cpu-0-0", 38000), ("gpu", 36500), ("battery", 29000), ("skin", 31000))

_PROPS_FILE = "/system/etc/fakeadbd/props"
_DUMPSYS_DIR = "/system/etc/fakeadbd/dumpsys"

_GETPROP = r"""#!/system/bin/sh
# fakeadbd getprop: reads NAME=VALUE lines from /system/etc/fakeadbd/props.
props=/system/etc/fakeadbd/props
if [ $# -eq 0 ]; then
  exec awk '{ i = index($0, "="); if (i > 1) printf "[%s]: [%s]\n", substr($0, 1, i - 1), substr($0, i + 1) }' "$props"
fi
exec awk -v want="$1" -v value="$2" '
  { i = index($0, "="); if (i > 1 && substr($0, 1, i - 1) == want) value = substr($0, i + 1) }
  END { print value }' "$props"
"""

_DUMPSYS = r"""#!/system/bin/sh
# fakeadbd dumpsys: prints /system/etc/fakeadbd/dumpsys/SERVICE (the test API writes them).
dir=/system/etc/fakeadbd/dumpsys
if [ $# -eq 0 ] || [ "$1" = "-l" ]; then
  echo "Currently running services:"
  for f in "$dir"/*; do [ -f "$f" ] && echo "  ${f##*/}"; done
  exit 0
fi
if [ -f "$dir/$1" ]; then exec cat "$dir/$1"; fi
echo "Can't find service: $1"
exit 0
"""

_DF_FREE_FILE = "/system/etc/fakeadbd/df_free_kb"
_DF = r"""#!/system/bin/sh
# fakeadbd df: `df [-k] PATH...` as toybox prints it, from this machine's disk (busybox stat -f);
# the Available column is /system/etc/fakeadbd/df_free_kb when the test API set it.
override=$(cat /system/etc/fakeadbd/df_free_kb 2>/dev/null)
echo "Filesystem        1K-blocks      Used Available Use% Mounted on"
rc=0
for path in "$@"; do
  case "$path" in -*) continue ;; esac
  if ! info=$(busybox stat -f -c '%S %b %f %a' "$path" 2>/dev/null); then
    echo "df: $path: No such file or directory" >&2; rc=1; continue
  fi
  case "$path" in /data*) mnt="/dev/block/dm-5 /data" ;;
    /sdcard*|/storage*) mnt="/dev/fuse /storage/emulated" ;; *) mnt="/dev/root /" ;; esac
  echo "$info $mnt" | awk -v o="$override" '{ k = $1 / 1024; t = $2 * k; u = ($2 - $3) * k
    a = (o != "") ? o : $4 * k
    printf "%-16s %10d %9d %9d %3d%% %s\n", $5, t, u, a, u * 100 / (t + 1), $6 }'
done
exit $rc
"""

_PASSWD = "root:x:0:0:root:/:/system/bin/sh\nshell:x:2000:2000:shell:/:/system/bin/sh\n"
_GROUP = "root:x:0:\nshell:x:2000:\nsdcard_rw:x:1015:shell\n"
_MEMINFO = ("MemTotal:        7812344 kB\nMemFree:          912360 kB\n"
            "MemAvailable:    3461020 kB\nBuffers:            4096 kB\nCached:          2400000 kB\n"
            "SwapTotal:       4194300 kB\nSwapFree:        3900000 kB\n")
_CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 49.15\nCPU part\t: 0xd4{i % 3}\n\n" for i in range(8))
_CPUINFO += "Hardware\t: FakeSoC 8\n"
# arm64 mode: what an arm64 kernel prints (a Cortex-A55/A76-like 8-core SoC).
_CPUINFO_ARM64 = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
    f"fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    f"CPU variant\t: {'0x2' if i < 6 else '0x4'}\nCPU part\t: {'0xd05' if i < 6 else '0xd0b'}\n"
    f"CPU revision\t: 0\n\n" for i in range(8)) + "Hardware\t: FakeSoC 8\n"
# arm64 mode: busybox's uname reports the host kernel's machine; the phone's is aarch64.
_UNAME_ARM64 = r"""#!/system/bin/sh
# fakeadbd arm64 mode: this machine's kernel, an aarch64 phone's machine name.
busybox uname "$@" | sed 's/x86_64/aarch64/g'
"""
_ARCH_ARM64 = "#!/system/bin/sh\necho aarch64\n"
BINFMT_SCRIPT = Path(__file__).with_name("binfmt.sh")
ARCHES = ("host", "arm64")


class SandboxUnavailable(RuntimeError):
    """This machine cannot host the fake phone's chroot; the message says what to install."""


@functools.cache
def arm64_unavailable_reason() -> str | None:
    """Why aarch64 executables cannot run in the arm64 phone here (a sentence), or None when they can.

    Runs binfmt.sh once per process: it mounts binfmt_misc and registers qemu-user-static's
    qemu-aarch64 entry when they are missing (which needs root), and says why when it cannot.
    """
    try:
        done = subprocess.run(["sh", str(BINFMT_SCRIPT)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {BINFMT_SCRIPT.name}: {exc}"
    if done.returncode != 0:
        return (done.stdout.strip() or done.stderr.strip() or f"{BINFMT_SCRIPT.name} failed").splitlines()[-1]
    return None


def _binfmt_interpreter_without_f_flag() -> Path | None:
    """qemu's path when its binfmt_misc entry lacks the F flag (then the chroot needs a copy), else None."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        fields = dict(line.split(" ", 1) for line in entry.read_text().splitlines() if " " in line)
    except OSError:
        return None
    if "F" in fields.get("flags:", "").strip() or "interpreter" not in fields:
        return None
    return Path(fields["interpreter"].strip())


# ---- finding static binaries and a way to chroot ----

def elf_header(path: Path) -> dict | None:
    """The ELF facts a phone cares about (class, byte order, e_type, e_machine, program header
    kinds), or None for a file that is not ELF or cannot be read."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF":
                return None
            is64, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
            e_type, e_machine = struct.unpack_from(order + "HH", ident, 16)
            if is64:
                phoff, = struct.unpack_from(order + "Q", ident, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", ident, 54)
            else:
                phoff, = struct.unpack_from(order + "I", ident, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", ident, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error):
        return None
    kinds = [struct.unpack_from(order + "I", table, i * phentsize)[0] for i in range(phnum)]
    return {"class": 64 if is64 else 32, "little_endian": order == "<", "e_type": e_type,
            "e_machine": e_machine, "program_headers": kinds}


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header (no dynamic loader needed)."""
    elf = elf_header(path)
    return elf is not None and 3 not in elf["program_headers"]  # 3: PT_INTERP


def _first_static(candidates: list[str]) -> Path | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and is_static_elf(Path(candidate).resolve()):
            return Path(candidate).resolve()
    return None


def find_busybox() -> Path | None:
    """A statically linked busybox ($FAKEADBD_BUSYBOX, or Debian's busybox-static)."""
    return _first_static([os.environ.get("FAKEADBD_BUSYBOX", ""), "/bin/busybox",
                          "/usr/bin/busybox", shutil.which("busybox") or ""])


def find_mksh() -> Path | None:
    """A statically linked mksh (Debian's package mksh ships musl, klibc and dietlibc builds)."""
    return _first_static([os.environ.get("FAKEADBD_MKSH", ""),
                          "/usr/lib/x86_64-linux-musl/bin/mksh", "/bin/mksh-static",
                          "/usr/lib/klibc/bin/mksh", "/usr/lib/diet/bin/mksh"])


def _proc_mounter() -> list[str] | None:
    """argv prefix that runs a command in a private mount namespace with procfs mounted at $1 (root)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin"])
    unshare, mount = shutil.which("unshare", path=search), shutil.which("mount", path=search)
    if os.geteuid() != 0 or unshare is None or mount is None:
        return None
    # (absolute paths: the command's environment has the phone's PATH)
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
            f'{mount} -t proc proc "$1" 2>/dev/null; shift; exec "$@"']


_PROC_MOUNTER = _proc_mounter()


@functools.cache
def _isolation() -> tuple[str, str] | None:
    """("chroot", path) when root; ("userns", unshare path) when user namespaces work; else None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    if os.geteuid() == 0 and (chroot := shutil.which("chroot", path=search)):
        return "chroot", chroot
    unshare = shutil.which("unshare", path=search)
    if unshare and subprocess.run([unshare, "--user", "--map-root-user", "true"],
                                  capture_output=True).returncode == 0:
        return "userns", unshare
    return None


def unavailable_reason() -> str | None:
    """Why FakeAdbd cannot run here (a sentence naming the fix), or None when it can."""
    if find_busybox() is None:
        return ("FakeAdbd needs a statically linked busybox for its chroot: "
                "apt-get install busybox-static (or set FAKEADBD_BUSYBOX).")
    if _isolation() is None:
        return ("FakeAdbd chroots shell commands into its sandbox: run as root, or enable "
                "unprivileged user namespaces (unshare --user --map-root-user).")
    return None


# ---- the sandbox ----

@dataclass(frozen=True)
class Battery:
    """What `dumpsys battery` and /sys/class/power_supply/battery report."""

    level: int = 80  # percent
    temperature_c: float = 28.5  # reported in tenths of a degree, as Android does
    plugged: str | None = "usb"  # "ac", "usb", "wireless", or None on battery

    @property
    def status(self) -> int:
        """BatteryManager status: 2 charging, 3 discharging, 5 full."""
        if self.plugged is None:
            return 3
        return 5 if self.level >= 100 else 2

    def dumpsys(self) -> str:
        """The text of `dumpsys battery` on Android 14."""
        return "\n".join([
            "Current Battery Service state:",
            f"  AC powered: {str(self.plugged == 'ac').lower()}",
            f"  USB powered: {str(self.plugged == 'usb').lower()}",
            f"  Wireless powered: {str(self.plugged == 'wireless').lower()}",
            "  Dock powered: false",
            "  Max charging current: 500000",
            "  Max charging voltage: 5000000",
            "  Charge counter: 3000000",
            f"  status: {self.status}",
            "  health: 2",
            "  present: true",
            f"  level: {self.level}",
            "  scale: 100",
            "  voltage: 4012",
            f"  temperature: {round(self.temperature_c * 10)}",
            "  technology: Li-ion",
            "",
        ])


class DeviceSandbox:
    """A folder that plays the phone's filesystem, and the way to run commands inside it."""

    def __init__(self, root: Path, *, rooted: bool = False, props: dict[str, str] | None = None,
                 arch: str = "host") -> None:
        if arch not in ARCHES:
            raise ValueError(f"arch={arch!r}: use one of {ARCHES} ('host' runs this machine's binaries, "
                             "'arm64' aarch64 ones through qemu-user).")
        self.root = Path(root).absolute()
        self.rooted = rooted
        self.arch = arch
        isolation = _isolation()
        busybox = find_busybox()
        if busybox is None or isolation is None:
            raise SandboxUnavailable(unavailable_reason())
        if arch == "arm64" and (why := arm64_unavailable_reason()):
            raise SandboxUnavailable(f"The arm64 fake phone runs aarch64 binaries through qemu-user: {why}")
        self.isolation, self._tool = isolation  # "chroot" or "userns" (module docstring)
        self._build(busybox, find_mksh())
        if arch == "arm64":
            self._build_arm64()
        else:  # a root that played an arm64 phone before: busybox's own uname/arch, the default cpuinfo
            for name in ("uname", "arch"):
                applet = self.root / "system/bin" / name
                if applet.is_file() and not applet.is_symlink():
                    applet.unlink()
                    os.symlink("busybox", applet)
            if self.host("/proc/cpuinfo").read_text() == _CPUINFO_ARM64:
                self.write_file("/proc/cpuinfo", _CPUINFO)
        if not Path(self.host(_PROPS_FILE)).exists():
            self._write_props(DEFAULT_PROPS)
        if props:
            for name, value in props.items():
                self.set_prop(name, value)
        self.battery = Battery()
        self.set_battery()
        for index, (zone_type, millidegrees) in enumerate(DEFAULT_THERMAL):
            if not self.host(f"/sys/class/thermal/thermal_zone{index}/temp").exists():
                self.set_thermal(index, millidegrees, zone_type=zone_type)

    # -- layout --

    def _build(self, busybox: Path, mksh: Path | None) -> None:
        """Create what is missing; keep what a test (or an earlier run) put there."""
        for folder in ("system/bin", "system/xbin", "system/etc/fakeadbd/dumpsys", "vendor/bin",
                       "product", "apex", "odm", "data/local/tmp", "storage/emulated/0", "dev",
                       "proc", "sys/class/thermal", "sys/class/power_supply/battery", "mnt", "config"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for link, target in (("sdcard", "/storage/emulated/0"), ("bin", "/system/bin"),
                             ("etc", "/system/etc")):
            if not os.path.lexists(self.root / link):
                os.symlink(target, self.root / link)
        bin_dir = self.root / "system/bin"
        if not (bin_dir / "busybox").exists():
            shutil.copy2(busybox, bin_dir / "busybox")
            applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                                     check=True).stdout.split()
            for applet in applets:
                if not os.path.lexists(bin_dir / applet):
                    os.symlink("busybox", bin_dir / applet)
        if not (bin_dir / "sh").exists() or (bin_dir / "sh").is_symlink():
            (bin_dir / "sh").unlink(missing_ok=True)
            if mksh is not None:
                shutil.copy2(mksh, bin_dir / "sh")
            else:
                os.symlink("busybox", bin_dir / "sh")
        for name, text in (("getprop", _GETPROP), ("dumpsys", _DUMPSYS), ("df", _DF)):
            (bin_dir / name).unlink(missing_ok=True)  # replaces busybox applets of that name
            (bin_dir / name).write_text(text)
            os.chmod(bin_dir / name, 0o755)
        for path, text in (("/system/etc/passwd", _PASSWD), ("/system/etc/group", _GROUP),
                           ("/proc/meminfo", _MEMINFO), ("/proc/cpuinfo", _CPUINFO)):
            if not self.host(path).exists():
                self.write_file(path, text)
        self._make_devices()
        self._link_proc_self()
        shell_owned = [self.root / "data/local/tmp", self.root / "storage/emulated/0"]
        for folder in shell_owned:
            os.chmod(folder, 0o771)
            if self.isolation == "chroot":
                os.chown(folder, SHELL_UID, SHELL_UID)

    def _build_arm64(self) -> None:
        """arm64 mode: uname/arch say aarch64, /proc/cpuinfo is an arm64 kernel's, and qemu is
        inside the chroot when its binfmt_misc entry lacks the F flag (found at exec time then)."""
        bin_dir = self.root / "system/bin"
        for name, text in (("uname", _UNAME_ARM64), ("arch", _ARCH_ARM64)):
            (bin_dir / name).unlink(missing_ok=True)  # replaces the busybox applet
            (bin_dir / name).write_text(text)
            os.chmod(bin_dir / name, 0o755)
        cpuinfo = self.host("/proc/cpuinfo")
        if not cpuinfo.exists() or cpuinfo.read_text() == _CPUINFO:
            self.write_file("/proc/cpuinfo", _CPUINFO_ARM64)
        interpreter = _binfmt_interpreter_without_f_flag()
        if interpreter is not None and interpreter.is_absolute():
            target = self.root / str(interpreter).lstrip("/")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(interpreter.resolve(), target)

    def _make_devices(self) -> None:
        """/dev/null, /dev/zero, /dev/urandom as character devices (root only; else skipped)."""
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("urandom", 1, 9)):
            node = self.root / "dev" / name
            if node.exists() or self.isolation != "chroot":
                continue
            try:
                os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                os.chmod(node, 0o666)
            except OSError:
                pass  # a container without CAP_MKNOD: commands can still redirect elsewhere

    def _link_proc_self(self) -> None:
        """/proc/self -> /.proc/self, where each chroot command gets a real procfs (root only, see spawn).

        A phone has procfs; onnxruntime reads /proc/self/fd/N to check where a model's external data
        file really is, and fails without it.  The fixed /proc/meminfo and /proc/cpuinfo stay."""
        if self.isolation != "chroot" or _PROC_MOUNTER is None:
            return
        (self.root / ".proc").mkdir(exist_ok=True)
        link = self.root / "proc" / "self"
        if not link.is_symlink():
            link.symlink_to("/.proc/self")

    # -- paths --

    def resolve(self, device_path: str, *, follow_last: bool = True) -> str:
        """The canonical device path: '.', '..' and symlinks resolved inside the sandbox.

        Raises OSError(ELOOP) for symlink loops. The result always starts with '/'.
        """
        pending = [part for part in device_path.split("/") if part][::-1]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink() and (pending or follow_last):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), device_path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending.extend([p for p in target.split("/") if p][::-1])
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)

    def host(self, device_path: str, *, follow_last: bool = True) -> Path:
        """The host file behind a device path (see the module docstring)."""
        return self.root / self.resolve(device_path, follow_last=follow_last).lstrip("/")

    def write_denied(self, canonical_path: str) -> int | None:
        """The errno a non-root phone gives for creating `canonical_path`, or None if allowed."""
        if self.rooted:
            return None

        def under(tree: str) -> bool:
            return canonical_path == tree or canonical_path.startswith(tree + "/")

        if any(under(tree) for tree in WRITABLE_FOR_SHELL):
            return None
        if any(under(tree) for tree in READ_ONLY_TREES) or canonical_path.count("/") == 1:
            return errno.EROFS
        return errno.EACCES

    def chown_for_shell(self, host_path: Path) -> None:
        """Files the non-root adbd creates belong to the shell user, as on a phone."""
        if not self.rooted and self.isolation == "chroot":
            os.chown(host_path, SHELL_UID, SHELL_UID, follow_symlinks=False)

    # -- files the test API changes --

    def write_file(self, device_path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Atomically replace a file in the sandbox (readers never see half of it)."""
        target = self.host(device_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = data.encode() if isinstance(data, str) else data
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".fakeadbd-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def props(self) -> dict[str, str]:
        """All system properties, as getprop sees them."""
        found = {}
        for line in self.host(_PROPS_FILE).read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name:
                found[name] = value
        return found

    def _write_props(self, props: dict[str, str]) -> None:
        self.write_file(_PROPS_FILE, "".join(f"{k}={v}\n" for k, v in sorted(props.items())))

    def set_prop(self, name: str, value: str) -> None:
        """Set a system property (what `getprop NAME` prints and the CNXN banner carries)."""
        if not name or any(c in name for c in "=\n \t") or "\n" in str(value):
            raise ValueError(f"Invalid property {name!r}={value!r}: no '=', blanks or newlines "
                             "in the name, no newline in the value.")
        props = self.props()
        props[name] = str(value)
        self._write_props(props)

    def set_battery(self, level: int | None = None, temperature_c: float | None = None,
                    charging: bool | str | None = None) -> Battery:
        """Change the battery; `charging` is True (USB), "ac", "usb", "wireless" or False."""
        battery = self.battery
        if level is not None:
            if not 0 <= level <= 100:
                raise ValueError(f"Battery level {level} is outside 0..100.")
            battery = Battery(level, battery.temperature_c, battery.plugged)
        if temperature_c is not None:
            battery = Battery(battery.level, temperature_c, battery.plugged)
        if charging is not None:
            plugged = {True: "usb", False: None}.get(charging, charging)
            if plugged not in ("ac", "usb", "wireless", None):
                raise ValueError(f"charging={charging!r}: use True, False, 'ac', 'usb' or 'wireless'.")
            battery = Battery(battery.level, battery.temperature_c, plugged)
        self.battery = battery
        supply = "/sys/class/power_supply/battery"
        status_text = {2: "Charging", 3: "Discharging", 5: "Full"}[battery.status]
        self.write_file(f"{supply}/capacity", f"{battery.level}\n")
        self.write_file(f"{supply}/temp", f"{round(battery.temperature_c * 10)}\n")
        self.write_file(f"{supply}/status", f"{status_text}\n")
        self.write_file(f"{_DUMPSYS_DIR}/battery", battery.dumpsys())
        return battery

    def set_thermal(self, zone_index: int, millidegrees: int, zone_type: str | None = None) -> None:
        """Write /sys/class/thermal/thermal_zoneN/temp (and type, when given or new)."""
        zone = f"/sys/class/thermal/thermal_zone{zone_index}"
        if zone_type is not None or not self.host(f"{zone}/type").exists():
            self.write_file(f"{zone}/type", f"{zone_type or f'zone{zone_index}'}\n")
        self.write_file(f"{zone}/temp", f"{int(millidegrees)}\n")

    def install_host_libraries(self, binary: Path | str) -> None:
        """Put the shared libraries a host-built `binary` needs (ldd) at the same paths inside the
        chroot, so that this machine's dynamically linked runners start on the phone."""
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if not path.startswith("/"):
                continue
            target = self.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(Path(path).resolve(), target)

    def set_free_space(self, free_bytes: int | None) -> None:
        """What `df` reports as Available for every folder (None: this machine's disk's)."""
        if free_bytes is None:
            self.host(_DF_FREE_FILE).unlink(missing_ok=True)
        else:
            self.write_file(_DF_FREE_FILE, f"{free_bytes // 1024}\n")

    # -- processes --

    def shell_env(self) -> dict[str, str]:
        """The environment adbd gives a shell on a phone."""
        user = "root" if self.rooted else "shell"
        return {"PATH": ANDROID_PATH, "HOME": "/", "TMPDIR": "/data/local/tmp", "USER": user,
                "LOGNAME": user, "SHELL": "/system/bin/sh", "TERM": "dumb",
                "HOSTNAME": self.props().get("ro.product.device", "localhost"),
                "ANDROID_ROOT": "/system", "ANDROID_DATA": "/data",
                "EXTERNAL_STORAGE": "/sdcard"}

    def spawn(self, command: str | None, *, merge_stderr: bool) -> subprocess.Popen[bytes]:
        """Start `/system/bin/sh -c command` inside the sandbox (no command: sh reads stdin).

        The process leads its own session, so `os.killpg(proc.pid, ...)` ends it and its children.
        """
        shell = ["/system/bin/sh"] + (["-c", command] if command is not None else [])
        if self.isolation == "chroot":
            as_user = [] if self.rooted else [f"--userspec={SHELL_UID}:{SHELL_UID}",
                                              f"--groups={SHELL_UID},1015"]
            argv = [self._tool, *as_user, str(self.root), *shell]
            if _PROC_MOUNTER is not None:  # a mount namespace of its own: the procfs ends with the command
                argv = [*_PROC_MOUNTER, "sh", str(self.root / ".proc"), *argv]
        else:  # user namespace: our own uid appears as root (rooted) or as the shell user
            as_user = (["--map-root-user"] if self.rooted else
                       [f"--map-user={SHELL_UID}", f"--map-group={SHELL_UID}"])
            argv = [self._tool, "--user", *as_user, f"--root={self.root}", "--wd=/", *shell]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                                env=self.shell_env(), start_new_session=True, close_fds=True)
