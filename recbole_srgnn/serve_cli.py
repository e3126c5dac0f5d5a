"""``recbole-srgnn serve``: a model bundle as an HTTP service (FastAPI app run by uvicorn).

    recbole-srgnn serve --model bundles/srgnn --host 127.0.0.1 --port 8000

Order of work, so that no request ever sees a half-loaded model: parse and check the options,
load and verify the bundle, score one warm-up session, then bind the port and serve. A bad
bundle or option, a port in use or a host that does not resolve prints one line and exits with
status 2 before anything listens. Once the server accepts requests it prints one line
(``serving MODEL (DATASET, N items) on http://HOST:PORT — docs at /docs``); SIGTERM or Ctrl-C
stop it gracefully (requests in flight finish) and it exits with status 0.

Threads: each request runs in the server's thread pool, and torch uses ``--threads`` intra-op
threads (default 1). A one-session request is mostly one ``[1, d] x [d, n_items]`` product that
reads the whole item table; concurrent ``/recommend`` requests are therefore scored together,
up to ``--batch_requests`` per forward pass (:mod:`recbole_srgnn.micro_batch`), which reads the
table once for all of them. More torch threads fight the server's own threads for the cores (see
``recbole_srgnn.threads``); big ``/recommend/batch`` calls on an otherwise idle machine may
want more.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

import uvicorn

from recbole_srgnn.errors import InputError, OneLineArgumentParser, cli_errors, excerpt

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ReadyServer(uvicorn.Server):
    """uvicorn's server, printing one line once it accepts requests."""

    def __init__(self, config: uvicorn.Config, ready: str) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.ready, flush=True)


def whole(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number >= ``minimum`` (and <= ``maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above {maximum}")
        return value

    return parse


def build_parser(prog: str = "recbole-srgnn serve") -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=prog,
        description="Serve a model bundle (written by `recbole-srgnn export` or run.py "
                    "--export) over HTTP: POST /recommend, POST /recommend/batch, GET /health, "
                    "and the OpenAPI page at /docs.",
        epilog="A request over a limit gets a 4xx answer with a JSON {\"detail\": ...} that "
               "names the problem (413 for a body over --max_body_bytes, 422 for the others). "
               "Errors before serving (bad bundle or option, port in use) print one line and "
               "exit with status 2. SIGTERM or Ctrl-C stop the server gracefully (exit 0).",
        allow_abbrev=False,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="the bundle folder")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=whole(0, 65535), default=8000,
                        help="port to listen on (default 8000; 0 picks a free one)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    parser.add_argument("--threads", type=whole(1), default=1,
                        help="torch intra-op threads per request (default 1: requests run in "
                             "parallel, one thread each)")
    parser.add_argument("--batch_requests", type=whole(1), default=32,
                        help="score up to this many concurrent /recommend requests in one "
                             "forward pass (default 32; a request arriving alone is scored at "
                             "once; 1 = each request alone)")
    parser.add_argument("--max_k", type=whole(1), default=None,
                        help="largest k a request may ask (default: the number of items)")
    parser.add_argument("--max_session_items", type=whole(1), default=200,
                        help="most items in one session (default 200; a longer session is "
                             "refused, 422)")
    parser.add_argument("--max_batch", type=whole(1), default=1000,
                        help="most sessions in one /recommend/batch request (default 1000)")
    parser.add_argument("--max_body_bytes", type=whole(1), default=1 << 20,
                        help="largest request body in bytes (default 1048576 = 1 MiB; over it: "
                             "413)")
    parser.add_argument("--access_log", action="store_true",
                        help="log every request (off by default)")
    parser.add_argument("--log_level", choices=LOG_LEVELS, default="warning",
                        help="server log level (default warning)")
    return parser


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or InputError (one line)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {excerpt(host)} is not an address this machine can listen "
                         f"on ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def usable_device(text: str):
    """``--device`` as a torch device this machine has, or InputError (one line)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {excerpt(text)} is not a torch device (cpu, cuda, cuda:1 ...)"
                         ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InputError(f"--device {text}: this machine has {count} CUDA device(s)")
    return device


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@cli_errors
def main(argv: list[str] | None = None, prog: str = "recbole-srgnn serve") -> int:
    args = build_parser(prog).parse_args(argv)
    import torch  # after parsing: --help answers at once

    from recbole_srgnn.recommend import Recommender
    from recbole_srgnn.service import ServiceLimits, create_app

    torch.set_num_threads(args.threads)
    limits = ServiceLimits(max_k=args.max_k, max_session_items=args.max_session_items,
                           max_batch=args.max_batch, max_body_bytes=args.max_body_bytes)
    recommender = Recommender.load(args.model, usable_device(args.device))
    recommender.recommend([recommender.items[-1]], k=1)  # warm-up: the first request is not slow
    app = create_app(recommender, limits, batch_requests=args.batch_requests)
    sock = listening_socket(args.host, args.port)
    url = url_of(sock)
    metadata = recommender.bundle.metadata
    ready = (f"serving {metadata.get('model')} ({metadata.get('dataset')}, "
             f"{recommender.n_items - 1} items) on {url} — docs at /docs")
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                            lifespan="off", timeout_graceful_shutdown=10)
    if args.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = ReadyServer(config, ready)
    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn raises the signal again once stopped
        signal.signal(sig, lambda signum, frame: stopped.append(signum))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise InputError(f"the server on {url} did not start")
    names = ", ".join(signal.Signals(s).name for s in stopped)
    print(f"stopped{f' ({names})' if names else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
