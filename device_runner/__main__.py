"""`python -m device_runner --device host|SERIAL ...`: run the benchmark and report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.errors import HarnessError


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_runner",
        description="Run the EdgeWisePersona benchmark on this machine (--device host) or on phones over ADB.",
    )
    parser.add_argument("--device", action="append", default=None,
                        help="'host' for this machine, or a phone's ADB serial / host:port (repeatable)")
    parser.add_argument("--model", default="gemma-3-270m", help="model key(s) from export/catalogue.py, comma-separated")
    parser.add_argument("--runtime", default="llamacpp", help="runtime name(s), comma-separated")
    parser.add_argument("--strategy", default="single-pass,incremental",
                        help="single-pass, incremental and/or rules (no model), comma-separated")
    parser.add_argument("--data", default="sample", help="a data folder, hf:OWNER/NAME[@rev], or 'sample'")
    parser.add_argument("--users", default=None, help="user indices: 0,2,5 or 0-3 (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/run"), help="folder for results.jsonl and the report")
    parser.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished rows")
    parser.add_argument("--artifact", "--gguf", type=Path, default=None, dest="artifact",
                        help="run this file or folder (a .gguf, an export folder such as artifacts/M/executorch-8da8w) "
                             "instead of the model's default export; one --model and one --runtime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the runtime's)")
    parser.add_argument("--context", type=int, default=None, help="context tokens (default: the recipe's)")
    parser.add_argument("--sample-users", type=int, default=8, help="users in the generated sample (--data sample)")
    parser.add_argument("--sample-sessions", type=int, default=40, help="sessions per user in the generated sample")
    parser.add_argument("--sample-style", choices=("natural", "plain"), default="natural",
                        help="the generated sample's speech: as people talk (default) or plain")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measured repetitions of each user's requests: timings are their median, rows record "
                             "the spread, and a decode rate that spreads more than 5%% is flagged")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured repetitions before them")
    phone = parser.add_argument_group("phones (--device SERIAL or HOST:PORT)")
    _transport_args(phone)
    phone.add_argument("--thermal-limit", type=float, default=None, metavar="C",
                       help="before each case, wait until --thermal-zone is below C degrees")
    phone.add_argument("--thermal-zone", default="battery", help="'battery' (dumpsys battery) or a thermal zone type")
    phone.add_argument("--thermal-timeout", type=float, default=600.0, metavar="S", help="run anyway after S seconds")
    phone.add_argument("--thermal-poll", type=float, default=5.0, metavar="S", help="seconds between readings")
    phone.add_argument("--cooldown", type=float, default=0.0, metavar="S", help="pause after each case")
    phone.add_argument("--affinity", default=None, metavar="HEXMASK", help="taskset CPU mask for the runner")
    phone.add_argument("--runner-bin", type=Path, default=None,
                       help="folder with the runner binaries for the phone (ew_llama, ew_et, ew_mnn, ew_ort; their libraries in ../lib; default android/build/<abi>/bin)")
    phone.add_argument("--stage-dir", default="/data/local/tmp/edgewise", help="where files go on the phone")
    return parser


def _transport_args(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--transport", default="adb-shell", choices=("adb-shell", "adb"),
                        help="adb-shell (pure Python, default) or the adb binary")
    parser.add_argument("--adb-key", type=Path, default=None, help="RSA key (default ~/.android/adbkey)")


def _transport_options(args: argparse.Namespace) -> dict:
    if args.transport == "adb-shell" and args.adb_key is not None:
        return {"key": args.adb_key}
    return {}


def devices_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_runner devices",
                                     description="List connected phones (and any HOST:PORT named) with their facts.")
    parser.add_argument("--device", action="append", default=[], help="serial or HOST:PORT (repeatable)")
    parser.add_argument("--json", action="store_true")
    _transport_args(parser)
    args = parser.parse_args(argv)
    try:
        from .devices import list_devices

        found = list_devices(args.device, args.transport, **_transport_options(args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for d in found:
            if "error" in d:
                print(f"{d['serial']}\terror: {d['error']}")
                continue
            freqs = sorted({f // 1000 for f in d.get("cpu_max_khz") or [] if f})
            battery = d.get("battery") or {}
            print(f"{d['serial']}\t{d.get('manufacturer')} {d.get('model')} | {d.get('soc')} | {d.get('abi')} | "
                  f"Android {d.get('android_release')} (SDK {d.get('sdk')}) | {d.get('ram_gb')} GB | "
                  f"{d.get('cpu_cores')} cores" + (f" up to {'/'.join(map(str, freqs))} MHz" if freqs else "")
                  + f" | battery {battery.get('level')}% {battery.get('temperature_c')} C"
                  + (" charging" if battery.get("charging") else ""))
    return 2 if any("error" in d for d in found) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["devices"]:
        return devices_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        devices = args.device or ["host"]
        if "host" in devices and devices != ["host"]:
            raise HarnessError("--device host runs alone; run phones in a separate command (or another --out).")
        from eval.report import write_report

        from .run import RunOptions, run_host

        options = RunOptions(
            models=_names(args.model), runtimes=_names(args.runtime), strategies=_names(args.strategy),
            data=args.data, users=args.users, out=args.out, resume=args.resume, artifact=args.artifact, seed=args.seed,
            threads=args.threads, context_tokens=args.context, sample_users=args.sample_users,
            sample_sessions=args.sample_sessions, sample_style=args.sample_style, progress=not args.no_progress,
            repeat=args.repeat,
            warmup=args.warmup,
        )
        if devices == ["host"]:
            results = run_host(options)
        else:
            from .devices import run_devices
            from .phone import PhoneOptions

            phone_options = PhoneOptions(
                transport=args.transport, repeat=args.repeat, warmup=args.warmup, thermal_limit_c=args.thermal_limit,
                thermal_zone=args.thermal_zone, thermal_timeout_s=args.thermal_timeout,
                thermal_poll_s=args.thermal_poll, cooldown_s=args.cooldown,
                affinity=args.affinity, runner_bin=args.runner_bin, stage_dir=args.stage_dir,
                transport_options=_transport_options(args),
            )
            results = run_devices(options, devices, phone_options)
        md, pngs, text = write_report(results, args.out)
        print(text)
        print(f"Results: {results}\nReport:  {md}\nCharts:  " + ", ".join(str(p) for p in pngs))
        return 0
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. Finished rows are saved; rerun with --resume to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
