"""``searchr3 serve [--port N]``: serve the promoted release over HTTP (search API + a page to try it).

The service watches ``serve.record`` (production/record.json) and swaps to a newly promoted release
without a restart; see ``searchr3.serve.service``. Settings: the ``serve:`` section of params.yaml.
"""
from __future__ import annotations

import logging
import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the promoted release over HTTP (hot-swaps on promotion)",
                       description=__doc__)
    p.add_argument("--port", type=int, default=None, help="TCP port (default: serve.port, 8000)")
    p.add_argument("--host", default=None, help="listen address (default: serve.host, 127.0.0.1)")
    p.add_argument("--record", default=None, help="production record to serve and watch (default: serve.record)")
    p.add_argument("--model", default=None, help="serve this model folder instead of the record's (needs --index; no hot swap)")
    p.add_argument("--index", default=None, help="serve this index snapshot instead of the record's (needs --model)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    import dataclasses

    from searchr3.config import load_params, section
    from searchr3.data.bm25 import Bm25Config
    from searchr3.eval.config import EvaluateConfig
    from searchr3.model.config import ModelConfig
    from searchr3.release import ReleaseInvalid, workspace_paths
    from searchr3.serve.config import ServeConfig

    if (args.model is None) != (args.index is None):
        print("error: --model and --index go together (serve that pair, without watching the record)", file=sys.stderr)
        return 2
    params = load_params(args.params, args.profile, args.overrides)
    config = section(params, "serve", ServeConfig)
    overrides = {k: v for k, v in {"port": args.port, "host": args.host, "record": args.record}.items() if v is not None}
    try:
        config = dataclasses.replace(config, **overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not 0 < config.port < 65536:
        print(f"error: --port must be between 1 and 65535, got {config.port}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from searchr3.serve.service import SearchService

    paths = workspace_paths(args.model, args.index) if args.model else None
    service = SearchService(config, section(params, "model", ModelConfig), section(params, "evaluate", EvaluateConfig),
                            section(params, "bm25", Bm25Config), paths)
    try:
        service.start()
    except (ReleaseInvalid, FileNotFoundError, ValueError) as err:
        print(f"error: cannot serve: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from searchr3.serve.app import create_app

    print(f"searchr3 serve: release {service.current.id} on http://{config.host}:{config.port}/ "
          f"(watching {'nothing' if paths else service.record_path})", flush=True)
    uvicorn.run(create_app(service), host=config.host, port=config.port, log_level="info", workers=1)
    return 0
