"""Run the sandbox API until SIGINT/SIGTERM.

    python -m sandbox --host 127.0.0.1 --port 0 [--api-key KEY] [--audio-mb 0.5-1.5] [faults...]
        [--generation-time S] [--credits N [--out-of-credits 402|task]]

Prints exactly one line, `SANDBOX_URL=http://HOST:PORT/apis`, on stdout once it listens.
Per-run faults repeat: `--result-error 1059:500 --result-error 1060:404 --expired-run 1061`.
Scripted faults (hang, reset, stall, corrupt, gzip_bomb, endless, ...) are set while it runs:
POST /_sandbox/script {"target": "download", "kinds": ["stall"]} (see sandbox/faults.py).
"""

import argparse
import logging
import signal
import sys
import threading

from sandbox.audio import serve_sizes
from sandbox.faults import Faults
from sandbox.rules import AudioSizes
from sandbox.server import SandboxServer


def _audio_sizes(text: str) -> AudioSizes:
    try:
        return AudioSizes.parse_mb(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Local stand-in for the CAMB.AI text-to-sound API, over real HTTP. Prints "
        "SANDBOX_URL=http://HOST:PORT/apis once it listens; runs until SIGINT/SIGTERM. What a "
        "run id gives is fixed by sandbox/rules.py (id % 100 == 99: not a text-to-sound run; "
        "% 50 == 13: failed; % 10 == 7: pending; otherwise ready).",
        epilog="Faults can also be changed while it runs: POST /_sandbox/faults with the "
        'Faults fields as JSON, POST /_sandbox/script {"target": "download", "kinds": '
        '["stall"]} for scripted connection faults (listed in sandbox/faults.py); '
        "GET /_sandbox/stats counts requests. Example: python -m sandbox --api-key k "
        "--throttle-rate 0.1 --expired-run 1061 --result-error 1059:500",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--api-key", help="required key; without it any non-empty key passes")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--audio-mb",
        type=_audio_sizes,
        help="size of each run's decoded audio, MB: '50', or a range spread over the runs "
        "like '0.5-1.5' (default: the rules' short clips)",
    )
    faults = parser.add_argument_group(
        "faults", "random shares are drawn per request from --seed; all default to none"
    )
    defaults = Faults()
    for flag, name, kind, meta, text in (
        ("--latency", "latency_s", float, "S", "delay before every API answer"),
        (
            "--download-latency",
            "download_latency_s",
            float,
            "S",
            "delay before a download's first byte",
        ),
        ("--throttle-rate", "throttle_rate", float, "SHARE", "share of API calls answered 429"),
        (
            "--retry-after",
            "retry_after",
            str,
            "N|date:N",
            "Retry-After of a 429: N seconds, or an HTTP date N seconds ahead",
        ),
        (
            "--server-error-rate",
            "server_error_rate",
            float,
            "SHARE",
            "share of API calls answered 500, 502 (a gateway's HTML) or 503",
        ),
        (
            "--drop-rate",
            "drop_rate",
            float,
            "SHARE",
            "share of requests (API and downloads) closed without an answer",
        ),
        (
            "--truncate-rate",
            "truncate_rate",
            float,
            "SHARE",
            "share of downloads cut after about half of the announced body",
        ),
        (
            "--expire-rate",
            "expire_rate",
            float,
            "SHARE",
            "share of downloads answered 403 'Request has expired' (a fresh URL works)",
        ),
        ("--url-ttl", "url_ttl_s", float, "S", "lifetime of the presigned download URLs"),
        (
            "--download-base-url",
            "download_base_url",
            str,
            "ORIGIN",
            "origin put into download "
            "URLs instead of the sandbox's own (e.g. a proxy in front of it)",
        ),
        (
            "--redirect-downloads-to",
            "redirect_downloads_to",
            str,
            "ORIGIN",
            "downloads answer 307 to this origin (redirect tests)",
        ),
        ("--seed", "seed", int, "N", "seed of the random fault draws"),
        (
            "--lost-rate",
            "lost_rate",
            float,
            "SHARE",
            "share of API calls served, then closed without an answer (a create made its task)",
        ),
        (
            "--generation-time",
            "generation_s",
            float,
            "S",
            "how long a created text-to-sound task stays PENDING",
        ),
        (
            "--credits",
            "credits",
            int,
            "N",
            "creates allowed before credits run out (default: no limit)",
        ),
        (
            "--out-of-credits",
            "out_of_credits",
            str,
            "402|task",
            "past the credits a create answers 402, or creates a task ending PAYMENT_REQUIRED",
        ),
    ):
        faults.add_argument(
            flag,
            dest=name,
            type=kind,
            default=getattr(defaults, name),
            metavar=meta,
            help=text if getattr(defaults, name) is None else f"{text} (default: %(default)s)",
        )
    faults.add_argument(
        "--bulk-min-ids",
        dest="bulk_min_ids",
        type=int,
        default=1,
        metavar="N",
        help="bulk calls with fewer ids are refused with 422, as some API docs say (default 1)",
    )
    for flag, name, kind, meta, text in (
        (
            "--result-error",
            "result_errors",
            _run_status,
            "RUN:STATUS",
            "this run's single-result call always answers STATUS",
        ),
        (
            "--bulk-error",
            "bulk_errors",
            _run_status,
            "RUN:STATUS",
            "every bulk call that includes this run answers STATUS",
        ),
        (
            "--expired-run",
            "expired_runs",
            int,
            "RUN",
            "this run's downloads always answer 403 expired",
        ),
        ("--bulk-omit", "bulk_omit", int, "RUN", "this run is left out of every bulk answer"),
        (
            "--bulk-stranger",
            "bulk_strangers",
            int,
            "RUN",
            "this run is added to every bulk answer, though nobody asked",
        ),
    ):
        faults.add_argument(
            flag,
            dest=name,
            type=kind,
            action="append",
            default=[],
            metavar=meta,
            help=f"{text}; repeat for more runs",
        )
    return parser


def _run_status(text: str) -> tuple[int, int]:
    """`RUN:STATUS`, e.g. `1059:500`."""
    run_id, sep, status = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected RUN:STATUS, got {text!r}")
    return int(run_id), int(status)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    host, port, api_key = args.pop("host"), args.pop("port"), args.pop("api_key")
    access_log = args.pop("access_log")
    serve_sizes(args.pop("audio_mb"))
    for name in ("result_errors", "bulk_errors"):
        args[name] = dict(args[name])
    try:
        faults = Faults(**args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO if access_log else logging.WARNING)
    server = SandboxServer(host, port, api_key=api_key, faults=faults, access_log=access_log)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except OSError as exc:
        print(f"sandbox: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"SANDBOX_URL={server.base_url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
